"""Atomic file writes: temp file in the same folder, then ``os.replace``.

Why: an interrupted run must never leave a half-written file that a later run (or an ops team)
takes for a complete one. One helper so every writer of the project gets this the same way.

* :func:`atomic_open` / :func:`atomic_write` / :func:`atomic_write_text`: one file.
* :class:`AtomicFileSet`: several files that belong together (batch prediction's predictions,
  audit log and summary), committed all-or-nothing: every file is written to a temp file first,
  then all are renamed in one step at the end; if a rename fails, what this run already renamed
  is rolled back (previous versions restored from hard-link backups where the file system allows).

Temp files are named ``.<name>.medcoder-<pid>-<random>.tmp`` beside their target, so a later run
can recognise the temps a killed (SIGKILL, power loss) process left and delete them
(:func:`remove_stale_temps`: only temps whose pid is no longer alive). Every other exit path
(exception, ``KeyboardInterrupt``, SIGTERM/SIGHUP under :func:`signals_raise`) deletes them at once.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import IO, Any

TEMP_TAG = "medcoder"
_TEMP_RE = re.compile(rf"^\.(?P<name>.+)\.{TEMP_TAG}-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{TEMP_TAG}-{os.getpid()}-"


def make_temp(path: str | Path) -> Path:
    """Create an empty temp file beside ``path`` (``.<name>.medcoder-<pid>-<rand>.tmp``), with the
    permissions ``open()`` would give (``mkstemp`` makes 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not ours to judge: keep
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temps of ``path`` left by medcoder processes that no longer exist.

    Only files named like :func:`make_temp`'s for this exact target are considered, and only when
    their pid is not alive (a pid reused by an unrelated process keeps its temp: the safe side).
    Returns the deleted paths."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    pattern = os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.{TEMP_TAG}-*.tmp")
    for name in glob.glob(pattern):  # the pattern starts with ".", so glob lists hidden files
        tmp = Path(name)
        m = _TEMP_RE.match(tmp.name)
        if not m or m["name"] != path.name:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass  # gone already or not ours to delete: never fail a run over a stale temp
    return removed


def _unlink_quietly(path: Path | str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit fsync and rename it to ``path``, on an
    exception delete it. For writers that stream rows (batch prediction) rather than one blob."""
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode={mode!r}")
    path = Path(path)
    tmp = make_temp(path)
    try:
        with open(tmp, mode, **kwargs) as fh:
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


class AtomicFileSet:
    """Several output files committed all-or-nothing; the *last* target is the completion marker.

    Use as a context manager::

        with AtomicFileSet([pred, audit, summary]) as files:
            fh = files.open(pred, "w", encoding="utf-8")      # a temp file beside pred
            ...
            files.write_text(summary, "...")                   # written last
        # clean exit: committed; exception / KeyboardInterrupt / SystemExit: temps deleted

    Commit order: the old marker is removed first, then every other target is renamed into
    place, the marker last. So at any moment a present marker means the files beside it belong
    to one complete run. A failed rename restores the previous versions (kept as hard-link
    backups, themselves named like temps) or, where a target did not exist, removes the new file.
    """

    def __init__(self, targets: Sequence[str | Path]) -> None:
        self.targets = [Path(t) for t in targets]
        if len({os.path.abspath(t) for t in self.targets}) != len(self.targets):
            raise ValueError(f"targets must be distinct, got {self.targets}")
        self.temps: dict[Path, Path] = {}
        self._stack = ExitStack()

    def open(self, target: str | Path, mode: str = "w", **kwargs: Any) -> IO[Any]:
        """The temp file of ``target`` opened for writing (closed, fsynced at commit)."""
        target = Path(target)
        if target not in self.targets:
            raise ValueError(f"{target} is not one of {self.targets}")
        if target in self.temps:
            raise ValueError(f"{target} is already open")
        tmp = make_temp(target)
        self.temps[target] = tmp
        return self._stack.enter_context(open(tmp, mode, **kwargs))

    def write_text(self, target: str | Path, text: str) -> None:
        fh = self.open(target, "w", encoding="utf-8")
        fh.write(text)

    def __enter__(self) -> AtomicFileSet:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._close_all(sync=True)
                self.commit()
        finally:
            self._close_all(sync=False)
            for tmp in self.temps.values():
                _unlink_quietly(tmp)

    def _close_all(self, *, sync: bool) -> None:
        stack, self._stack = self._stack, ExitStack()
        if sync:
            # fsync every temp before any rename: a crash after commit must not leave empty files
            stack.close()
            for tmp in self.temps.values():
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        else:
            with suppress(OSError):
                stack.close()

    def commit(self) -> None:
        """Rename every temp into place, the last target last; roll back on a failed rename."""
        missing = [t for t in self.targets if t not in self.temps]
        if missing:
            raise ValueError(f"nothing was written for {missing}")
        backups: dict[Path, Path | None] = {}
        done: list[Path] = []
        marker = self.targets[-1]
        try:
            for target in self.targets:
                backups[target] = self._backup(target)
            if backups[marker] is not None or marker.exists():
                _unlink_quietly(marker)  # no marker while the set is being replaced
            for target in self.targets:
                os.replace(self.temps[target], target)
                done.append(target)
        except BaseException:
            for target in reversed(self.targets):
                backup = backups.get(target)
                try:
                    if backup is not None:
                        os.replace(backup, target)
                    elif target in done:
                        _unlink_quietly(target)
                except OSError:
                    pass
            raise
        finally:
            for backup in backups.values():
                if backup is not None:
                    _unlink_quietly(backup)

    @staticmethod
    def _backup(target: Path) -> Path | None:
        """A hard link to the current ``target`` (None if there is none, or links are refused)."""
        if not target.is_file():
            return None
        backup = target.parent / f"{_temp_prefix(target)}{secrets.token_hex(4)}bak.tmp"
        try:
            os.link(target, backup)
        except OSError:
            return None
        return backup


class Terminated(SystemExit):
    """SIGTERM/SIGHUP turned into an exception, so ``finally`` blocks (temp cleanup) run."""


@contextmanager
def signals_raise(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, SIGTERM (and SIGHUP) raise :class:`Terminated` (exit code 128 + signal)
    instead of killing the process on the spot, so context managers clean up their temp files.

    A no-op outside the main thread (Python only delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, _frame: Any) -> None:
        raise Terminated(128 + signum)

    previous = {}
    for sig in signals:
        previous[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
