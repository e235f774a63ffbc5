"""The predict loop of batch prediction: blocks of notes through ``Coder.predict`` (the one
inference path) into the parts of the partial run, then the all-or-nothing commit.

Why blocks: at most one block of notes, predictions and output rows is alive, so memory does not
grow with the input; a resumable run records each block once its bytes are on disk. SIGTERM/SIGHUP
raise while it runs (:func:`medcoder.atomic.signals_raise`), so nothing half-done is left behind
except, with ``resume``, the partial that the same call continues. Ctrl-C, SIGTERM/SIGHUP and
errors keep the partial when it holds at least one block (not an input that changed meanwhile:
that partial could never be resumed); ``resume=False`` removes its own on every failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence, Sized
from itertools import islice
from pathlib import Path
from typing import IO, Any

from medcoder.atomic import fsync_file, remove_stale_temps, signals_raise
from medcoder.errors import ConfigError, DataError
from medcoder.inference.batch.outputs import (
    GRANULARITIES,
    OUTPUT_FORMATS,
    BatchSummary,
    OutputPaths,
    _rows,
    _write_parquet_block,
    _Writer,
    check_outputs,
    check_paths,
    commit_outputs,
    output_columns,
    parquet_schema,
)
from medcoder.inference.batch.partial import _notes_fingerprint, _Partial, _skip, _start
from medcoder.inference.batch.sources import NoteSource, check_bool, check_positive
from medcoder.inference.coder import DEFAULT_MAX_NOTE_CHARS, Coder
from medcoder.inference.prediction import DocumentPrediction

log = logging.getLogger(__name__)


def predict_file(
    coder: Coder,
    input_path: str | Path,
    output_path: str | Path,
    audit_path: str | Path | None = None,
    *,
    summary_path: str | Path | None = None,
    granularity: str = "note",
    include_text: bool = False,
    id_column: str = "id",
    text_column: str = "text",
    max_note_chars: int | None = DEFAULT_MAX_NOTE_CHARS,
    **predict_kw: Any,
) -> BatchSummary:
    """Predict every note of ``input_path`` into predictions + audit log + summary (all-or-nothing;
    audit and summary default to ``<output without suffix>.audit.jsonl`` / ``.summary.json``).
    ``predict_kw`` go to :func:`predict_notes` (``resume``, ``block_size``, ``progress``, ...)."""
    outputs = OutputPaths.beside(output_path, audit_path, summary_path)
    fmt = check_outputs(outputs.predictions, outputs.audit, granularity)
    check_paths(outputs, input_path, coder.bundle_dir)
    source = NoteSource(input_path, id_column=id_column, text_column=text_column, max_note_chars=max_note_chars,
                        parquet_batch_rows=predict_kw.get("block_size", 256)).scan()
    return predict_notes(coder, source, outputs, fmt=fmt, granularity=granularity, include_text=include_text,
                         max_note_chars=max_note_chars, **predict_kw)


def predict_notes(
    coder: Coder,
    notes: NoteSource | Iterable[tuple[str, str]],
    outputs: OutputPaths,
    *,
    fmt: str,
    granularity: str,
    include_text: bool = False,
    batch_size: int = 8,
    block_size: int = 256,
    evidence_top_k: int | None = None,
    max_note_chars: int | None = DEFAULT_MAX_NOTE_CHARS,
    progress: bool = True,
    resume: bool = False,
    extra_summary: dict[str, Any] | None = None,
) -> BatchSummary:
    """Predict ``(id, text)`` notes into the three outputs, ``block_size`` notes at a time.

    ``notes``: a :class:`NoteSource` (streamed, scanned first if it was not), or any iterable of
    pairs (a list: in memory). ``resume=True`` keeps a killed or interrupted run's finished blocks
    and continues from them (see :mod:`medcoder.inference.batch`; needs a ``NoteSource`` or a sequence, whose
    fingerprint identifies the input). SIGTERM/SIGHUP raise meanwhile, so nothing half-done is
    left behind except, with ``resume``, the partial that the same call continues.
    """
    check_positive("block_size", block_size)
    check_bool("resume", resume)
    if fmt not in OUTPUT_FORMATS.values():
        raise ConfigError(f"fmt={fmt!r} is not valid", hint=f"one of {sorted(set(OUTPUT_FORMATS.values()))}")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={granularity!r} is not valid", hint="use note or code")
    if isinstance(notes, NoteSource):
        if notes.count is None:
            notes.scan()
        total, input_fp, recheck = notes.count, notes.fingerprint, notes.current_fingerprint
    else:
        total = len(notes) if isinstance(notes, Sized) else None
        input_fp, recheck = None, None
        if resume:
            if not isinstance(notes, Sequence):
                raise ConfigError("resume=true needs an input file or a list of notes, not a one-pass iterable",
                                  hint="pass a NoteSource, or resume=False")
            input_fp = _notes_fingerprint(notes)
    from medcoder import __version__

    fingerprint = {
        "bundle_id": coder.bundle_id, "input": input_fp, "medcoder": __version__,
        "settings": {"format": fmt, "granularity": granularity, "include_text": include_text,
                     "evidence_top_k": evidence_top_k, "max_note_chars": max_note_chars,
                     **({"id_column": notes.id_column, "text_column": notes.text_column}
                        if isinstance(notes, NoteSource) else {})},
        "outputs": {k: str(p.resolve()) for k, p in outputs.named()},
    }
    for _, path in outputs.named():
        remove_stale_temps(path)  # left by a run that was SIGKILLed
    part = _Partial(outputs, fmt)
    run = _BlockRun(coder, part, granularity=granularity, include_text=include_text, batch_size=batch_size,
                    evidence_top_k=evidence_top_k, max_note_chars=max_note_chars, durable=resume)
    with signals_raise():
        part.acquire()
        try:
            try:
                state = _start(part, fingerprint, resume)
                it = iter(notes)
                if state["notes_done"]:
                    _skip(it, state["notes_done"], state["last_id"], part.dir)
                    log.info("resuming from %s: %d notes already predicted", part.dir, state["notes_done"])
            except BaseException:
                if not part.state_path.is_file():
                    part.remove()  # a refused or damaged partial is left as it is (the message says so)
                raise
            try:
                summary = run.predict(it, state, block_size=block_size, total=total, progress=progress)
                if recheck is not None and recheck() != input_fp:
                    raise DataError(f"input {getattr(notes, 'path', '')} changed while it was being predicted",
                                    hint="run again once the input is final")
                text = json.dumps(
                    {"bundle_id": coder.bundle_id, "codeset_fy": coder.codeset_fy,
                     "policy_version": str(coder.policy.policy_version), **summary.to_dict(),
                     "max_note_chars": max_note_chars, "predictions": outputs.predictions.name,
                     "audit": outputs.audit.name, **(extra_summary or {})},
                    indent=2, allow_nan=False) + "\n"
                commit_outputs(outputs, part.pred, part.audit, text, schema=run.schema)
            except BaseException as exc:
                done = state["notes_done"]
                if resume and done > 0 and not isinstance(exc, DataError):
                    log.warning("stopped after %d of %s notes; the finished blocks are kept in %s: run the "
                                "same command again to continue", done, "?" if total is None else total, part.dir)
                else:
                    part.remove()
                raise
            part.remove()  # while still holding the lock
        finally:
            part.release()
    return summary


class _BlockRun:
    """The block loop: predict a block with ``Coder.predict``, append its rows and audit lines to
    the parts, then (``durable``: resumable runs) fsync them and record the block in the state."""

    def __init__(self, coder: Coder, part: _Partial, *, granularity: str, include_text: bool, batch_size: int,
                 evidence_top_k: int | None, max_note_chars: int | None, durable: bool) -> None:
        self.coder, self.part, self.granularity = coder, part, granularity
        self.include_text, self.batch_size, self.evidence_top_k = include_text, batch_size, evidence_top_k
        self.max_note_chars, self.durable = max_note_chars, durable
        self.schema = parquet_schema(granularity) if part.fmt == "parquet" else None
        self.writer = None if part.fmt == "parquet" else _Writer(part.fmt, output_columns(granularity))

    def predict(self, notes: Iterator[tuple[str, str]], state: dict[str, Any], *, block_size: int,
                total: int | None, progress: bool) -> BatchSummary:
        summary = BatchSummary.from_counts(state["summary"])
        summary.resumed_notes = state["notes_done"]
        prior, started = summary.wall_seconds, time.perf_counter()
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(contextlib.closing(_progress(total, state["notes_done"], progress)))
            pred_fh = None if self.writer is None else stack.enter_context(open(self.part.pred, "ab"))
            audit_fh = stack.enter_context(open(self.part.audit, "ab"))
            for block in _blocks(notes, block_size):
                preds = self._predict(block)
                rows = [row for pred in preds for row in _rows(pred, self.granularity)]
                if self.schema is not None:
                    _write_parquet_block(self.part.pred / f"{state['notes_done']:012d}.parquet", rows, self.schema,
                                         sync=self.durable)
                    state["blocks"] += 1
                else:
                    assert self.writer is not None and pred_fh is not None
                    pred_fh.write(self.writer.encode(rows, header=state["bytes"]["predictions"] == 0))
                    state["bytes"]["predictions"] = self._flush(pred_fh)
                audit_fh.write(self._audit_lines(block, preds))
                state["bytes"]["audit"] = self._flush(audit_fh)
                for pred in preds:
                    summary.add(pred)
                summary.wall_seconds = prior + time.perf_counter() - started
                state.update(notes_done=state["notes_done"] + len(block), last_id=block[-1][0],
                             summary=summary.to_dict())
                if self.durable:  # recorded only once the block's bytes are on disk
                    self.part.write_state(state)
                bar.update(len(block))
            for fh in (pred_fh, audit_fh):
                if fh is not None:
                    fsync_file(fh)
        summary.wall_seconds = prior + time.perf_counter() - started
        return summary

    def _predict(self, block: list[tuple[str, str]]) -> list[DocumentPrediction]:
        # The one inference path; Coder.predict sorts the block by length and batches it, and
        # returns the predictions in input order.
        return self.coder.predict([t for _, t in block], [i for i, _ in block], batch_size=self.batch_size,
                                  evidence_top_k=self.evidence_top_k, max_note_chars=self.max_note_chars,
                                  progress=False)

    def _audit_lines(self, block: list[tuple[str, str]], preds: list[DocumentPrediction]) -> bytes:
        """Audit records: no note text unless ``include_text`` (then the text as scored)."""
        limit = self.max_note_chars
        lines = []
        for (_, text), pred in zip(block, preds, strict=True):
            scored = (text if limit is None else text[:limit]) if self.include_text else None
            lines.append(json.dumps(pred.audit_record(scored), ensure_ascii=False) + "\n")
        return "".join(lines).encode("utf-8")

    def _flush(self, fh: IO[bytes]) -> int:
        """Push the block to the file (and to disk when resumable); its length now."""
        if self.durable:
            fsync_file(fh)
        return fh.tell()


def _progress(total: int | None, done: int, enabled: bool) -> Any:
    """A tqdm bar on stderr: notes done, notes/s and time left (the total is the scan's count)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit=" notes", desc="predicting", disable=not enabled,
                mininterval=1.0, smoothing=0.1, dynamic_ncols=True)


def _blocks(notes: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    """Lists of at most ``size`` notes, taken from ``notes`` only when the previous block is done."""
    while block := list(islice(notes, size)):
        yield block
