"""The hybrid coder's benchmark table in one run: each view alone and fused, EN/ES x D/P.

    python benchmarks/hybrid_table.py --workdir /tmp/hybrid                 # all four corpora
    python benchmarks/hybrid_table.py --workdir /tmp/hybrid --only es-D     # one of them

For each corpus and each of ``--seeds`` (default 42 43 44: headline numbers are mean ± sd of three
seeds) it runs, each in its own process, the real scripts: ``train.py`` with the corpus's shipped
fused recipe (:data:`CORPORA`) and the seed, ``calibrate.py`` at the default target (its frontier
says what 0.95/0.9/0.85/0.8 certify on dev and give on test); for the first seed also ``export.py``,
then it times ``Coder.predict`` over the test notes from the exported bundle; then each seed again under
``certification.design=all_labels`` (refitted on train + dev, ranking metrics only; ``--no-all-labels``
skips it). Nothing is chosen
from the test numbers it prints: the recipes were fixed on the tuning split beforehand
(``benchmarks/results/choices.md``).
Writes ``benchmarks/results/<date>-hybrid.md`` and ``.json`` with the command and commit.
Every number comes from the runs' own MLflow metrics and ``calibration.json``; nothing is typed in.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info, set_offline_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Each corpus's shipped recipe, as configured: the README main job (English D), the Spanish
#: experiments, and English P (``quickstart_p_en``: tfidf + a dictionary of English n-grams projected
#: from the Spanish CodiEsp-X train spans). Which views each fuses was decided on the tuning split
#: (benchmarks/results/choices.md).
CORPORA = {
    "en-D": ["experiment=hybrid"],
    "en-P": ["experiment=quickstart_p_en"],
    "es-D": ["experiment=quickstart_es"],
    "es-P": ["experiment=quickstart_p_es"],
}
TARGETS = (0.95, 0.9, 0.85, 0.8)
VIEWS = ("neural", "tfidf", "dictionary")
#: Published CodiEsp test MAP, for context (not comparable to the English machine translations).
PUBLISHED = {
    "es-D": "IXA-AAA (2020 best) 0.593; López-García et al. 2021 0.662",
    "es-P": "López-García et al. 2021 0.544",
}


def _run(cmd: list[str], log: Path) -> tuple[str, float]:
    started = time.time()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=fh, text=True)
    fh_out = proc.stdout
    log.with_suffix(".out").write_text(fh_out)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return fh_out, time.time() - started


def _bundle_predict_seconds(bundle: Path, corpus: str) -> dict[str, float]:
    code = (
        "import json, sys, time\n"
        "from medcoder import Coder\n"
        "from medcoder.data import load_codiesp, resolve_codiesp_root\n"
        f"lang, ct = {corpus.split('-')[0]!r}, {corpus.split('-')[1]!r}\n"
        "notes = load_codiesp(resolve_codiesp_root(download=False), language=lang, code_type=ct)['test']\n"
        f"coder = Coder.load({str(bundle)!r})\n"
        "t = time.perf_counter(); preds = coder.predict(list(notes['text']), list(notes['id']), progress=False)\n"
        "dt_ = time.perf_counter() - t\n"
        "acc = [c for p in preds for c in p.codes if c.decision == 'auto_accept']\n"
        "print(json.dumps({'predict_seconds': dt_, 'notes_per_second': len(preds) / dt_,\n"
        "                  'accepted_without_evidence': sum(1 for c in acc if not c.evidence)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_corpus(name: str, workdir: Path, extra: list[str], *, seed: int | None = None,
               export: bool = True, all_labels: bool = False) -> dict[str, Any]:
    """Train, calibrate (and with ``export``: export and time the bundle) one corpus's recipe at one
    seed, each step its own process; every number read back from the run's own files. With
    ``all_labels``: the same recipe under ``certification.design=all_labels`` (refitted on train +
    dev), trained only: nothing is left to calibrate it with."""
    root = workdir / name / ((f"seed{seed}" if seed is not None else "") + ("-all_labels" if all_labels else ""))
    root.mkdir(parents=True, exist_ok=True)
    common = [f"paths.root_dir={root}"]
    seeded = [f"seed={seed}"] if seed is not None else []
    design = ["certification.design=all_labels"] if all_labels else []
    out, train_s = _run([sys.executable, "scripts/train.py", *CORPORA[name], *seeded, *design,
                         f"run_name=hybrid-{name}", *common, *extra], root / "train.log")
    run_id = re.findall(r"^run_id=(\S+)", out, flags=re.M)[-1]
    if all_labels:
        metrics = json.loads((root / "outputs" / "runs" / run_id / "metrics.json").read_text())
        return {"corpus": name, "seed": seed, "run_id": run_id, "protocol": "all_labels", "metrics": metrics,
                "seconds": {"train": train_s}}
    _, cal_s = _run([sys.executable, "scripts/calibrate.py", f"run_id={run_id}", *common], root / "calibrate.log")
    seconds = {"train": train_s, "calibrate": cal_s}
    predict: dict[str, float] = {}
    if export:
        out, seconds["export"] = _run([sys.executable, "scripts/export.py", f"run_id={run_id}", *common,
                                       "mlflow_model.registered_model_name=null"], root / "export.log")
        bundle = Path(re.findall(r"^bundle_dir=(\S+)", out, flags=re.M)[-1])
        predict = _bundle_predict_seconds(bundle, name)
    run_dir = root / "outputs" / "runs" / run_id
    metrics = json.loads((run_dir / "metrics.json").read_text())
    calibration = json.loads((run_dir / "calibration.json").read_text())
    return {
        "corpus": name, "seed": seed, "run_id": run_id, "protocol": "certified", "metrics": metrics,
        "frontier": calibration["frontier"],
        "guarantee": calibration["guarantee"], "evaluation": calibration["evaluation"],
        "seconds": seconds, "predict": predict,
    }


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _mean_sd(values: list[float | None], digits: int = 3) -> str:
    """``mean ± sd`` over seeds (sd with ddof 1; one value: the value); None values are skipped."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return "—"
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def accept_at(result: dict[str, Any], target: float) -> dict[str, Any]:
    """What the run's frontier says at ``target``: τ, accepted test codes, their share of the
    predicted test codes and their test precision (None where nothing certified)."""
    n_pred = result["evaluation"].get("n_predicted") or None
    for row in result["frontier"]:
        if abs(row["target_precision"] - target) < 1e-9:
            n = row.get("test_n_auto_accepted", 0) or 0
            return {"tau": row.get("tau"), "n": n, "share": (n / n_pred) if n_pred else None,
                    "precision": row.get("test_auto_accept_precision")}
    return {"tau": None, "n": 0, "share": None, "precision": None}


def _by_corpus(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        grouped.setdefault(r["corpus"], []).append(r)
    return grouped


def all_labels_markdown(results: list[dict[str, Any]]) -> list[str]:
    """The rows of the ``all_labels`` protocol: ranking metrics only (no auto-accept)."""
    grouped = _by_corpus(results)
    if not grouped:
        return []
    lines = ["", "The same recipes under `certification.design=all_labels`: tuned on the same inner fifth of train, "
             "then refitted on every labelled note (train + CodiEsp dev, 750 notes), the protocol of a shared "
             "task's test run. Nothing is left to certify τ, so these runs auto-accept nothing; they are for "
             "comparing ranking metrics with published systems.", "",
             "| corpus | test MAP | micro-F1 | P@8 | per seed | train s (mean) | published (test MAP) |",
             "|---|---:|---:|---:|---|---:|---|"]
    for corpus, runs in grouped.items():
        ms = [r["metrics"] for r in runs]
        lines.append(f"| {corpus} | **{_mean_sd([m['test_map'] for m in ms])}** | "
                     f"{_mean_sd([m['test_micro_f1'] for m in ms])} | {_mean_sd([m['test_p_at_8'] for m in ms])} | "
                     f"{' / '.join(_fmt(m['test_map'], 4) for m in ms)} | "
                     f"{np.mean([r['seconds']['train'] for r in runs]):.0f} | {PUBLISHED.get(corpus, '—')} |")
    return lines


def markdown(results: list[dict[str, Any]], command: str, info: dict[str, Any]) -> str:
    every = [r for r in results if r.get("protocol") == "all_labels"]
    results = [r for r in results if r.get("protocol") != "all_labels"]
    grouped = _by_corpus(results)
    seeds = sorted({r.get("seed") for r in results if r.get("seed") is not None})
    lines = [f"# Hybrid coder benchmark ({dt.date.today().isoformat()})", "",
             f"`{command}` — {info.get('cpu_model', '?')}, torch {info.get('torch', '?')}, commit `{info.get('git_commit', '?')}`.",
             f"Seeds {seeds or 'as configured'}: mean ± sd over them. Each seed carves its own tuning fifth of "
             "train (`certification.design=inner_train`): the views fit on the other four fifths, the stacker "
             "on their out-of-fold scores, the calibrator and the decision threshold on the tuning fifth; the shipped recipes then "
             "refit the views on all of train (`certification.refit`); τ is certified on CodiEsp dev; test is "
             "read once, here.", "",
             "| corpus | system | test MAP | tuning-split MAP | micro-F1 | P@8 | published (test MAP) |",
             "|---|---|---:|---:|---:|---:|---|"]
    for corpus, runs in grouped.items():
        ms = [r["metrics"] for r in runs]
        for v in VIEWS:
            if all(f"test_map_{v}" in m for m in ms):
                lines.append(f"| {corpus} | {v} alone | {_mean_sd([m[f'test_map_{v}'] for m in ms])} | "
                             f"{_mean_sd([m.get(f'dev_map_{v}') for m in ms])} | "
                             f"{_mean_sd([m.get(f'test_micro_f1_{v}') for m in ms])} | "
                             f"{_mean_sd([m.get(f'test_p_at_8_{v}') for m in ms])} | |")
        lines.append(f"| {corpus} | **fused (stacker)** | **{_mean_sd([m['test_map'] for m in ms])}** | "
                     f"{_mean_sd([m.get('dev_map') for m in ms])} | {_mean_sd([m['test_micro_f1'] for m in ms])} | "
                     f"{_mean_sd([m['test_p_at_8'] for m in ms])} | {PUBLISHED.get(corpus, '—')} |")
    lines += ["", "Auto-accept at each target precision (δ = 0.1, τ certified on CodiEsp dev, applied to test):", "",
              "| corpus | target | seeds certifying | τ | share of predicted test codes auto-accepted | test precision |",
              "|---|---:|---:|---:|---:|---:|"]
    for corpus, runs in grouped.items():
        for target in TARGETS:
            rows = [accept_at(r, target) for r in runs]
            certified = sum(1 for a in rows if a["tau"] is not None)
            lines.append(f"| {corpus} | {target:.2f} | {certified} of {len(rows)} | "
                         f"{_mean_sd([a['tau'] for a in rows])} | "
                         f"{_mean_sd([a['share'] if a['tau'] is not None else 0.0 for a in rows])} | "
                         f"{_mean_sd([a['precision'] for a in rows])} |")
    lines += ["", "Per seed (test MAP, share auto-accepted at 0.90 / 0.95, run id):", "",
              "| corpus | seed | test MAP | tuning MAP | share @0.90 | share @0.95 | run |", "|---|---:|---:|---:|---:|---:|---|"]
    for corpus, runs in grouped.items():
        for r in runs:
            a90, a95 = accept_at(r, 0.9), accept_at(r, 0.95)
            lines.append(f"| {corpus} | {r.get('seed')} | {_fmt(r['metrics']['test_map'], 4)} | "
                         f"{_fmt(r['metrics'].get('dev_map'), 4)} | {_fmt(a90['share'] if a90['tau'] is not None else 0.0)} | "
                         f"{_fmt(a95['share'] if a95['tau'] is not None else 0.0)} | `{r['run_id'][:8]}` |")
    lines += ["", "| corpus | train s (mean) | calibrate s (mean) | export s | predict notes/s (bundle, test) |",
              "|---|---:|---:|---:|---:|"]
    for corpus, runs in grouped.items():
        exported = next((r for r in runs if r.get("predict")), None)
        lines.append(f"| {corpus} | {np.mean([r['seconds']['train'] for r in runs]):.0f} | "
                     f"{np.mean([r['seconds']['calibrate'] for r in runs]):.0f} | "
                     f"{_fmt(exported['seconds'].get('export') if exported else None, 0)} | "
                     f"{_fmt(exported['predict'].get('notes_per_second') if exported else None, 2)} |")
    lines += all_labels_markdown(every)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--only", nargs="*", choices=sorted(CORPORA), default=None)
    ap.add_argument("--override", action="append", default=[], help="extra Hydra override for train.py")
    ap.add_argument("--seeds", type=int, nargs="*", default=[42, 43, 44],
                    help="run seeds (each a full train + calibrate; the first is also exported and timed)")
    ap.add_argument("--results-dir", type=Path, default=HERE / "results")
    ap.add_argument("--stem", default=None, help="results file name without suffix (default <date>-hybrid)")
    ap.add_argument("--no-all-labels", action="store_true",
                    help="skip the all_labels rows (each seed's recipe refitted on train + dev, train only)")
    args = ap.parse_args()
    set_offline_env()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = [run_corpus(name, args.workdir, args.override, seed=seed, export=(k == 0), all_labels=every)
               for name in (args.only or list(CORPORA)) for every in (False, True)[: 1 if args.no_all_labels else 2]
               for k, seed in enumerate(args.seeds)]
    command = "python benchmarks/hybrid_table.py " + " ".join(sys.argv[1:])
    from run_all import git_commit

    info = {**machine_info(), "git_commit": git_commit()}
    stem = args.results_dir / (args.stem or f"{dt.date.today().isoformat()}-hybrid")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "machine": info, "results": results},
                                                    indent=2, default=str))
    text = markdown(results, command, info)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
