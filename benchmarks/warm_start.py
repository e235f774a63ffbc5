"""Warm vs cold retraining after a code-set change: how fast does each reach the cold model's dev MAP?

    python benchmarks/warm_start.py --workdir /tmp/wsbench
    python benchmarks/warm_start.py --workdir /tmp/wsbench-smoke --limit-docs 20 \
        --override trainer.num_train_epochs=2 --results-dir /tmp/wsbench-smoke   # smoke check

Scenario (mirrors an annual ICD-10-CM update on CodiEsp-D English, quickstart settings):

1. **last year's model** (``source``): the quickstart trained on a copy of the corpus as it would
   have been coded under last year's code set: a random ``--expand-share`` of the codes that have
   a parent code (``R50.9`` -> ``R50``, ``R11.10`` -> ``R11.1``) did not exist yet, so every
   mention is coded as that parent (this year they are *expanded*), and a random ``--new-share``
   of the other codes did not exist at all (their mentions are uncoded). All splits are recoded.
2. **cold**: this year's quickstart from scratch on the real corpus (``experiment=quickstart``).
3. **warm**: the same with ``warm_start=<last year's run dir>``: carried codes and the encoder are
   copied, expanded codes inherit their parent's rows, brand-new codes start from their
   description, parents absent from this year's label space are dropped.

All three runs share one ``paths.root_dir`` so the frozen encoder's states are computed once (by
the first run) and read from disk by the others. Per epoch, the dev MAP and its MLflow timestamp
give the seconds since the run started (after data loading, featurisation and cached states, which
are the same for cold and warm; the warm run's model loading, ``warm_start_seconds``, is added to
its times). Writes ``<results-dir>/<date>-warm-start.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import load_splits, machine_info, set_offline_env, write_jsonl_splits

ROOT = Path(__file__).resolve().parents[1]


def parent_code(code: str) -> str:
    """The code with its last character removed (a trailing ``.`` too): ``R50.9`` -> ``R50``."""
    return code[:-1].rstrip(".")


def last_years_coding(splits, expand_share: float, new_share: float, seed: int):
    """The corpus recoded as under last year's code set; returns it and the code mapping."""
    codes = sorted({c for row in splits["train"]["codes"] for c in row})
    rng = random.Random(seed)
    expandable = [c for c in codes if len(c.replace(".", "")) > 3]
    expanded = set(rng.sample(expandable, round(expand_share * len(codes))))
    rest = [c for c in codes if c not in expanded]
    brand_new = set(rng.sample(rest, round(new_share * len(codes))))

    def recode(row: dict) -> dict:
        out: list[str] = []
        for c in row["codes"]:
            c = parent_code(c) if c in expanded else c
            if c not in brand_new and c not in out:
                out.append(c)
        return {"codes": out}

    return splits.map(recode), {"expanded": sorted(expanded), "brand_new": sorted(brand_new)}


def train(name: str, workdir: Path, overrides: list[str]) -> dict[str, Any]:
    """Run ``scripts/train.py`` in a subprocess; return its run id, log path and wall seconds."""
    cmd = [sys.executable, "scripts/train.py", "experiment=quickstart", f"paths.root_dir={workdir}",
           f"run_name={name}", "trainer.disable_tqdm=true", *overrides]
    log_path = workdir / f"{name}.log"
    started = time.time()
    with log_path.open("w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    wall = time.time() - started
    log_path.write_text(log_path.read_text() + proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}); see {log_path}")
    run_id = next(ln.split("=", 1)[1] for ln in reversed(proc.stdout.splitlines()) if ln.startswith("run_id="))
    print(f"{name}: run {run_id} in {wall:.0f}s", flush=True)
    return {"name": name, "run_id": run_id, "process_wall_s": wall, "command": " ".join(cmd[1:])}


def run_summary(workdir: Path, run_id: str) -> dict[str, Any]:
    """Per-epoch dev MAP with seconds since the run started, plus the final metrics."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    run = client.get_run(run_id)
    m = run.data.metrics
    offset = m.get("warm_start_seconds", 0.0)
    history = sorted(client.get_metric_history(run_id, "epoch_dev_map"), key=lambda h: h.step)
    epochs = [{"epoch": h.step, "dev_map": h.value,
               "seconds": (h.timestamp - run.info.start_time) / 1000.0 + offset} for h in history]
    keys = ("dev_map", "test_map", "test_micro_f1", "test_p_at_8", "train_wall_seconds", "n_labels",
            "warm_start_carried", "warm_start_added", "warm_start_added_from_ancestor",
            "warm_start_dropped", "warm_start_seconds")
    return {"epochs": epochs, **{k: m[k] for k in keys if k in m}}


def time_to(epochs: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first epoch whose dev MAP reaches ``target`` (None if never)."""
    return next(({"epoch": e["epoch"], "seconds": e["seconds"]} for e in epochs if e["dev_map"] >= target), None)


def write_report(result: dict[str, Any], out_md: Path) -> None:
    cold, warm = result["runs"]["cold"], result["runs"]["warm"]
    target = result["cold_best_dev_map"]
    m = result["machine"]
    lines = [
        f"# Warm vs cold retraining after a code-set change, {result['date']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"- git commit: `{result['git_commit']}`",
        f"- machine: {m['nproc']} CPUs, {m['cpu_model']}, {m.get('mem_total_gib')} GiB RAM, no GPU; "
        f"torch {m.get('torch')} ({m.get('torch_threads')} threads), transformers {m.get('transformers')}",
        f"- scenario: {result['scenario']['n_expanded']} codes expanded (last year coded as their parent), "
        f"{result['scenario']['n_brand_new']} brand-new codes (seed {result['scenario']['seed']})",
        f"- warm start: {warm.get('warm_start_carried', 0):.0f} codes carried, {warm.get('warm_start_added', 0):.0f} added "
        f"({warm.get('warm_start_added_from_ancestor', 0):.0f} from a parent's rows), "
        f"{warm.get('warm_start_dropped', 0):.0f} dropped; loading + copying took {warm.get('warm_start_seconds', 0):.1f} s",
        "",
        f"Target: the cold model's best dev MAP, **{target:.4f}** (epoch {result['cold_to_target']['epoch']}).",
        "",
        "| run | reaches target at epoch | seconds to target | best dev MAP | final dev MAP | final test MAP | test micro-F1 | train wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, reach in (("cold", result["cold_to_target"]), ("warm", result["warm_to_target"])):
        r = result["runs"][name]
        best = max(e["dev_map"] for e in r["epochs"])
        ep = reach["epoch"] if reach else "never"
        sec = f"{reach['seconds']:.0f}" if reach else "-"
        lines.append(f"| {name} | {ep} | {sec} | {best:.4f} | {r['dev_map']:.4f} | {r['test_map']:.4f} | "
                     f"{r['test_micro_f1']:.4f} | {r['train_wall_seconds']:.0f} |")
    src = result["runs"]["source"]
    lines += [
        f"| last year's model (its own recoded dev/test) | | | {max(e['dev_map'] for e in src['epochs']):.4f} | "
        f"{src['dev_map']:.4f} | {src['test_map']:.4f} | {src['test_micro_f1']:.4f} | {src['train_wall_seconds']:.0f} |",
        "",
        "Dev MAP per epoch (seconds since the run started; warm includes its model loading):",
        "",
        "| epoch | cold dev MAP | cold s | warm dev MAP | warm s |",
        "|---:|---:|---:|---:|---:|",
    ]
    by_epoch = {e["epoch"]: e for e in warm["epochs"]}
    for e in cold["epochs"]:
        w = by_epoch.get(e["epoch"])
        lines.append(f"| {e['epoch']} | {e['dev_map']:.4f} | {e['seconds']:.0f} | "
                     + (f"{w['dev_map']:.4f} | {w['seconds']:.0f} |" if w else "| |"))
    for ep in sorted(set(by_epoch) - {e["epoch"] for e in cold["epochs"]}):
        w = by_epoch[ep]
        lines.append(f"| {ep} | | | {w['dev_map']:.4f} | {w['seconds']:.0f} |")
    lines += ["", "Run commands (from the repository root):", ""]
    lines += [f"- {name}: `python {r['command']}` ({r['process_wall_s']:.0f} s process wall)"
              for name, r in result["runs"].items()]
    out_md.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wsbench"), help="paths.root_dir of all runs")
    parser.add_argument("--expand-share", type=float, default=0.10, help="share of codes new as children of a parent")
    parser.add_argument("--new-share", type=float, default=0.05, help="share of codes new without a parent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-docs", type=int, default=None, help="first N notes per split (smoke checks)")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override for all runs")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    set_offline_env()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    splits = load_splits(args.limit_docs)
    last_year, mapping = last_years_coding(splits, args.expand_share, args.new_share, args.seed)
    (workdir / "scenario.json").write_text(json.dumps(mapping, indent=1))
    data = lambda files: ["data=jsonl", *(f"data.{k}={v}" for k, v in files.items())]  # noqa: E731
    current = data(write_jsonl_splits(splits, workdir / "this_year")) if args.limit_docs else []
    runs = {"source": train("source", workdir, [*data(write_jsonl_splits(last_year, workdir / "last_year")),
                                                 *args.override])}
    runs["cold"] = train("cold", workdir, [*current, *args.override])
    source_dir = workdir / "outputs" / "runs" / runs["source"]["run_id"]
    runs["warm"] = train("warm", workdir, [*current, f"warm_start={source_dir}", *args.override])
    for r in runs.values():
        r.update(run_summary(workdir, r["run_id"]))

    cold_best = max(runs["cold"]["epochs"], key=lambda e: e["dev_map"])
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python " + " ".join(sys.argv),
        "git_commit": sha,
        "machine": machine_info(),
        "scenario": {"seed": args.seed, "expand_share": args.expand_share, "new_share": args.new_share,
                     "n_expanded": len(mapping["expanded"]), "n_brand_new": len(mapping["brand_new"]),
                     "limit_docs": args.limit_docs},
        "cold_best_dev_map": cold_best["dev_map"],
        "cold_to_target": time_to(runs["cold"]["epochs"], cold_best["dev_map"]),
        "warm_to_target": time_to(runs["warm"]["epochs"], cold_best["dev_map"]),
        "runs": runs,
    }
    stem = dt.date.today().isoformat() + "-warm-start" + (f"-limit{args.limit_docs}" if args.limit_docs else "")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stem}.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=float) + "\n")
    write_report(result, args.results_dir / f"{stem}.md")
    print(json.dumps({k: result[k] for k in ("cold_best_dev_map", "cold_to_target", "warm_to_target")}))


if __name__ == "__main__":
    main()
