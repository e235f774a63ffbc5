"""Atomic file writes: temp file in the same folder, then ``os.replace``.

Why: an interrupted run must never leave a half-written file that a later run (or an ops team)
takes for a complete one. One helper so every writer of the project gets this the same way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit fsync and rename it to ``path``, on an
    exception delete it. For writers that stream rows (batch prediction) rather than one blob."""
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode={mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fh)`` on a temp file beside ``path``, fsync it, then rename it into place."""
    with atomic_open(path, "wb") as fh:
        write(fh)


def atomic_write_text(path: str | Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write`."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
