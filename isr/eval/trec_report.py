"""The report of a TREC-style evaluation: Markdown, JSON and the sweep's plot, with provenance.

Entry point: :func:`write_outputs(report) -> {name: path}` (``report.md``, ``report.json``,
``sweep.png`` in the run's ``out_dir``). Every file names the command, the bundle's
fingerprint, the git revision and the date. :func:`targets` checks the project's goals:
the full pipeline keeps >= 99% of exhaustive max-sim's R@10; the keyword screen keeps >= 99%
of the ground truth while admitting <= 25% of the gallery.
"""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from isr.eval.report import markdown_table
from isr.eval.sweep_plot import plot_sweep

if TYPE_CHECKING:
    from isr.eval.trec_style import ConfigResult, TrecStyleReport

__all__ = ["git_revision", "provenance", "targets", "write_outputs"]

ROOT = Path(__file__).resolve().parents[2]  # the project root (isr/eval/ -> .)
TITLES = {"t2i": "Text -> image", "i2t": "Image -> text"}
KEEP_R10 = 99.0  # % of exhaustive max-sim's R@10 the full pipeline keeps
KEEP_GT = 99.0  # % of ground truth the screen keeps
ADMIT_MAX = 25.0  # % of the gallery the screen may admit
TRIVIAL_ADMIT = 0.95  # a screen admitting this share or more meets a kept target trivially


def git_revision(root: Path = ROOT) -> dict[str, Any]:
    """{"commit": hash, "dirty": bool}, or {"commit": None, "why": ...} outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        )
    except OSError as e:
        return {"commit": None, "why": f"git cannot run ({e})"}
    if head.returncode != 0:
        return {"commit": None, "why": head.stderr.strip() or "not a git checkout"}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def provenance(command: str, fingerprint: str, bundle_dir: Path) -> dict[str, Any]:
    return {
        "command": command,
        "bundle": {"path": str(Path(bundle_dir).resolve()), "fingerprint": fingerprint},
        "git": git_revision(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.system()}",
    }


def targets(report: TrecStyleReport) -> list[dict[str, Any]]:
    """The goals per direction: name, value (%), goal, met."""
    rows = []
    for d in report.config.directions:
        full, ref = report.result(d, "full"), report.result(d, "exhaustive")
        if full is not None and ref is not None and ref.metrics["R@10"] > 0:
            v = 100.0 * full.metrics["R@10"] / ref.metrics["R@10"]
            rows.append(_target(d, "full R@10 / exhaustive R@10", v, ">=", KEEP_R10))
        screened = next(
            (r for r in report.results if r.direction == d and not r.sweep and r.r_t), None
        )
        if screened is not None and screened.gt_kept is not None:
            at = f" (R_I={screened.r_i}, R_T={screened.r_t})"
            # Keeping the ground truth is no feat for a screen that admits nearly everything.
            trivial = screened.admitted >= TRIVIAL_ADMIT
            v = 100.0 * screened.gt_kept
            rows.append(
                _target(d, "ground truth kept by the screen" + at, v, ">=", KEEP_GT, trivial)
            )
            v = 100.0 * screened.admitted
            rows.append(_target(d, "gallery admitted by the screen" + at, v, "<=", ADMIT_MAX))
            lift = screened.gt_kept / screened.admitted if screened.admitted > 0 else 0.0
            rows.append(_target(d, "screen lift = kept / admitted (random: 1)" + at,
                                lift, ">=", round(KEEP_GT / ADMIT_MAX, 2), unit=""))  # fmt: skip
    return rows


def _target(
    direction: str,
    name: str,
    value: float,
    op: str,
    goal: float,
    trivial: bool = False,
    unit: str = "%",
) -> dict[str, Any]:
    met = value >= goal if op == ">=" else value <= goal
    return {"direction": direction, "target": name, "value": value, "goal": f"{op} {goal:g}{unit}",
            "met": met, "trivial": bool(met and trivial)}  # fmt: skip


def met_word(t: dict[str, Any]) -> str:
    """ "yes", "NO", or "trivially" for a kept target met by a screen admitting nearly all."""
    if not t["met"]:
        return "NO"
    return "trivially (admits ~all)" if t.get("trivial") else "yes"


def _lift(r: ConfigResult) -> float | str:
    """kept / admitted: 1.0 for a random filter of the same size."""
    if r.gt_kept is None or r.admitted <= 0:
        return "-"
    return r.gt_kept / r.admitted


def _pct(x: float | None) -> float | str:
    return "-" if x is None else 100.0 * x


def _main_table(rs: list[ConfigResult], depth: int) -> str:
    head = ["configuration", "R_I", "R_T", "R@1", "R@5", "R@10", "R@sum", f"MRR@{depth}",
            "nDCG@10", "GT kept %", "admitted %", "lift", "relaxed %", "speed-up", "wall", "CPU ms",
            "p50 ms", "p95 ms", "p99 ms"]  # fmt: skip
    rows = []
    for r in rs:
        m, t = r.metrics, r.latency["total"]
        rows.append([r.ablation, r.r_i if r.r_t else "-", r.r_t or "-", m["R@1"], m["R@5"],
                     m["R@10"], m["R@sum"], m["MRR"], m["nDCG@10"], _pct(r.gt_kept),
                     100.0 * r.admitted, _lift(r), 100.0 * r.relaxed, r.speedup or 0.0,
                     r.speedup_wall or 0.0, r.cpu_ms, t["p50"], t["p95"], t["p99"]])  # fmt: skip
    return markdown_table(head, rows)


def _stage_table(rs: list[ConfigResult]) -> str:
    head = ["configuration", "stage", "p50 ms", "p95 ms", "p99 ms", "mean ms", "docs"]
    rows = []
    for r in rs:
        for name, s in r.latency.items():
            if name != "total":
                rows.append([r.ablation, name, s["p50"], s["p95"], s["p99"], s["mean"],
                             s["count"]])  # fmt: skip
    return markdown_table(head, rows, digits=3)


def _sweep_table(rs: list[ConfigResult]) -> str:
    head = ["R_I", "R_T", "R@1", "R@5", "R@10", "GT kept %", "admitted %", "lift", "speed-up",
            "wall", "CPU ms", "p50 ms", "p95 ms"]  # fmt: skip
    rows = [
        [r.r_i, r.r_t or 0, r.metrics["R@1"], r.metrics["R@5"], r.metrics["R@10"],
         _pct(r.gt_kept), 100.0 * r.admitted, _lift(r), r.speedup or 0.0,
         r.speedup_wall or 0.0, r.cpu_ms, r.latency["total"]["p50"], r.latency["total"]["p95"]]
        for r in sorted(rs, key=lambda r: (r.r_i, r.r_t or 0))
    ]  # fmt: skip
    return markdown_table(head, rows)


def markdown(report: TrecStyleReport, prov: dict[str, Any], plot: str | None) -> str:
    cfg = report.config
    git = prov["git"]
    rev = git["commit"] or f"unknown ({git.get('why', '')})"
    if git.get("dirty"):
        rev += " (with uncommitted changes)"
    lines = [
        f"# TREC-style evaluation{': ' + cfg.title if cfg.title else ''}",
        "",
        f"- data: `{Path(cfg.data_dir).resolve()}`, split `{cfg.split}`",
        f"- bundle: `{prov['bundle']['path']}`, fingerprint `{report.bundle_fingerprint[:16]}`",
        f"- command: `{prov['command']}`",
        f"- git: `{rev}`; date: {prov['date']}; torch threads: {prov['torch_threads']}",
        f"- pipeline: depth {cfg.depth}, num_candidates {cfg.num_candidates}, rerank_window "
        f"{cfg.rerank_window}; latency is the pipeline's (query encoding excluded; the encoder "
        f"takes {report.encode_ms['text']:.2f} ms per text and {report.encode_ms['image']:.2f} "
        "ms per image in batches)",
        "- R@k, MRR and nDCG in %, from trec_eval (pyserini's bundled jar); speed-up = mean CPU "
        "time per query of exhaustive max-sim / that of the configuration (CPU time, as other "
        "processes share this machine's cores; 'wall' = the ratio of median wall latencies)",
    ]
    for d in cfg.directions:
        main = [r for r in report.results if r.direction == d and not r.sweep]
        if not main:
            continue
        lines += [
            "",
            f"## {TITLES[d]}: {main[0].queries} queries, gallery of {main[0].gallery}",
            "",
            f"Index: `{report.indexes[d]}`",
            "",
            _main_table(main, cfg.depth),
            "",
            "Latency per stage (docs: mean documents the stage admitted or scored)",
            "",
            _stage_table(main),
        ]
    for d in cfg.sweep_directions:
        sw = [r for r in report.results if r.direction == d and r.sweep]
        if not sw:
            continue
        lines += [
            "",
            f"## Sweep R_I x R_T ({TITLES[d]}, {cfg.sweep_config})",
            "",
            _sweep_table(sw),
        ]
    if plot:
        lines += ["", f"![R@1 and ground truth kept against speed-up]({plot})"]
    tg = targets(report)
    if tg:
        lines += [
            "",
            "## Targets",
            "",
            markdown_table(
                ["direction", "target", "value %", "goal", "met"],
                [[t["direction"], t["target"], t["value"], t["goal"], met_word(t)] for t in tg],
            ),
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_outputs(report: TrecStyleReport) -> dict[str, str]:

    cfg = report.config
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance(cfg.command, report.bundle_fingerprint, cfg.bundle_dir)
    files: dict[str, str] = {}
    sweep_dirs = [d for d in cfg.sweep_directions if any(
        r.direction == d and r.sweep for r in report.results)]  # fmt: skip
    if sweep_dirs:
        files["sweep.png"] = str(plot_sweep(report, out / "sweep.png", prov))
    md = markdown(report, prov, "sweep.png" if sweep_dirs else None)
    (out / "report.md").write_text(md, encoding="utf-8")
    files["report.md"] = str(out / "report.md")
    body = {
        "title": cfg.title,
        **prov,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "encode_ms_per_item": report.encode_ms,
        "indexes": report.indexes,
        "results": [asdict(r) for r in report.results],
        "targets": targets(report),
    }
    (out / "report.json").write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    files["report.json"] = str(out / "report.json")
    return files
