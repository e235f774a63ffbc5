"""Batch prediction: notes from a folder/JSONL/CSV -> predictions file + audit log + summary.

What ``scripts/predict.py`` calls. The whole input is read and validated before anything is
written, and both output files are written to temp files and renamed only when every note has
been predicted: a bad input or an interrupted run leaves no partial predictions behind.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from medcoder.atomic import atomic_open, atomic_write_text
from medcoder.data.tabular import iter_unlabeled
from medcoder.errors import ConfigError, DataError
from medcoder.inference.coder import Coder
from medcoder.inference.prediction import AUDIT_FIELDS, DocumentPrediction
from medcoder.tracking import setup_experiment

INPUT_SUFFIXES = {".jsonl": "jsonl", ".csv": "csv"}
OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv"}
GRANULARITIES = ("note", "code")


@dataclass
class BatchSummary:
    """What the run did, for the console and for ops dashboards (counts only, no text)."""

    notes: int = 0
    codes: int = 0
    auto_accepted: int = 0
    notes_fully_auto: int = 0
    empty_notes: int = 0
    truncated_notes: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    wall_seconds: float = 0.0

    @property
    def share_auto_accepted(self) -> float:
        return self.auto_accepted / self.codes if self.codes else float("nan")

    @property
    def share_notes_fully_auto(self) -> float:
        return self.notes_fully_auto / self.notes if self.notes else float("nan")

    def add(self, pred: DocumentPrediction) -> None:
        self.notes += 1
        self.codes += len(pred.codes)
        self.auto_accepted += len(pred.auto_accepted)
        self.notes_fully_auto += pred.document_decision == "auto_accept"
        self.empty_notes += "empty_note" in pred.document_reasons
        self.truncated_notes += pred.truncated
        self.reasons.update(r for c in pred.codes for r in c.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": dict(self.reasons), "share_auto_accepted": self.share_auto_accepted,
                "share_notes_fully_auto": self.share_notes_fully_auto}

    def line(self) -> str:
        return (f"{self.notes} notes, {self.codes} codes predicted, "
                f"{self.share_auto_accepted:.1%} of codes auto-accepted, "
                f"{self.notes_fully_auto} notes ({self.share_notes_fully_auto:.1%}) fully auto-coded, "
                f"{self.empty_notes} empty, {self.truncated_notes} truncated; {self.wall_seconds:.1f} s")


def read_notes(path: str | Path, *, id_column: str = "id", text_column: str = "text") -> list[tuple[str, str]]:
    """``(id, text)`` pairs from a folder of ``.txt`` files (id = file name stem), a ``.jsonl``
    or a ``.csv`` file. Raises ``DataError`` naming the file (and line) on anything unreadable."""
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(p.glob("*.txt"))
        if not files:
            raise DataError(f"input={p}: no .txt files in this folder", hint="one note per <id>.txt file")
        notes = []
        for f in files:
            try:
                notes.append((f.stem, f.read_text(encoding="utf-8-sig")))
            except UnicodeDecodeError as exc:
                raise DataError(f"{f}: not valid UTF-8 (byte {exc.start})", hint="re-encode the file as UTF-8") from exc
        return notes
    if not p.is_file():
        raise DataError(f"input={p}: no such file or folder", hint="a .txt folder, a .jsonl or a .csv file")
    fmt = INPUT_SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        raise DataError(f"input={p}: unsupported file type {p.suffix!r}",
                        hint=f"use a folder of .txt files or one of {sorted(INPUT_SUFFIXES)}")
    return [(i, t) for _, i, t in iter_unlabeled(p, format=fmt, id_column=id_column, text_column=text_column)]


def _rows(pred: DocumentPrediction, granularity: str) -> Iterator[dict[str, Any]]:
    audit = {k: getattr(pred, k) for k in AUDIT_FIELDS}
    if granularity == "note":
        yield pred.to_dict()
        return
    doc = {"document_decision": pred.document_decision, "document_reasons": pred.document_reasons}
    if not pred.codes:  # every note appears in the output, also one with nothing predicted
        yield {"id": pred.id, "code": "", "description": "", "probability": None, "decision": "",
               "reasons": [], "evidence": [], **doc, **audit}
    for c in pred.codes:
        yield {"id": pred.id, **asdict(c), **doc, **audit}


def _csv_cell(value: Any) -> Any:
    """Lists of reason names become ``a;b``; nested structures (codes, evidence) become JSON."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ";".join(value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value


class _Writer:
    def __init__(self, fh: IO[str], fmt: str) -> None:
        self.fh, self.fmt, self.csv = fh, fmt, None

    def write(self, row: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        if self.csv is None:
            self.csv = csv.DictWriter(self.fh, fieldnames=list(row))
            self.csv.writeheader()
        self.csv.writerow({k: _csv_cell(v) for k, v in row.items()})


def check_outputs(output_path: Path, audit_path: Path, granularity: str) -> str:
    """The output format, after checking every output setting (cheap: run before loading a model)."""
    fmt = OUTPUT_FORMATS.get(output_path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"output={output_path}: unsupported file type {output_path.suffix!r}",
                          hint="use .jsonl or .csv")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={granularity!r} is not valid", hint="use note or code")
    if output_path.resolve() == audit_path.resolve():
        raise ConfigError(f"audit.path={audit_path} is the predictions file", hint="give the audit log its own path")
    return fmt


def predict_file(
    coder: Coder,
    input_path: str | Path,
    output_path: str | Path,
    audit_path: str | Path,
    *,
    granularity: str = "note",
    include_text: bool = False,
    id_column: str = "id",
    text_column: str = "text",
    **predict_kw: Any,
) -> BatchSummary:
    """Predict every note of ``input_path``; write predictions and the audit log atomically."""
    out, audit = Path(output_path), Path(audit_path)
    fmt = check_outputs(out, audit, granularity)
    notes = read_notes(input_path, id_column=id_column, text_column=text_column)
    return predict_notes(coder, notes, out, audit, fmt=fmt, granularity=granularity, include_text=include_text,
                         **predict_kw)


def predict_notes(
    coder: Coder,
    notes: list[tuple[str, str]],
    out: Path,
    audit: Path,
    *,
    fmt: str,
    granularity: str,
    include_text: bool = False,
    batch_size: int = 8,
    block_size: int = 256,
    evidence_top_k: int = 3,
    progress: bool = True,
) -> BatchSummary:
    """Predict already-read ``(id, text)`` notes into ``out`` + ``audit`` (temp files, renamed at the end)."""
    summary = BatchSummary()
    started = time.perf_counter()
    with atomic_open(out, "w", encoding="utf-8", newline="") as fh_out, \
            atomic_open(audit, "w", encoding="utf-8") as fh_audit:
        writer = _Writer(fh_out, fmt)
        # Blocks bound memory on large inputs; Coder.predict sorts each block by length.
        for start in range(0, len(notes), block_size):
            block = notes[start : start + block_size]
            preds = coder.predict([t for _, t in block], [i for i, _ in block], batch_size=batch_size,
                                  evidence_top_k=evidence_top_k, progress=progress and len(notes) > block_size)
            for (_, text), pred in zip(block, preds, strict=True):
                for row in _rows(pred, granularity):
                    writer.write(row)
                record = pred.audit_record(text if include_text else None)
                fh_audit.write(json.dumps(record, ensure_ascii=False) + "\n")
                summary.add(pred)
    summary.wall_seconds = time.perf_counter() - started
    return summary


@dataclass
class BatchResult:
    output: Path
    audit: Path
    summary_path: Path
    summary: BatchSummary
    bundle_id: str


def predict_from_config(cfg: Any) -> BatchResult:
    """``scripts/predict.py``: check settings and read the input (both cheap) before loading the
    bundle, predict, write the summary."""
    output = Path(cfg.output).expanduser()
    stem = output.with_suffix("")
    audit = Path(cfg.audit.path).expanduser() if cfg.audit.path else stem.with_name(stem.name + ".audit.jsonl")
    summary_path = (Path(cfg.summary_path).expanduser() if cfg.summary_path
                    else stem.with_name(stem.name + ".summary.json"))
    fmt = check_outputs(output, audit, cfg.granularity)
    notes = read_notes(cfg.input, id_column=cfg.id_column, text_column=cfg.text_column)
    if str(cfg.bundle).startswith(("models:/", "runs:/")):
        setup_experiment(cfg.tracking, Path(cfg.paths.root_dir).resolve())
    coder = Coder.load(cfg.bundle)
    summary = predict_notes(
        coder, notes, output, audit, fmt=fmt, granularity=cfg.granularity,
        include_text=bool(cfg.audit.include_text), batch_size=cfg.batch_size, block_size=cfg.block_size,
        evidence_top_k=cfg.evidence_top_k,
    )
    atomic_write_text(summary_path, json.dumps({"bundle_id": coder.bundle_id, "codeset_fy": coder.codeset_fy,
                                                "policy_version": str(coder.policy.policy_version),
                                                **summary.to_dict()}, indent=2) + "\n")
    return BatchResult(output, audit, summary_path, summary, coder.bundle_id)
