"""Run every benchmark system, one after another, and write a comparison table.

    python benchmarks/run_all.py                                   # the full comparison
    python benchmarks/run_all.py --hf-epochs 5 --medcoder-override trainer.num_train_epochs=20
    python benchmarks/run_all.py --limit-docs 20 --hf-epochs 1 --hf-max-length 128 \\
        --medcoder-override trainer.num_train_epochs=2 --results-dir /tmp/bench   # smoke check

Systems (each in its own fresh subprocess, so each has its own peak RSS, read with ``os.wait4``
for exactly that process tree, started from a small launcher):

* ``tfidf``    -- ``benchmarks/tfidf_baseline.py`` (TF-IDF + one-vs-rest logistic regression);
* ``hf``       -- ``benchmarks/hf_baseline.py`` (plain HF fine-tune of MiniLM, one 512-token
  sequence per note);
* ``medcoder`` -- ``scripts/train.py experiment=quickstart paths.root_dir=<workdir>/medcoder``
  (metrics from ``outputs/runs/<run_id>/metrics.json``, epochs run from its MLflow store).

With ``--limit-docs N`` every system sees the first N notes of each split; medcoder gets them as
``data=jsonl`` files written to the work directory. Writes ``<results-dir>/<date>-<host>.md`` and
``.json`` (the command, git commit, machine, the table and every system's full result).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import git_commit, load_splits, machine_info, set_offline_env, write_jsonl_splits

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TABLE_COLUMNS = (
    ("system", "system"),
    ("test MAP", "test_map"),
    ("micro-F1", "test_micro_f1"),
    ("P@8", "test_p_at_8"),
    ("train wall s", "train_wall_seconds"),
    ("notes/s", "train_notes_per_second"),
    ("peak RSS MiB", "peak_rss_mib"),
    ("process wall s", "process_wall_seconds"),
    ("dev MAP", "dev_map"),
)


# --------------------------------------------------------------------------------------------
# running one child
# --------------------------------------------------------------------------------------------


#: Runs the real command as a *grandchild* and writes its rusage to a file. Linux carries the
#: parent's high-water RSS across fork/vfork+exec into the child's ``ru_maxrss``, so a child
#: spawned straight from this (larger) process would report at least this process's RSS. The
#: launcher is a fresh small interpreter; what it forks starts from its small footprint.
LAUNCHER = """
import json, os, sys
out, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(out, "w") as fh:
    json.dump({"maxrss_kib": ru.ru_maxrss, "utime": ru.ru_utime, "stime": ru.ru_stime}, fh)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_child(name: str, cmd: list[str], log_path: Path) -> dict[str, Any]:
    """Run ``cmd`` from the repo root, echo and log its output, and measure it.

    The peak RSS is that one process tree's ``ru_maxrss`` from ``os.wait4`` in a small launcher
    (see :data:`LAUNCHER`), so neither earlier children (``RUSAGE_CHILDREN`` is a running
    maximum) nor this process's own size can inflate it.
    """
    print(f"\n=== {name}: {shlex.join(cmd)}", flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    usage_path = log_path.with_suffix(".rusage.json")
    usage_path.unlink(missing_ok=True)
    started = time.perf_counter()
    lines: list[str] = []
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(usage_path), *cmd],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            log.write(line)
            shown = line if len(line) <= 400 else line[:400] + " ...\n"
            sys.stdout.write(f"[{name}] {shown}")
            sys.stdout.flush()
        rc = proc.wait()
    usage = json.loads(usage_path.read_text()) if usage_path.is_file() else {}
    return {
        "command": shlex.join(cmd),
        "returncode": rc,
        "process_wall_seconds": time.perf_counter() - started,
        "peak_rss_mib": usage["maxrss_kib"] / 1024.0 if usage else None,  # Linux: KiB
        "cpu_user_seconds": usage.get("utime"),
        "cpu_system_seconds": usage.get("stime"),
        "log": str(log_path),
        "stdout_lines": lines,
    }


def last_json_result(lines: list[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and "system" in obj:
                return obj
    return None


# --------------------------------------------------------------------------------------------
# the three systems
# --------------------------------------------------------------------------------------------


def run_script_system(name: str, script: str, extra: list[str], workdir: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path("benchmarks") / script), *extra]
    child = run_child(name, cmd, workdir / "logs" / f"{name}.log")
    result = last_json_result(child.pop("stdout_lines")) or {"system": name}
    self_rss = result.pop("peak_rss_mib", None)
    result.pop("machine", None)  # the same machine as the header
    result.update(child)
    result["peak_rss_mib_self_reported"] = self_rss
    return result


def medcoder_epochs_run(root: Path, run_id: str) -> int | None:
    """Epochs actually trained (early stopping may stop before num_train_epochs)."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
        history = client.get_metric_history(run_id, "epoch_dev_map")
        return len({m.step for m in history}) or None
    except Exception as exc:  # noqa: BLE001 - optional detail; the table still has wall time
        print(f"[medcoder] could not read epochs from MLflow: {exc}", flush=True)
        return None


def run_medcoder(overrides: list[str], workdir: Path, data_files: dict[str, Path] | None, n_train: int) -> dict[str, Any]:
    root = workdir / "medcoder"
    cmd = [sys.executable, "scripts/train.py", "experiment=quickstart", f"paths.root_dir={root}"]
    if data_files:
        cmd += ["data=jsonl", *(f"data.{split}={path}" for split, path in data_files.items())]
    cmd += overrides
    child = run_child("medcoder", cmd, workdir / "logs" / "medcoder.log")
    lines = child.pop("stdout_lines")
    run_id = next((ln.split("=", 1)[1].strip() for ln in reversed(lines) if ln.startswith("run_id=")), None)
    result: dict[str, Any] = {"system": "medcoder quickstart", "run_id": run_id, "overrides": overrides}
    metrics_path = root / "outputs" / "runs" / str(run_id) / "metrics.json"
    if run_id and metrics_path.is_file():
        result.update(json.loads(metrics_path.read_text()))
        epochs = medcoder_epochs_run(root, run_id)
        result["epochs"] = epochs
        result["n_train_notes"] = n_train
        seconds = result.get("train_wall_seconds")
        if epochs and seconds:
            # whole run (data, encoding to cached states, epochs, evaluation) -- see README
            result["train_notes_per_second"] = n_train * epochs / seconds
    result.update(child)
    return result


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if key.endswith(("map", "f1", "p_at_8")):
        return f"{value:.4f}"
    if key == "train_notes_per_second":
        return f"{value:.2f}"
    return f"{value:.0f}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = [
        f"# medcoder benchmark, {report['date']} on {m['host']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- git commit: `{report['git_commit']}`",
        f"- machine: {m['nproc']} CPUs (affinity {m.get('affinity_cpus')}), {m['cpu_model']}, "
        f"{m.get('mem_total_gib', '?')} GiB RAM; torch {m.get('torch')} with {m.get('torch_threads')} threads "
        f"({m.get('torch_interop_threads')} inter-op); transformers {m.get('transformers')}, "
        f"scikit-learn {m.get('sklearn')}; Python {m['python']}; {m['platform']}",
        "- data: CodiEsp-D English, {train} train / {dev} dev / {test} test notes".format(**report["n_notes"])
        + (f" (**first {report['limit_docs']} of each split: smoke check, not comparable**)"
           if report["limit_docs"] else ""),
        "",
        "| " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |",
        "|" + "|".join("---" if key == "system" else "---:" for _, key in TABLE_COLUMNS) + "|",
    ]
    for r in report["results"]:
        row = dict(r)
        if r.get("returncode"):
            row["system"] = f"{r['system']} (FAILED rc={r['returncode']}, see log)"
        out.append("| " + " | ".join(_fmt(row.get(key), key) for _, key in TABLE_COLUMNS) + " |")
    out += [
        "",
        "Test metrics use medcoder's `compute_all` with the label space of the training notes and a "
        "global threshold tuned on dev for micro-F1; MAP is CodiEsp's (out-of-space gold codes count). "
        "*train wall s*: TF-IDF = C grid search (+ refit), HF = `Trainer.train()` incl. per-epoch dev "
        "eval, medcoder = its `train_wall_seconds` (whole run: data, encoding, epochs, evaluation). "
        "*notes/s* = training notes x epochs / train wall s (TF-IDF: notes / final fit s). "
        "*peak RSS*: `os.wait4` of each system's own process.",
        "",
        "## Details",
        "",
    ]
    for r in report["results"]:
        keep = {k: v for k, v in r.items() if not k.startswith(("dev_", "test_", "train_label"))}
        out += [f"### {r['system']}", "", "```json", json.dumps(keep, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(out)


def result_paths(results_dir: Path, date: str, host: str, limit_docs: int | None) -> tuple[Path, Path]:
    stem = f"{date}-{host}" + (f"-limit{limit_docs}" if limit_docs else "")
    md = results_dir / f"{stem}.md"
    if md.exists():  # never overwrite an earlier run of the same day
        stem += dt.datetime.now().strftime("-%H%M%S")
        md = results_dir / f"{stem}.md"
    return md, md.with_suffix(".json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-docs", type=int, default=None, help="first N notes of each split (smoke checks)")
    parser.add_argument("--skip-tfidf", action="store_true")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-medcoder", action="store_true")
    parser.add_argument("--tfidf-train-on", nargs="+", choices=("train", "train+dev"), default=["train"],
                        help="one TF-IDF row per value (medcoder trains on train, dev for early stopping)")
    parser.add_argument("--tfidf-c-grid", type=float, nargs="+", default=None)
    parser.add_argument("--hf-epochs", type=float, default=3.0)
    parser.add_argument("--hf-max-length", type=int, default=512)
    parser.add_argument("--medcoder-override", action="append", default=[], metavar="KEY=VALUE",
                        help="Hydra override passed to scripts/train.py (repeatable)")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where logs, medcoder's MLflow store and outputs go (default: a temp dir)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temp work dir")
    args = parser.parse_args()
    set_offline_env()

    command = shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medcoder_bench_"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {workdir}", flush=True)

    splits = load_splits(args.limit_docs)
    n_train = len(splits["train"])
    limit = ["--limit-docs", str(args.limit_docs)] if args.limit_docs else []

    results: list[dict[str, Any]] = []
    if not args.skip_tfidf:
        for train_on in args.tfidf_train_on:
            extra = ["--train-on", train_on, *limit]
            if args.tfidf_c_grid:
                extra += ["--c-grid", *map(str, args.tfidf_c_grid)]
            name = "tfidf" if train_on == "train" else "tfidf-train+dev"
            results.append(run_script_system(name, "tfidf_baseline.py", extra, workdir))
    if not args.skip_hf:
        extra = ["--epochs", str(args.hf_epochs), "--max-length", str(args.hf_max_length), *limit]
        results.append(run_script_system("hf", "hf_baseline.py", extra, workdir))
    if not args.skip_medcoder:
        data_files = write_jsonl_splits(splits, workdir / "data") if args.limit_docs else None
        results.append(run_medcoder(args.medcoder_override, workdir, data_files, n_train))

    now = dt.datetime.now()
    info = machine_info()
    report = {
        "date": now.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "git_commit": git_commit(),
        "limit_docs": args.limit_docs,
        "n_notes": {name: len(ds) for name, ds in splits.items()},
        "machine": info,
        "workdir": str(workdir),
        "results": results,
    }
    md_path, json_path = result_paths(args.results_dir, now.strftime("%Y-%m-%d"), info["host"], args.limit_docs)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(report) + "\n", encoding="utf-8")
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    print("\n" + "\n".join(line for line in markdown(report).splitlines() if line.startswith("|")))
    print(f"\nwrote {md_path} and {json_path}")
    if args.workdir is None and not args.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs and medcoder outputs kept in {workdir}")
    failed = [r["system"] for r in results if r.get("returncode")]
    if failed:
        print(f"FAILED: {', '.join(failed)} (logs: {workdir / 'logs'})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
