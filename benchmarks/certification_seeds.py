"""Certification designs x seeds (issue 19): train + calibrate from scratch per (design, seed) and
report mean ± sd of test MAP and of the auto-accepted share at the shipped target.

Run by hand (CPU; one English CodiEsp-D run of the main job's recipe takes ~5-10 min on the 2-core
machine, so 2 designs x 3 seeds is about an hour):

    python benchmarks/certification_seeds.py run --home /tmp/m19/en --experiment hybrid \\
        --designs dev_halves inner_train --seeds 42 43 44
    python benchmarks/certification_seeds.py report --home /tmp/m19/en --home /tmp/m19/es \\
        --out benchmarks/results/<date>-certification-seeds.md

Every run is ``scripts/train.py experiment=<e> seed=<s> certification.design=<d>`` then
``scripts/calibrate.py run_id=<id>`` in its own process, sharing ``--home`` (MEDCODER_HOME: one
MLflow store and the frozen encoder's state cache). ``runs.tsv`` in the home lists the finished runs,
so an interrupted sweep re-runs only what is missing.

What decides what: nothing here picks from test. The report prints, per design, what the design's
certification labels certified (the ``certify`` split: dev's other half, or all of dev) and what
that τ did on test, as mean ± sd over seeds. Which design ships was decided by the rule written in
``benchmarks/results/choices.md`` ("certification design"): the design whose *certification split*
certifies a τ at the shipped target in more seeds, ties broken by the larger mean certified share
on the certification split; test is printed only. ``dev MAP`` is each design's own tuning split
(dev's other half, or the fifth of train), so it does not compare across designs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = REPO / ".venv" / "bin" / "python"
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
       "TOKENIZERS_PARALLELISM": "false"}
#: design -> its short tag and the overrides that select it (inner_train moves a fifth of train).
#: Refit (issue 23) only exists for inner_train; the section 4 comparison of designs ran without it.
DESIGNS = {"dev_halves": ("halves", ["certification.design=dev_halves", "certification.refit=false"]),
           "inner_train": ("inner", ["certification.design=inner_train", "certification.fraction=0.2",
                                     "certification.refit=false"]),
           "none": ("none", ["certification.design=none", "certification.refit=false"])}
#: experiment -> tag prefix of its runs
PREFIX = {"hybrid": "en", "quickstart_es": "es", "quickstart_p_es": "esp"}


def _runs(home: Path) -> dict[str, str]:
    """tag -> run id of the finished runs recorded in ``home/runs.tsv`` (the last of a tag wins)."""
    path = home / "runs.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines()] if path.exists() else []
    return {r[0]: r[1] for r in rows if len(r) >= 3 and not r[1].endswith("FAILED")}


def _output(cmd: list[str], log: Path, env: dict[str, str]) -> str:
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[1:3])} failed (exit {proc.returncode}); see {log}")
    return log.read_text()


def run(args: argparse.Namespace) -> None:
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ENV, "MEDCODER_HOME": str(home)}
    done = _runs(home)
    for seed in args.seeds:
        for design in args.designs:
            short, overrides = DESIGNS[design]
            tag = f"{PREFIX.get(args.experiment, args.experiment)}_{short}_s{seed}"
            if tag in done:
                continue
            start = time.time()
            out = _output([str(PY), "scripts/train.py", f"experiment={args.experiment}", f"seed={seed}", *overrides,
                           f"run_name={tag}"], home / f"{tag}.train.log", env)
            run_id = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("run_id=")][-1]
            _output([str(PY), "scripts/calibrate.py", f"run_id={run_id}"], home / f"{tag}.cal.log", env)
            with (home / "runs.tsv").open("a") as fh:
                fh.write(f"{tag}\t{run_id}\t{round(time.time() - start)}s\t{args.experiment} seed={seed} {design}\n")


def _row(home: Path, tag: str, run_id: str) -> dict[str, float | str | None]:
    run_dir = home / "outputs" / "runs" / run_id
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cal = json.loads((run_dir / "calibration.json").read_text())
    g, ev = cal["guarantee"], cal["evaluation"]
    return {"tag": tag, "run_id": run_id, "dev_map": metrics["dev_map"], "test_map": metrics["test_map"],
            "certification_split": cal.get("certification_split", cal["calibration_split"]),
            "n_eligible": g["n_calibration_eligible"], "n_certified": g["n_calibration_accepted"],
            "tau": g["tau"], "certify_precision": g["calibration_precision"],
            "test_share": ev["auto_accept_coverage"], "test_precision": ev.get("auto_accept_precision"),
            "test_n_accepted": ev.get("n_auto_accepted")}


def _mean_sd(values: list[float | None]) -> str:
    vals = [float("nan") if v is None else float(v) for v in values]
    defined = [v for v in vals if v == v]
    if not defined:
        return "undefined (nothing accepted)"
    mean = statistics.fmean(defined)
    sd = statistics.stdev(defined) if len(defined) > 1 else 0.0
    note = f" (of {len(defined)} seeds)" if len(defined) < len(vals) else ""
    return f"{mean:.3f} ± {sd:.3f}{note}"


def report(args: argparse.Namespace) -> None:
    lines = ["| run | certified on | dev MAP | test MAP | eligible | certified | τ | certify precision | "
             "test share auto-accepted | test precision |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    groups: dict[str, list[dict]] = {}
    for home in map(Path, args.home):
        for tag, run_id in _runs(home).items():
            r = _row(home, tag, run_id)
            groups.setdefault(tag.rsplit("_s", 1)[0], []).append(r)
            fmt = (lambda v, d=4: "—" if v is None or v != v else f"{v:.{d}f}")  # noqa: E731
            lines.append(f"| {tag} (`{run_id[:8]}`) | {r['certification_split']} | {fmt(r['dev_map'])} | "
                         f"{fmt(r['test_map'])} | {r['n_eligible']} | {r['n_certified']} | {fmt(r['tau'])} | "
                         f"{fmt(r['certify_precision'], 3)} | {fmt(r['test_share'], 3)} | {fmt(r['test_precision'], 3)} |")
    lines += ["", "| recipe + design | seeds | test MAP | test share auto-accepted | test precision of auto-accepted |"
                  " seeds certifying |", "|---|---:|---|---|---|---:|"]
    for name, rows in sorted(groups.items()):
        lines.append(f"| {name} | {len(rows)} | {_mean_sd([r['test_map'] for r in rows])} | "
                     f"{_mean_sd([r['test_share'] for r in rows])} | {_mean_sd([r['test_precision'] for r in rows])} | "
                     f"{sum(r['tau'] is not None for r in rows)} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    sys.stdout.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--home", required=True)
    r.add_argument("--experiment", default="hybrid")
    r.add_argument("--designs", nargs="+", default=["dev_halves", "inner_train"], choices=list(DESIGNS))
    r.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    p = sub.add_parser("report")
    p.add_argument("--home", action="append", required=True)
    p.add_argument("--out")
    args = parser.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
