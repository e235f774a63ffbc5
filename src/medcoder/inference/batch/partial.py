"""The partial run: the hidden folder beside the output where a run writes its parts, so that a
killed run is continued by the same command (``resume=True``).

``.<output name>.medcoder-partial/`` holds ``predictions.part`` (JSONL/CSV, appended) or
``blocks/<first note>.parquet`` (Parquet: one file per block, a Parquet file being unreadable until
its footer is written), ``audit.part`` (appended), ``lock`` (an exclusive ``flock`` while a run
writes) and ``state.json``. After every block the parts are flushed and fsynced, then
``state.json`` is replaced atomically with the number of notes done, the last id, the byte length
of each part, the summary counters, and the fingerprints of the bundle, the input, the settings
that shape the output, the output paths and medcoder's version.

Why fingerprints and byte lengths: a resumed run cuts the parts back to the recorded lengths (a
half-written last line, a block not yet recorded: predicted again) and skips the first
``notes_done`` notes, which is only right if the input and settings are the same; a partial whose
fingerprints differ is refused (``ConfigError``), never mixed in. Why the lock: two runs must never
write the same partial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import IO, Any

from medcoder.atomic import atomic_write_text, remove_stale_temps
from medcoder.errors import ConfigError
from medcoder.inference.batch.outputs import BatchSummary, OutputPaths
from medcoder.ownership import OWNER_MARKER, create_owned_dir, remove_owned_dir

log = logging.getLogger(__name__)

STATE_VERSION = 1


#: The ownership marker's kind of a partial run's folder (medcoder.ownership).
PARTIAL_KIND = "batch-partial"


class _Partial:
    """The hidden folder where a run writes, and where a killed run's finished blocks wait.

    ``predictions.part`` / ``blocks/`` and ``audit.part`` grow block by block; ``state.json``
    (resumable runs only) records after each block how far they are complete; ``lock`` is held
    (``flock``) for the whole run, so two runs never write the same partial.
    """

    def __init__(self, outputs: OutputPaths, fmt: str) -> None:
        self.outputs, self.fmt = outputs, fmt
        self.dir = outputs.partial
        self.state_path = self.dir / "state.json"
        self.pred = self.dir / ("blocks" if fmt == "parquet" else "predictions.part")
        self.audit = self.dir / "audit.part"
        self._lock: IO[Any] | None = None

    # locking
    def acquire(self) -> None:
        # Marked as medcoder's own: only a folder this program made is ever cleared or removed.
        create_owned_dir(self.dir, PARTIAL_KIND, key="output")
        self._lock = open(self.dir / "lock", "a+b")  # noqa: SIM115 - held for the whole run
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            self._lock = None
            raise ConfigError(f"output={self.outputs.predictions}: another run is writing it (lock {self.dir / 'lock'})",
                              hint="wait for that run to end, or choose another output") from exc

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    # state
    def read_state(self) -> dict[str, Any] | None:
        """The recorded state, checked field by field: a damaged ``state.json`` (truncated, edited,
        nested a million deep, numbers of the wrong type) is one ``ConfigError``, never a traceback
        later in :meth:`restore` or the summary, and the partial is left as it is for the user."""
        if not self.state_path.is_file() and not self.state_path.is_symlink():
            return None
        try:
            if self.state_path.is_symlink() or self.state_path.stat().st_size > _MAX_STATE_BYTES:
                raise ValueError("not a state file medcoder wrote (a link, or too large)")
            state = json.loads(self.state_path.read_bytes())
            _check_state(state)
            return state
        except (OSError, ValueError, RecursionError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
            if isinstance(exc, RecursionError):
                reason = "nested too deeply"
            raise ConfigError(f"output={self.outputs.predictions}: the partial run in {self.dir} is unreadable "
                              f"(state.json: {reason})", hint=f"delete {self.dir} to start over") from None

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.state_path, json.dumps(state, indent=1, allow_nan=False) + "\n")

    def clear(self) -> None:
        """Remove every part (not the lock we hold): a fresh start."""
        for entry in self.dir.iterdir():
            if entry.name in ("lock", OWNER_MARKER):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def remove(self) -> None:
        remove_owned_dir(self.dir, PARTIAL_KIND, key="output", strict=False)

    # resuming
    def restore(self, state: dict[str, Any]) -> None:
        """Cut the parts back to what ``state`` records as complete (a half-written last line,
        a block whose state was never written: dropped, to be predicted again)."""
        for path, length in ((self.audit, state["bytes"]["audit"]), *(
                () if self.fmt == "parquet" else ((self.pred, state["bytes"]["predictions"]),))):
            size = path.stat().st_size if path.is_file() else -1
            if size < length:
                raise ConfigError(f"output={self.outputs.predictions}: the partial run in {self.dir} is damaged "
                                  f"({path.name} has {max(size, 0)} bytes, {length} recorded)",
                                  hint=f"delete {self.dir} to start over")
            if size > length:
                os.truncate(path, length)
        if self.fmt == "parquet":
            kept = 0
            for block in sorted(self.pred.glob("*.parquet")) if self.pred.is_dir() else []:
                if block.is_symlink() or not block.is_file():
                    raise ConfigError(f"output={self.outputs.predictions}: the partial run in {self.dir} is damaged "
                                      f"({block.name} is not a block file)", hint=f"delete {self.dir} to start over")
                if not block.stem.isdigit() or int(block.stem) >= state["notes_done"]:
                    block.unlink()  # written after the last recorded block
                else:
                    kept += 1
            if kept != state["blocks"]:
                raise ConfigError(f"output={self.outputs.predictions}: the partial run in {self.dir} is damaged "
                                  f"({kept} Parquet blocks, {state['blocks']} recorded)",
                                  hint=f"delete {self.dir} to start over")


#: A state.json is a few kB; a larger one was not written by this module.
_MAX_STATE_BYTES = 1 << 20
_COUNTERS = ("notes", "codes", "auto_accepted", "notes_fully_auto", "empty_notes", "truncated_notes", "resumed_notes")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_state(state: Any) -> None:
    """Raise ``ValueError`` naming the first field of ``state`` that is not what
    :func:`_start` and :meth:`_Partial.write_state` record."""
    if not isinstance(state, dict):
        raise ValueError(f"a JSON {type(state).__name__}, not an object")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"unknown version (this medcoder writes {STATE_VERSION})")
    missing = {"fingerprint", "notes_done", "last_id", "blocks", "bytes", "summary"} - set(state)
    if missing:
        raise ValueError(f"lacks {sorted(missing)}")
    if not isinstance(state["fingerprint"], dict):
        raise ValueError("fingerprint is not an object")
    for key in ("notes_done", "blocks"):
        if not _count(state[key]):
            raise ValueError(f"{key} is not a count")
    if not (state["last_id"] is None if state["notes_done"] == 0 else isinstance(state["last_id"], str)):
        raise ValueError("last_id does not match notes_done")
    counts = state["bytes"]
    if not isinstance(counts, dict) or not all(_count(counts.get(k)) for k in ("predictions", "audit")):
        raise ValueError("bytes lacks the byte counts")
    summary = state["summary"]
    if not isinstance(summary, dict) or not all(_count(summary.get(k, 0)) for k in _COUNTERS):
        raise ValueError("summary lacks its counts")
    reasons = summary.get("reasons", {})
    if not isinstance(reasons, dict) or not all(isinstance(k, str) and _count(v) for k, v in reasons.items()):
        raise ValueError("summary.reasons is not a table of counts")
    if not isinstance(summary.get("wall_seconds", 0.0), int | float) or isinstance(summary.get("wall_seconds"), bool):
        raise ValueError("summary.wall_seconds is not a number")


def _fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{sub}" for sub in _fingerprint_diff(a, b)]
        elif a != b:
            out.append(k)
    return out


def _skip(notes: Iterator[tuple[str, str]], n: int, last_id: str | None, partial: Path) -> None:
    """Consume the ``n`` notes a partial already holds; the last must be the one it recorded."""
    doc_id = None
    for note in islice(notes, n):
        doc_id = note[0]
    if doc_id != last_id:  # ids are not quoted: an error message must not carry input values
        raise ConfigError(f"the partial run in {partial} does not match the input (note {n} of the input is not "
                          f"the note the partial ends with)", hint=f"delete {partial} to start over")


def _start(part: _Partial, fingerprint: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The state to continue from: a matching partial's (resume), else a fresh one."""
    remove_stale_temps(part.state_path)
    state = part.read_state() if resume else None
    if state is not None:
        if state.get("fingerprint") != fingerprint:
            diff = _fingerprint_diff(state.get("fingerprint") or {}, fingerprint)
            raise ConfigError(
                f"output={part.outputs.predictions}: {part.dir} holds a partial run of another "
                f"bundle, input or settings (differs in: {', '.join(diff) or 'format'})",
                hint=f"delete {part.dir} to start over, or choose another output")
        part.restore(state)
        return state
    if any(entry.name not in ("lock", OWNER_MARKER) for entry in part.dir.iterdir()):  # what clear() removes
        log.info("removing the earlier partial run in %s (%s)", part.dir,
                 "not resumable" if resume else "resume=false starts over")
    part.clear()
    if part.fmt == "parquet":
        part.pred.mkdir()
    else:
        part.pred.touch()
    part.audit.touch()
    state = {"version": STATE_VERSION, "fingerprint": fingerprint, "notes_done": 0, "last_id": None,
             "blocks": 0, "bytes": {"predictions": 0, "audit": 0}, "summary": BatchSummary().to_dict()}
    if resume:
        part.write_state(state)
    return state


def _notes_fingerprint(notes: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for doc_id, text in notes:
        digest.update(json.dumps([doc_id, text], ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
    return f"sha256-notes:{digest.hexdigest()}"
