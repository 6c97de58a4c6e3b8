#!/usr/bin/env bash
# Smoke test against a node at $ISR_ES_URL (run it via: tools/es/node.sh run DIR PORT -- tools/es/smoke.sh).
# Checks what the isr backend relies on in this integ-test distribution: dense_vector mappings,
# bulk, filtered knn (exact on `flat`, and on `hnsw` when num_candidates >= filter matches), _msearch.
set -euo pipefail
U=${ISR_ES_URL:?set ISR_ES_URL}
J='content-type: application/json'
req() { curl -sS -H "$J" "$@"; }
fail() { echo "smoke FAILED: $*" >&2; exit 1; }
for t in flat hnsw int8_hnsw; do
  req -XDELETE "$U/smoke_$t" >/dev/null
  req -XPUT "$U/smoke_$t" -d '{"settings":{"number_of_shards":1,"number_of_replicas":0},
    "mappings":{"properties":{"tag":{"type":"keyword"},
      "vec":{"type":"dense_vector","dims":8,"index":true,"similarity":"dot_product","index_options":{"type":"'$t'"}}}}}' \
    | grep -q '"acknowledged":true' || fail "create smoke_$t"
  python3 -c '
import json, math, random
random.seed(1)
for i in range(300):
    v = [random.gauss(0, 1) for _ in range(8)]; n = math.sqrt(sum(x * x for x in v))
    print(json.dumps({"index": {"_id": str(i)}})); print(json.dumps({"tag": "t%d" % (i % 10), "vec": [x / n for x in v]}))
' | curl -sS -H 'content-type: application/x-ndjson' -XPOST "$U/smoke_$t/_bulk?refresh=true" --data-binary @- \
    | grep -q '"errors":false' || fail "bulk smoke_$t"
done
Q='[0.5,0.5,0.5,0.5,0,0,0,0]'
KNN='{"size":5,"_source":false,"knn":{"field":"vec","query_vector":'$Q',"k":5,"num_candidates":60,"filter":{"terms":{"tag":["t1","t2"]}}}}'
a=$(req "$U/smoke_flat/_search" -d "$KNN" | python3 -c 'import json,sys; print([h["_id"] for h in json.load(sys.stdin)["hits"]["hits"]])')
b=$(req "$U/smoke_hnsw/_search" -d "$KNN" | python3 -c 'import json,sys; print([h["_id"] for h in json.load(sys.stdin)["hits"]["hits"]])')
c=$(req "$U/smoke_int8_hnsw/_search" -d "${KNN%\}\}}"',"rescore_vector":{"oversample":2}}}' \
    | python3 -c 'import json,sys; print([h["_id"] for h in json.load(sys.stdin)["hits"]["hits"]])')
[[ "$a" == "$b" && "$a" == "$c" ]] || fail "filtered knn differs: flat=$a hnsw=$b int8_hnsw+rescore=$c"
printf '%s\n' '{"index":"smoke_flat"}' "$KNN" '{"index":"smoke_hnsw"}' "$KNN" \
  | curl -sS -H 'content-type: application/x-ndjson' -XPOST "$U/_msearch" --data-binary @- \
  | python3 -c 'import json,sys; r=json.load(sys.stdin)["responses"]; assert all(x.get("status")==200 for x in r), r' \
  || fail "_msearch"
for t in flat hnsw int8_hnsw; do req -XDELETE "$U/smoke_$t" >/dev/null; done
echo "smoke ok: filtered knn top-5 $a identical on flat, hnsw, int8_hnsw+rescore; _msearch ok"
