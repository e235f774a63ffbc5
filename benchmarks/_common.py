"""Helpers shared by the benchmark scripts (data, machine description, memory, JSON output).

The benchmarks are scripts run by hand, not part of the package: they import ``medcoder`` for
data, label space and metrics so every system is scored by exactly the same code.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import socket
import sys
from pathlib import Path
from typing import Any

import datasets

SPLITS = ("train", "dev", "test")
ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The commit the benchmark ran on, for its report.

    Why the package's :func:`medcoder.tracking.mlflow_utils.git_sha` and not a copy: one definition
    of "the code that ran" (full sha, ``+dirty`` when tracked files are modified), so a report
    and the MLflow runs it made carry the same value as their ``medcoder.git_sha`` tag. Imported
    here, not at module level: it loads MLflow and transformers (seconds), which scripts that
    never call this need not pay.
    """
    from medcoder.tracking.mlflow_utils import git_sha

    return git_sha(ROOT)


def set_offline_env() -> None:
    """Benchmarks never touch the network (the encoder and corpus are local copies)."""
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("MLFLOW_DISABLE_TELEMETRY", "true"),
        ("HF_HUB_DISABLE_TELEMETRY", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(key, value)


def load_splits(limit_docs: int | None = None, *, language: str = "en", code_type: str = "D") -> datasets.DatasetDict:
    """CodiEsp (local copy, never downloaded) as train/dev/test; ``limit_docs`` keeps the first
    N notes of each split (deterministic, for smoke checks)."""
    from medcoder.data import load_codiesp, resolve_codiesp_root

    splits = load_codiesp(resolve_codiesp_root(download=False), language=language, code_type=code_type)
    return limit_splits(splits, limit_docs)


def limit_splits(splits: datasets.DatasetDict, limit_docs: int | None) -> datasets.DatasetDict:
    if not limit_docs:
        return splits
    return datasets.DatasetDict(
        {name: ds.select(range(min(limit_docs, len(ds)))) for name, ds in splits.items()}
    )


def write_jsonl_splits(splits: datasets.DatasetDict, out_dir: Path) -> dict[str, Path]:
    """Each split as ``<out_dir>/<split>.jsonl`` with ``id``, ``text``, ``codes`` (medcoder's
    ``data=jsonl`` format), so another process can train on exactly these notes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in SPLITS:
        path = out_dir / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for row in splits[name]:
                fh.write(json.dumps({"id": row["id"], "text": row["text"], "codes": list(row["codes"])}) + "\n")
        paths[name] = path
    return paths


def peak_rss_mib() -> float:
    """Peak resident set size of this process and (max of) its reaped children, in MiB.

    Linux reports ``ru_maxrss`` in KiB. Children matter where a library forks workers.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(*, with_torch: bool = True) -> dict[str, Any]:
    """Host, CPUs, CPU model, RAM, library versions and torch threads. ``with_torch=False`` skips
    importing torch (~180 MiB RSS) in processes that do not use it, e.g. the TF-IDF baseline."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    try:
        mem_kib = next(
            int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
        )
        info["mem_total_gib"] = round(mem_kib / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        if not with_torch and "torch" not in sys.modules:
            raise ImportError("torch not wanted here")
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    except ImportError:  # pragma: no cover - torch is a medcoder dependency
        pass
    for lib in ("transformers", "sklearn"):
        with contextlib.suppress(ImportError):
            info[lib] = __import__(lib).__version__
    return info


def emit_result(result: dict[str, Any], output: str | Path | None = None) -> None:
    """Print the result as one JSON line on stdout (``run_all.py`` reads the last JSON line that
    has a ``system`` key) and optionally save it, indented, to ``output``."""
    line = json.dumps(result, sort_keys=True, default=float)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(result, indent=2, sort_keys=True, default=float) + "\n")
    print(line, flush=True)
