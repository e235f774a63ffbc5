"""The hybrid coder's benchmark table in one run: each view alone and fused, EN/ES x D/P.

    python benchmarks/hybrid_table.py --workdir /tmp/hybrid                 # all four corpora
    python benchmarks/hybrid_table.py --workdir /tmp/hybrid --only es-D     # one of them

For each corpus it runs, each in its own process, the real scripts: ``train.py`` with the corpus's
shipped fused recipe (:data:`CORPORA`), ``calibrate.py`` at the default
target (its frontier says what 0.95/0.9/0.85/0.8 certify on dev and give on test) and
``export.py``; then it times ``Coder.predict`` over the test notes from the exported bundle.
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

from _common import machine_info, set_offline_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Each corpus's shipped recipe: the README main job (English D), the Spanish experiments as
#: configured (``quickstart_p_es`` fuses tfidf + dictionary only: docs/hybrid-coder.md "Which views pay"), and
#: English P with the procedure settings of ``quickstart_p_es``, neural + tfidf (the dictionary has
#: no English procedure lexicon: CodiEsp-X spans are Spanish offsets, ICD-10-CM wording is for D codes).
CORPORA = {
    "en-D": ["experiment=hybrid"],
    "en-P": ["experiment=quickstart_p_es", "data=codiesp_p_en", "fusion.views=[neural,tfidf]"],
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


def run_corpus(name: str, workdir: Path, extra: list[str]) -> dict[str, Any]:
    root = workdir / name
    root.mkdir(parents=True, exist_ok=True)
    common = [f"paths.root_dir={root}"]
    # The English corpora share the English encoder-state cache; paths.cache_dir keeps it per workdir.
    out, train_s = _run([sys.executable, "scripts/train.py", *CORPORA[name],
                         f"run_name=hybrid-{name}", *common, *extra], root / "train.log")
    run_id = re.findall(r"^run_id=(\S+)", out, flags=re.M)[-1]
    _, cal_s = _run([sys.executable, "scripts/calibrate.py", f"run_id={run_id}", *common], root / "calibrate.log")
    out, exp_s = _run([sys.executable, "scripts/export.py", f"run_id={run_id}", *common,
                       "mlflow_model.registered_model_name=null"], root / "export.log")
    bundle = Path(re.findall(r"^bundle_dir=(\S+)", out, flags=re.M)[-1])
    run_dir = root / "outputs" / "runs" / run_id
    metrics = json.loads((run_dir / "metrics.json").read_text())
    calibration = json.loads((run_dir / "calibration.json").read_text())
    return {
        "corpus": name, "run_id": run_id, "metrics": metrics, "frontier": calibration["frontier"],
        "guarantee": calibration["guarantee"], "evaluation": calibration["evaluation"],
        "seconds": {"train": train_s, "calibrate": cal_s, "export": exp_s},
        "predict": _bundle_predict_seconds(bundle, name),
    }


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(results: list[dict[str, Any]], command: str, info: dict[str, Any]) -> str:
    lines = [f"# Hybrid coder benchmark ({dt.date.today().isoformat()})", "",
             f"`{command}` — {info.get('cpu_model', '?')}, torch {info.get('torch', '?')}, commit `{info.get('git_commit', '?')}`.",
             "One seed. Views fitted on train, stacker on out-of-fold train scores, calibrator and τ on dev, "
             "everything below on test.", "",
             "| corpus | system | test MAP | micro-F1 | P@8 |", "|---|---|---:|---:|---:|"]
    for r in results:
        m = r["metrics"]
        for v in VIEWS:
            if f"test_map_{v}" in m:
                lines.append(f"| {r['corpus']} | {v} alone | {_fmt(m[f'test_map_{v}'])} | "
                             f"{_fmt(m.get(f'test_micro_f1_{v}'))} | {_fmt(m.get(f'test_p_at_8_{v}'))} |")
        lines.append(f"| {r['corpus']} | **fused (stacker)** | **{_fmt(m['test_map'])}** | {_fmt(m['test_micro_f1'])} | "
                     f"{_fmt(m['test_p_at_8'])} |")
    lines += ["", "Auto-accept at each target precision (δ = 0.1, τ certified on dev, applied to test):", "",
              "| corpus | target | τ | test codes accepted | share of predicted codes | test precision |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        n_pred = r["evaluation"].get("n_predicted") or None
        for row in r["frontier"]:
            if row["target_precision"] not in TARGETS:
                continue
            n = row.get("test_n_auto_accepted", 0)
            share = (n / n_pred) if n_pred else None
            lines.append(f"| {r['corpus']} | {row['target_precision']:.2f} | {_fmt(row['tau'])} | {n} | {_fmt(share)} | "
                         f"{_fmt(row.get('test_auto_accept_precision'))} |")
    lines += ["", "| corpus | train s | calibrate s | export s | predict notes/s (bundle, test) | published (ES, test MAP) |",
              "|---|---:|---:|---:|---:|---|"]
    for r in results:
        s = r["seconds"]
        lines.append(f"| {r['corpus']} | {s['train']:.0f} | {s['calibrate']:.0f} | {s['export']:.0f} | "
                     f"{r['predict']['notes_per_second']:.2f} | {PUBLISHED.get(r['corpus'], '—')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--only", nargs="*", choices=sorted(CORPORA), default=None)
    ap.add_argument("--override", action="append", default=[], help="extra Hydra override for train.py")
    ap.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = ap.parse_args()
    set_offline_env()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = [run_corpus(name, args.workdir, args.override) for name in (args.only or list(CORPORA))]
    command = "python benchmarks/hybrid_table.py " + " ".join(sys.argv[1:])
    from run_all import git_commit

    info = {**machine_info(), "git_commit": git_commit()}
    stem = args.results_dir / f"{dt.date.today().isoformat()}-hybrid"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"command": command, "machine": info, "results": results},
                                                    indent=2, default=str))
    text = markdown(results, command, info)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
