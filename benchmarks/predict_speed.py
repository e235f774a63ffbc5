"""Inference speed on CPU: ``Coder.predict`` (fp32 and int8) against a plain HF ``pipeline`` over the same model.

    python benchmarks/predict_speed.py --bundle outputs/bundles/<run_id> \\
        --bundle-int8 outputs/bundles/<run_id>-int8 --repeats 3                    # 100 CodiEsp test notes
    python benchmarks/predict_speed.py --bundle DIR --notes-jsonl notes.jsonl --n-notes 4 \\
        --in-process --out /tmp/predict-speed                                      # smoke check

Systems, each run in its own fresh subprocess (peak RSS of exactly that process, from
``os.wait4`` in ``run_all.py``'s small launcher; imports and model loading included):

* ``coder``: ``Coder.load(bundle).predict(texts, ids)``: every chunk up to ``max_chunks``,
  calibration, routing and evidence spans (the production path);
* ``coder-no-evidence``: the same with ``evidence_top_k=0`` (no label-attention top-k, no offsets);
* ``coder-int8``: ``Coder.predict`` on the bundle exported with ``scripts/export.py quantize=int8``
  (``--bundle-int8``: manifest ``quantization: dynamic-int8``, its own refitted calibration); without
  ``--bundle-int8``, the fp32 bundle quantised in process (same network cost, fp32 calibration);
* ``coder-int8-no-evidence``: ``coder-int8`` with ``evidence_top_k=0``;
* ``coder-onnx-int8`` / ``coder-onnx-int8-no-evidence``: the same with the ``quantize=onnx-int8`` bundle
  (``--bundle-onnx-int8``; without it the fp32 bundle quantised in process): the encoder as an int8
  ONNX Runtime graph, the notes of a batch encoded in parallel, one thread each;
* ``hf-pipeline``: ``transformers.pipeline("text-classification", model=<the fp32 bundle's
  MedCoderForICDCoding>, tokenizer=..., top_k=None, function_to_apply="sigmoid",
  truncation=True, max_length=<chunk_size>)``. The model accepts 2-D ``input_ids`` as one chunk per
  note, so the pipeline reads **only the first chunk** of each note and does no calibration,
  routing or evidence: a lower bound on the cost of running the network, not the same output.

Each child loads the notes and the model, runs one warm-up call on the first ``--batch-size``
notes, then times one call over all notes (``time.perf_counter``; CPU seconds from
``time.process_time``) with ``torch.set_num_threads(--threads)``. With ``--repeats N`` the systems
run in N interleaved rounds (the order rotated each round), so a load that comes and goes on a
shared CPU hits every system alike; each system's row is its median round, and "x pipeline" is the
median over rounds of its chunks/s divided by the pipeline's chunks/s *in the same round*. On a CPU
shared with other jobs prefer ``--threads 1``: two threads on a 2-core machine that runs something
else wait on each other at every parallel region, which says more about the other job than about
the system. Notes are
CodiEsp-D English test notes (the package's loader, local copy only) or ``--notes-jsonl``
(``id``/``text`` rows). Writes ``<out>.md`` and ``<out>.json`` (default
``benchmarks/results/<date>-predict-speed``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit_result, machine_info, peak_rss_mib, set_offline_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYSTEMS = ("coder", "coder-no-evidence", "coder-int8", "coder-int8-no-evidence", "coder-onnx-int8",
           "coder-onnx-int8-no-evidence", "hf-pipeline")
BASELINE = "hf-pipeline"
DESCRIPTIONS = {
    "coder": "`Coder.predict` (all chunks, calibration, routing, evidence)",
    "coder-no-evidence": "`Coder.predict(..., evidence_top_k=0)`",
    "coder-int8": "`Coder.predict` on the `quantize=int8` bundle (dynamic int8 encoder; all chunks, calibration, "
                  "routing, evidence)",
    "coder-int8-no-evidence": "`coder-int8` with `evidence_top_k=0`",
    "coder-onnx-int8": "`Coder.predict` on the `quantize=onnx-int8` bundle (int8 ONNX Runtime encoder, notes encoded "
                       "in parallel; all chunks, calibration, routing, evidence)",
    "coder-onnx-int8-no-evidence": "`coder-onnx-int8` with `evidence_top_k=0`",
    "hf-pipeline": "HF `pipeline` on the same fp32 model: **first chunk only, no calibration/routing/evidence**",
}
#: system prefix -> (the quantisation it runs, the argparse attribute of its bundle)
QUANTIZED = {"coder-onnx-int8": ("onnx-int8", "bundle_onnx_int8"), "coder-int8": ("dynamic-int8", "bundle_int8")}


def quantized_system(system: str) -> tuple[str, str] | None:
    """``(quantization, bundle attribute)`` of a quantised system, None for fp32 ones."""
    return next((v for prefix, v in QUANTIZED.items() if system.startswith(prefix)), None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="bundle directory written by scripts/export.py")
    parser.add_argument("--bundle-int8", default=None,
                        help="the same run exported with quantize=int8 (coder-int8*); default: --bundle quantised "
                             "in process")
    parser.add_argument("--bundle-onnx-int8", default=None,
                        help="the same run exported with quantize=onnx-int8 (coder-onnx-int8*); default: --bundle "
                             "quantised in process")
    parser.add_argument("--n-notes", type=int, default=100, help="first N notes (default 100)")
    parser.add_argument("--notes-jsonl", default=None,
                        help="notes from this JSONL file (id/text[/codes]) instead of CodiEsp-D English test")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--out", default=None,
                        help="output path without suffix (default benchmarks/results/<date>-predict-speed)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved rounds of all systems (median reported; default 1)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the systems one after another in this process (smoke checks: no subprocess "
                             "start-up, but peak RSS is then this process's running maximum, not per system)")
    parser.add_argument("--child", choices=SYSTEMS, default=None, help=argparse.SUPPRESS)  # internal
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# one system, in a child process
# --------------------------------------------------------------------------------------------


def load_notes(n_notes: int, notes_jsonl: str | None) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` of the first ``n_notes`` notes, read with medcoder's own loaders."""
    from medcoder.data import load_corpus

    if notes_jsonl:
        split = load_corpus({"format": "jsonl", "train": notes_jsonl})["train"]  # a lone file is 'train'
    else:
        split = load_corpus({"format": "codiesp", "root": None, "language": "en", "code_type": "D",
                             "splits": ["test"], "download": False})["test"]
    split = split.select(range(min(n_notes, len(split))))
    return list(split["id"]), list(split["text"])


def run_system(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Load, warm up once, time one call over all notes; the result as a JSON-ready dict."""
    import torch

    torch.set_num_threads(args.threads)
    from medcoder.data.chunking import chunk_texts
    from medcoder.inference.coder import Coder

    ids, texts = load_notes(args.n_notes, args.notes_jsonl)
    started = time.perf_counter()
    quantized = quantized_system(system)
    own_bundle = getattr(args, quantized[1]) if quantized else None
    coder = Coder.load(own_bundle or args.bundle)
    if quantized and coder.quantization != quantized[0]:
        if own_bundle:
            raise SystemExit(f"{own_bundle}: the manifest's quantization is {coder.quantization!r}, not "
                             f"{quantized[0]!r} (export it with scripts/export.py quantize=...)")
        coder.scorer.neural.quantize(quantized[0])  # the fp32 bundle's calibration: same cost, not its output
    cfg = coder.model.config
    if system == "hf-pipeline":
        from transformers import pipeline

        pipe = pipeline("text-classification", model=coder.model, tokenizer=coder.tokenizer, device="cpu",
                        top_k=None, function_to_apply="sigmoid", truncation=True, max_length=cfg.chunk_size)

        def call(t: list[str], i: list[str]) -> Any:
            return pipe(t, batch_size=args.batch_size)
    else:
        top_k = 0 if system.endswith("no-evidence") else 3

        def call(t: list[str], i: list[str]) -> Any:
            return coder.predict(t, i, batch_size=args.batch_size, progress=False, evidence_top_k=top_k)
    load_seconds = time.perf_counter() - started

    call(texts[: args.batch_size], ids[: args.batch_size])  # warm-up
    cpu_started, started = time.process_time(), time.perf_counter()
    out = call(texts, ids)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    assert len(out) == len(texts)

    chunks = chunk_texts(texts, coder.tokenizer, chunk_size=cfg.chunk_size, max_chunks=cfg.max_chunks)
    n_chunks = sum(len(c) for c in chunks["input_ids"])
    chunks_read = len(texts) if system == "hf-pipeline" else n_chunks
    return {
        "system": system,
        "description": DESCRIPTIONS[system],
        "n_notes": len(texts),
        "seconds": seconds,
        "notes_per_second": len(texts) / seconds,
        "chunks_read": chunks_read,
        "chunks_per_second": chunks_read / seconds,
        "cpu_seconds": cpu_seconds,
        "cpu_ms_per_chunk": 1000.0 * cpu_seconds / chunks_read,
        "quantization": coder.quantization,
        "n_chunks_all": n_chunks,
        "notes_truncated": int(sum(chunks["truncated"])),
        "chunk_size": cfg.chunk_size,
        "max_chunks": cfg.max_chunks,
        "n_codes": cfg.num_labels,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "load_seconds": load_seconds,
        "bundle_id": coder.bundle_id,
        "peak_rss_mib_self": peak_rss_mib(),
    }


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarize(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per system (first-seen order): its median round by chunks/s, every round's chunks/s,
    and the median over rounds of its chunks/s relative to the pipeline's in the same round."""
    by_system: dict[str, list[dict[str, Any]]] = {}
    for results in rounds:
        for r in results:
            by_system.setdefault(r["system"], []).append(r)
    ratios: dict[str, list[float]] = {}
    for results in rounds:
        base = next((r for r in results if r["system"] == BASELINE and not r.get("returncode")), None)
        for r in results:
            if base is not None and not r.get("returncode") and r.get("chunks_per_second"):
                ratios.setdefault(r["system"], []).append(r["chunks_per_second"] / base["chunks_per_second"])
    rows = []
    for system, runs in by_system.items():
        ok = [r for r in runs if not r.get("returncode")]
        if not ok:
            rows.append({**runs[-1], "rounds": len(runs)})
            continue
        ok.sort(key=lambda r: r["chunks_per_second"])
        row = dict(ok[(len(ok) - 1) // 2])  # the median round (lower median for an even count)
        row["rounds"] = len(runs)
        row["chunks_per_second_rounds"] = [r.get("chunks_per_second") for r in runs]
        row["x_pipeline_per_chunk"] = _median(ratios.get(system, []))
        row["x_pipeline_per_chunk_rounds"] = ratios.get(system, [])
        rows.append(row)
    return rows


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    first = next((r for r in report["results"] if not r.get("returncode")), {})
    repeats = report.get("repeats", 1)
    out = [
        f"# Inference speed: `Coder.predict` vs a plain HF pipeline, {report['date']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- git commit: `{report['git_commit']}`; bundle `{first.get('bundle_id', '?')}` ({report['bundle']})",
    ]
    for prefix, (_, attr) in QUANTIZED.items():
        row = next((r for r in report["results"] if r["system"].startswith(prefix) and not r.get("returncode")), {})
        if not row:
            continue
        source = (f"bundle `{row.get('bundle_id')}` ({report.get(attr)}, manifest quantization "
                  f"`{row.get('quantization')}`)" if report.get(attr)
                  else "the fp32 bundle quantised in process (fp32 calibration: same cost, not the quantised bundle's output)")
        out.append(f"- {prefix}: {source}")
    out += [
        f"- machine: {m['nproc']} CPUs (affinity {m.get('affinity_cpus')}), {m['cpu_model']}, "
        f"{m.get('mem_total_gib', '?')} GiB RAM, no GPU; torch {m.get('torch')}, "
        f"transformers {m.get('transformers')}; Python {m['python']}",
        f"- notes: {report['notes']}; {first.get('n_notes', '?')} notes = {first.get('n_chunks_all', '?')} chunks of "
        f"{first.get('chunk_size', '?')} tokens (max {first.get('max_chunks', '?')} per note, "
        f"{first.get('notes_truncated', '?')} notes truncated); {first.get('n_codes', '?')} codes; "
        f"batch size {report['batch_size']}, {report['threads']} torch threads; one warm-up call, then one timed run "
        f"per system and round; {repeats} interleaved round(s), median shown",
        "",
        "| system | notes/s | chunks read/s | x pipeline per chunk | chunks/s each round | CPU ms/chunk "
        "| timed s | peak RSS MiB | what it does |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        name = r["system"] if not r.get("returncode") else f"{r['system']} (FAILED rc={r['returncode']})"
        each = ", ".join(_num(v, ".1f") for v in r.get("chunks_per_second_rounds", []))
        out.append(f"| {name} | {_num(r.get('notes_per_second'), '.2f')} | {_num(r.get('chunks_per_second'), '.1f')} "
                   f"| {_num(r.get('x_pipeline_per_chunk'), '.2f')} | {each} | {_num(r.get('cpu_ms_per_chunk'), '.0f')} "
                   f"| {_num(r.get('seconds'), '.1f')} | {_num(r.get('peak_rss_mib'), '.0f')} "
                   f"| {DESCRIPTIONS[r['system']]} |")
    if report.get("in_process"):
        out += ["", "**--in-process (smoke check): peak RSS is the running maximum of one process, not per system.**"]
    out += [
        "",
        "*peak RSS*: `ru_maxrss` of the system's own process (`os.wait4`), imports, model and notes included. "
        "*chunks read/s*: `Coder.predict` encodes every chunk up to `max_chunks`; the pipeline encodes one "
        "(the first `chunk_size` tokens of each note) and returns uncalibrated sigmoids of every code, unrouted. "
        "*x pipeline per chunk*: median over rounds of chunks/s divided by the pipeline's in the same round. "
        "*CPU ms/chunk*: CPU time (all threads) of the timed call per chunk read, less sensitive than wall time "
        "to other jobs on a shared CPU.",
        "",
    ]
    return "\n".join(out)


def output_paths(out: str | None, date: str) -> tuple[Path, Path]:
    stem = Path(out) if out else HERE / "results" / f"{date}-predict-speed"
    if stem.suffix in (".md", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".json")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_offline_env()
    if args.child:
        emit_result(run_system(args.child, args))
        return {}
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")

    from run_all import git_commit, last_json_result, run_child

    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/predict_speed.py", *argv])
    child_args = ["--bundle", str(Path(args.bundle).resolve()), "--n-notes", str(args.n_notes),
                  "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    for _, attr in QUANTIZED.values():
        if getattr(args, attr):
            child_args += ["--" + attr.replace("_", "-"), str(Path(getattr(args, attr)).resolve())]
    if args.notes_jsonl:
        child_args += ["--notes-jsonl", str(Path(args.notes_jsonl).resolve())]
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="predict-speed-") as logs:
        for k in range(args.repeats):
            order = args.systems[k % len(args.systems):] + args.systems[: k % len(args.systems)]
            results = []
            for system in order:
                if args.in_process:
                    result = run_system(system, args)
                    results.append({**result, "peak_rss_mib": result["peak_rss_mib_self"], "returncode": 0})
                    continue
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", system, *child_args]
                child = run_child(f"{system} #{k + 1}", cmd, Path(logs) / f"{system}-{k + 1}.log")
                result = last_json_result(child.pop("stdout_lines")) or {"system": system}
                result.update(child)
                results.append(result)
            rounds.append(results)
    summary = summarize(rounds)
    summary.sort(key=lambda r: args.systems.index(r["system"]))
    now = dt.datetime.now()
    report = {
        "date": now.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "git_commit": git_commit(),
        "bundle": str(args.bundle),
        **{attr: str(getattr(args, attr)) if getattr(args, attr) else None for _, attr in QUANTIZED.values()},
        "notes": args.notes_jsonl or "CodiEsp-D English test split",
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "in_process": args.in_process,
        "machine": machine_info(),
        "results": summary,
        "rounds": rounds,
    }
    md_path, json_path = output_paths(args.out, now.strftime("%Y-%m-%d"))
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(report))
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    print(markdown(report))
    print(f"wrote {md_path} and {json_path}")
    failed = sorted({r["system"] for results in rounds for r in results if r.get("returncode")})
    if failed:
        raise SystemExit(f"failed: {failed}")
    return report


if __name__ == "__main__":
    main()
