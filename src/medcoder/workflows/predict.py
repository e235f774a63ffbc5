"""``scripts/predict.py``: batch prediction from a Hydra config.

Reads the config, checks every setting and output path, scans the input once (parses every note,
counts them; nothing kept in memory) before loading the bundle (a ``models:/`` URI needs the
tracking store), then streams the notes block by block into the three outputs through
:mod:`medcoder.inference.batch`, resuming a killed run of the same command (``resume``).

Outputs are also kept out of the MLflow artifact stores this config's tracking store uses
(:func:`medcoder.inference.batch.protect.artifact_stores`: read from the file system, the SQLite
store opened read-only), out of every bundle and MLflow model and out of the bundle cache: a file
written into the registry's bundle broke every later load of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcoder.data.tabular import check_column_roles
from medcoder.errors import ConfigError
from medcoder.inference import Coder
from medcoder.inference.batch import (
    GRANULARITIES,
    REMOTE_BUNDLE_PREFIXES,
    BatchSummary,
    NoteSource,
    OutputPaths,
    check_bool,
    check_outputs,
    check_paths,
    check_positive,
    predict_notes,
)
from medcoder.inference.batch.protect import Protected, artifact_stores
from medcoder.tracking import TrackingSettings, setup_experiment, tracking_uri
from medcoder.workflows.factories import build_tracking

__all__ = ["BatchResult", "check_settings", "predict_from_config", "protected_stores"]


def check_settings(cfg: Any) -> None:
    """Every non-path predict setting, checked before anything is read or loaded."""
    check_positive("batch_size", cfg.batch_size)
    check_positive("block_size", cfg.block_size)
    if cfg.evidence_top_k is not None:  # null: the bundle's certified setting
        check_positive("evidence_top_k", cfg.evidence_top_k, low=0)
    check_positive("max_note_chars", cfg.max_note_chars)
    if cfg.granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={cfg.granularity!r} is not valid", hint="use note or code")
    check_bool("audit.include_text", cfg.audit.include_text)
    check_bool("resume", cfg.resume)
    check_bool("progress", cfg.progress)
    for key in ("id_column", "text_column"):
        value = cfg[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}={value!r} is not valid", hint="the column name in the input file")
    check_column_roles(cfg.id_column, cfg.text_column)
    for key in ("bundle", "input", "output"):
        if not isinstance(cfg[key], str) or not cfg[key].strip():
            raise ConfigError(f"{key}={cfg[key]!r} is not valid", hint=f"set {key}=<path> on the command line")


def protected_stores(tracking: TrackingSettings) -> list[Protected]:
    """The MLflow artifact stores of this config's tracking store, where no output may go."""
    return artifact_stores(tracking_uri(tracking), tracking.root_dir, tracking.artifact_dir)


@dataclass
class BatchResult:
    output: Path
    audit: Path
    summary_path: Path
    summary: BatchSummary
    bundle_id: str


def predict_from_config(cfg: Any) -> BatchResult:
    """``scripts/predict.py``: check every setting and output path, scan the input (streamed,
    cheap next to predicting) before loading the bundle, then predict into the three outputs."""
    check_settings(cfg)
    tracking = build_tracking(cfg)
    protected = protected_stores(tracking)
    outputs = OutputPaths.beside(cfg.output, cfg.audit.path, cfg.summary_path)
    fmt = check_outputs(outputs.predictions, outputs.audit, cfg.granularity)
    check_paths(outputs, cfg.input, cfg.bundle, protected=protected)
    notes = NoteSource(cfg.input, id_column=cfg.id_column, text_column=cfg.text_column,
                       max_note_chars=cfg.max_note_chars, parquet_batch_rows=cfg.block_size).scan()
    if str(cfg.bundle).startswith(REMOTE_BUNDLE_PREFIXES):
        setup_experiment(tracking)
    coder = Coder.load(cfg.bundle)
    if coder.bundle_dir is not None:  # a models:/ bundle is only known once downloaded
        check_paths(outputs, cfg.input, coder.bundle_dir, protected=protected_stores(tracking))
    summary = predict_notes(
        coder, notes, outputs, fmt=fmt, granularity=cfg.granularity,
        include_text=bool(cfg.audit.include_text), batch_size=cfg.batch_size, block_size=cfg.block_size,
        evidence_top_k=cfg.evidence_top_k, max_note_chars=cfg.max_note_chars, progress=cfg.progress,
        resume=cfg.resume,
    )
    return BatchResult(outputs.predictions, outputs.audit, outputs.summary, summary, coder.bundle_id)
