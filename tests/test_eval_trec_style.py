"""The TREC-style evaluation end to end on a tiny synthetic world and a tiny trained bundle:
the run files against brute-force max-sim, the screening statistics against a recount from
the encoded labels, the metrics against the run files, and the outputs' provenance.

The world is the concept world of tests/test_encoders_train.py written in the precomp layout
(each image shows 3 of 12 concepts; its captions name them): a bundle learns it in seconds,
where ``isr world``'s richer world needs minutes of training to rise above chance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isr.encoders.bundle import Bundle
from isr.encoders.record import Encoded, Keywords
from isr.encoders.train import TrainConfig, run_recipe
from isr.errors import Conflict, NotFound
from isr.eval.gallery import encode_split, open_gallery_index
from isr.eval.trec_style import TrecStyleConfig, TrecStyleReport, evaluate
from isr.ingest.training_data import load_paired

from test_eval_metrics import JAVA_PROBLEM  # isort: skip

pytestmark = pytest.mark.skipif(bool(JAVA_PROBLEM), reason=f"Java cannot start: {JAVA_PROBLEM}")

DEPTH = 10
WORDS = ["dog", "cat", "horse", "bike", "car", "tree", "ball", "boat", "kite", "bird", "hat",
         "sofa"]  # fmt: skip


def write_world(d: Path, split: str, n: int, seed: int, m: int = 6, dim: int = 16) -> None:
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(99).normal(size=(len(WORDS), dim)).astype(np.float32)
    ims = np.zeros((n, m, dim), np.float32)
    caps = []
    for i in range(n):
        c = rng.choice(len(WORDS), 3, replace=False)
        ims[i] = protos[c[np.arange(m) % 3]] + 0.3 * rng.normal(size=(m, dim))
        for _ in range(5):
            w = [WORDS[x] for x in rng.permutation(c)]
            caps.append(f"a {w[0]} with a {w[1]} and a {w[2]}")
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / f"{split}_ims.npy", ims)
    (d / f"{split}_caps.txt").write_text("\n".join(caps) + "\n")


@pytest.fixture(scope="module")
def world_and_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's few cores are shared
    root = tmp_path_factory.mktemp("trec")
    write_world(root / "world", "train", 240, seed=0)
    write_world(root / "world", "test", 40, seed=1)
    data, vocab = load_paired(root / "world", "train", min_images=8)
    cfg = TrainConfig(
        epochs=4, batch_size=40, lr=3e-3, hidden=32, heads=2, intermediate=64, layers=1,
        dim=16, codes=4, captions_per_epoch=2, tokenizer_vocab=200, progress=False,
    )  # fmt: skip
    bundle = run_recipe("plain", cfg, data, root / "train", vocab=vocab)
    torch.set_num_threads(n)
    return root / "world", bundle


@pytest.fixture(scope="module")
def report(world_and_bundle, tmp_path_factory) -> TrecStyleReport:
    world, bundle = world_and_bundle
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = TrecStyleConfig(
        data_dir=world, split="test", bundle_dir=bundle, out_dir=tmp_path_factory.mktemp("out"),
        configs=("fast", "full", "keywords+exhaustive"), r_i=6, r_t=2, r_i_sweep=(2, 6),
        r_t_sweep=(1, 2), depth=DEPTH, max_queries=80, seed=5, title="tiny", command="pytest",
        progress=False,
    )  # fmt: skip
    rep = evaluate(cfg)
    torch.set_num_threads(n)
    return rep


def read_run(path: str) -> dict[str, list[tuple[str, float]]]:
    run: dict[str, list[tuple[str, float]]] = {}
    for line in Path(path).read_text().splitlines():
        q, q0, d, rank, score, _ = line.split()
        assert q0 == "Q0" and int(rank) == len(run.get(q, [])) + 1
        run.setdefault(q, []).append((d, float(score)))
    return run


def trec_order(ranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The order trec_eval scores: by score, equal scores by docid descending."""
    return sorted(sorted(ranked, key=lambda x: x[0], reverse=True), key=lambda x: -x[1])


def read_qrels(path: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        q, _, d, rel = line.split()
        if int(rel) > 0:
            out.setdefault(q, set()).add(d)
    return out


def test_configurations_sweep_and_files(report: TrecStyleReport) -> None:
    out = Path(report.config.out_dir)
    main = {(r.direction, r.ablation) for r in report.results if not r.sweep}
    want = {"fast", "full", "keywords+exhaustive", "exhaustive"}  # exhaustive always runs
    assert main == {(d, a) for d in ("t2i", "i2t") for a in want}
    sweep = sorted((r.r_i, r.r_t) for r in report.results if r.sweep)
    assert sweep == [(2, 1), (2, 2), (6, 1), (6, 2)]
    assert all(r.direction == "t2i" for r in report.results if r.sweep)
    # per-rank postings: the sweep's R_I = 2 is a query-time choice on the one R_I = 6 index
    assert not (out / "indexes/images-ri2").exists()
    assert json.loads((out / "indexes/images-ri6/manifest.json").read_text())["config"]["r_i"] == 6
    assert report.indexes["t2i"] == str(out / "indexes/images-ri6")
    for r in report.results:
        assert Path(r.run_file).is_file()
        assert r.speedup is not None and r.speedup > 0
        assert set(r.latency) >= {"total", "fetch"}
        if r.r_t is not None:
            assert "keywords" in r.latency
    ex = report.result("t2i", "exhaustive")
    assert ex is not None and ex.speedup == 1.0 and ex.gt_kept is None and ex.admitted == 1.0
    assert ex.queries == 80 and ex.gallery == 40
    i2t = report.result("i2t", "exhaustive")
    assert i2t is not None and i2t.queries == 40 and i2t.gallery == 200
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_qrels(report: TrecStyleReport) -> None:
    out = Path(report.config.out_dir)
    t2i = read_qrels(out / "qrels/t2i.qrels")
    assert len(t2i) == 80 and all(v == {q.split("#")[0]} for q, v in t2i.items())
    i2t = read_qrels(out / "qrels/i2t.qrels")
    assert sorted(i2t, key=int) == [str(i) for i in range(40)]
    assert all(v == {f"{q}#{k}" for k in range(5)} for q, v in i2t.items())


def test_metrics_match_the_run_files(report: TrecStyleReport) -> None:
    out = Path(report.config.out_dir)
    for r in report.results:
        qrels = read_qrels(out / f"qrels/{r.direction}.qrels")
        run = {q: trec_order(v) for q, v in read_run(r.run_file).items()}
        assert set(run) == set(qrels) and all(len(v) == DEPTH for v in run.values())
        for k in (1, 5, 10):
            found = np.mean([any(d in qrels[q] for d, _ in run[q][:k]) for q in qrels])
            assert r.metrics[f"R@{k}"] == pytest.approx(100 * found, abs=0.01)
        assert r.metrics["R@sum"] == pytest.approx(sum(r.metrics[f"R@{k}"] for k in (1, 5, 10)))
        rr = np.mean([next((1 / (i + 1) for i, (d, _) in enumerate(run[q]) if d in qrels[q]), 0)
                      for q in qrels])  # fmt: skip
        assert r.metrics["MRR"] == pytest.approx(100 * rr, abs=0.01)
    # the tiny bundle learnt something: exhaustive max-sim beats chance (10/40 = 25% R@10)
    assert report.result("t2i", "exhaustive").metrics["R@10"] > 60


def maxsim(q: Encoded, g: Encoded) -> np.ndarray:
    """(Q, N) brute-force late-interaction scores in float64."""
    s = np.einsum("qid,njd->qnij", q.fragments.astype(np.float64), g.fragments)
    s = np.where(g.mask[None, :, None, :], s, -np.inf).max(-1)  # (Q, N, i)
    return np.where(q.mask[:, None, :], s, 0.0).sum(-1)


@pytest.fixture(scope="module")
def encoded(world_and_bundle):
    world, bundle = world_and_bundle
    return encode_split(world, "test", Bundle.load(bundle), progress=False)


def test_exhaustive_runs_are_brute_force_max_sim(report: TrecStyleReport, encoded) -> None:
    for direction in ("t2i", "i2t"):
        r = report.result(direction, "exhaustive")
        run = read_run(r.run_file)
        if direction == "t2i":
            qpos = {c: i for i, c in enumerate(encoded.caption_ids)}
            queries, gallery, gids = encoded.captions, encoded.images, encoded.image_ids
        else:
            qpos = {c: i for i, c in enumerate(encoded.image_ids)}
            queries, gallery, gids = encoded.images, encoded.captions, encoded.caption_ids
        col = {d: j for j, d in enumerate(gids)}
        for qid, ranked in run.items():
            s = maxsim(queries[qpos[qid]], gallery)[0]
            best = np.sort(s)[::-1][:DEPTH]
            got = np.array([s[col[d]] for d, _ in ranked])
            # rank by rank the same scores; fragments are stored in fp16
            np.testing.assert_allclose(got, best, atol=2e-2)
            np.testing.assert_allclose([x for _, x in ranked], got, atol=2e-2)


def test_screening_statistics_recount(report: TrecStyleReport, encoded) -> None:
    caps = {c: i for i, c in enumerate(encoded.caption_ids)}
    qids = list(read_qrels(Path(report.config.out_dir) / "qrels/t2i.qrels"))
    n = len(encoded.image_ids)
    for r in [x for x in report.results if x.direction == "t2i" and x.r_t is not None]:
        kept, admitted = [], []
        for qid in qids:
            ql = set(encoded.captions.keywords[caps[qid]].top(r.r_t))
            ok = [bool(ql & set(encoded.images.keywords[i].top(r.r_i))) for i in range(n)]
            if sum(ok) < DEPTH:  # the pipeline drops a screen that admits < size
                ok = [True] * n
            kept.append(ok[int(qid.split("#")[0])])
            admitted.append(sum(ok) / n)
        assert r.gt_kept == pytest.approx(np.mean(kept), abs=1e-12), r.tag
        assert r.admitted == pytest.approx(np.mean(admitted), abs=1e-12), r.tag

    # fewer labels per side admit fewer images, before the pipeline's relaxation (a screen
    # that admits fewer than `size` is dropped, so the reported share need not be monotone)
    def raw_admitted(r_i: int, r_t: int) -> float:
        img = [set(k.top(r_i)) for k in encoded.images.keywords]
        shares = [
            sum(bool(set(encoded.captions.keywords[caps[q]].top(r_t)) & s) for s in img) / n
            for q in qids
        ]
        return float(np.mean(shares))

    sweep = {(x.r_i, x.r_t): x for x in report.results if x.sweep}
    assert (2, 1) in sweep and (6, 2) in sweep
    assert raw_admitted(2, 1) <= raw_admitted(6, 2)


def test_outputs_say_where_they_came_from(report: TrecStyleReport) -> None:
    body = json.loads(Path(report.files["report.json"]).read_text())
    assert body["command"] == "pytest" and body["title"] == "tiny"
    assert body["bundle"]["fingerprint"] == report.bundle_fingerprint
    assert len(body["git"]["commit"] or "") == 40 or "why" in body["git"]
    assert body["date"][:2] == "20" and body["config"]["r_i_sweep"] == [2, 6]
    assert len(body["results"]) == len(report.results)
    assert {t["direction"] for t in body["targets"]} == {"t2i", "i2t"}
    md = Path(report.files["report.md"]).read_text()
    for needle in (
        "## Text -> image",
        "## Image -> text",
        "## Sweep R_I x R_T",
        "## Targets",
        report.bundle_fingerprint[:16],
        "pytest",
        "| keywords+exhaustive |",
    ):
        assert needle in md, needle  # fmt: skip


def test_an_index_from_the_ingest_loader_reads_the_same(report, world_and_bundle, tmp_path):
    from isr.ingest.loader import IngestOptions, load_gallery
    from isr.ingest.precomp_source import PrecompSource

    world, bundle_dir = world_and_bundle
    bundle = Bundle.load(bundle_dir)
    path = tmp_path / "loaded"
    load_gallery(PrecompSource(world, "test"), str(path), bundle, IngestOptions(progress=False))
    cfg = TrecStyleConfig(
        data_dir=world, split="test", bundle_dir=bundle_dir, out_dir=tmp_path / "out",
        image_index=path, directions=("t2i",), configs=("exhaustive",), sweep_directions=(),
        max_queries=80, seed=5, progress=False,
    )  # fmt: skip
    again = evaluate(cfg)
    a, b = report.result("t2i", "exhaustive"), again.result("t2i", "exhaustive")
    assert a.metrics == b.metrics
    assert read_run(a.run_file).keys() == read_run(b.run_file).keys()


def items(n: int, seed: int = 0) -> Encoded:
    rng = np.random.default_rng(seed)
    kws = tuple(Keywords(("a", "b"), (0.9, 0.8)) for _ in range(n))
    return Encoded(rng.normal(size=(n, 8)), rng.normal(size=(n, 3, 4)), np.ones((n, 3), bool), kws)


def test_gallery_index_is_built_once_and_checked(tmp_path: Path) -> None:
    ids = [str(i) for i in range(30)]
    kw = {"modality": "image", "fingerprint": "f" * 64, "r_i": 2, "max_frags": 3,
          "progress": False}  # fmt: skip
    index = open_gallery_index(tmp_path / "g", ids, items(30), **kw)
    assert len(index) == 30 and index.readonly and index.config.r_i == 2
    index.close()
    stamp = (tmp_path / "g/manifest.json").stat().st_mtime_ns
    # present: opened, not rebuilt (different items would not even be looked at)
    open_gallery_index(tmp_path / "g", ids, items(30, seed=1), **kw).close()
    assert (tmp_path / "g/manifest.json").stat().st_mtime_ns == stamp
    assert not (tmp_path / "g.building").exists()
    with pytest.raises(Conflict, match="filled by bundle"):
        open_gallery_index(tmp_path / "g", ids, items(30), **{**kw, "fingerprint": "e" * 64})
    with pytest.raises(Conflict, match="text"):
        open_gallery_index(tmp_path / "g", ids, items(30), **{**kw, "modality": "text"})
    with pytest.raises(Conflict, match="R_I"):
        open_gallery_index(tmp_path / "g", ids, items(30), **{**kw, "r_i": 1}, require_r_i=True)
    with pytest.raises(NotFound, match="missing"):
        open_gallery_index(tmp_path / "g", [*ids, "30"], items(31), **kw)


def test_command_line(world_and_bundle, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from isr.app.trec import main

    world, bundle = world_and_bundle
    args = ["--data", str(world), "--bundle", str(bundle), "--out", str(tmp_path / "o"),
            "--directions", "i2t", "--configs", "fast", "--sweep-directions", "",
            "--max-queries", "10", "--no-progress", "--title", "cli"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "# TREC-style evaluation: cli" in res.output and "| fast " in res.output
    body = json.loads((tmp_path / "o/report.json").read_text())
    assert [r["ablation"] for r in body["results"]] == ["fast", "exhaustive"]
    bad = CliRunner().invoke(main, [*args[:4], "--out", str(tmp_path / "p"), "--configs", "nope"])
    assert bad.exit_code != 0 and "nope" in bad.output


def test_direction_keywords_are_each_directions_own(tmp_path: Path) -> None:
    from isr.errors import InvalidInput
    from isr.plugin.pipeline import KeywordOptions

    kw = KeywordOptions(rule="cost", alpha=1.0, gain=0.3)
    i2t = KeywordOptions(rule="cost", alpha=1.0, gain=0.02, scale=0.5)
    base = {"data_dir": tmp_path, "split": "test", "bundle_dir": tmp_path, "out_dir": tmp_path}
    cfg = TrecStyleConfig(**base, keywords=kw, direction_keywords={"i2t": i2t})
    t, i = cfg.options("full", 5, 10, "t2i").keywords, cfg.options("full", 5, 10, "i2t").keywords
    assert (t.gain, t.scale, t.r_t, t.r_i) == (0.3, 1.0, 5, 10)
    assert (i.gain, i.scale, i.r_t, i.r_i) == (0.02, 0.5, 5, 10)
    assert TrecStyleConfig(**base, keywords=kw).options("full", 3, None, "i2t").keywords.gain == 0.3
    with pytest.raises(InvalidInput, match="direction_keywords"):
        TrecStyleConfig(**base, direction_keywords={"x2y": i2t})
