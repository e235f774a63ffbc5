"""Atomic file writes: temp file in the same folder, then ``os.replace``.

Why: an interrupted run must never leave a half-written file that a later run (or an ops team)
takes for a complete one. One helper so every writer of the project gets this the same way.

* :func:`atomic_open` / :func:`atomic_write` / :func:`atomic_write_text`: one file.
* :class:`AtomicFileSet`: several files that belong together (batch prediction's predictions,
  audit log and summary), committed all-or-nothing: every file is written to a temp file first,
  then all are renamed in one step at the end; if a rename fails, what this run already renamed
  is rolled back (previous versions restored from hard-link backups where the file system allows).

* :func:`make_staging_dir` / :func:`replace_all`: a folder (or several) written beside its target
  and renamed into place, a previous version moved aside first and deleted only once every rename
  succeeded (bundle export, the bundle cache, Spark's output folders).

This module is the one home of the project's file-safety helpers: :func:`pid_alive`,
:func:`is_inside`, :func:`existing_ancestor`, :func:`current_umask` /
:func:`apply_default_permissions`, :func:`fsync_file`, and :func:`sweep_stale`, the one rule by
which a run removes what a killed run left behind.

Temp files are named ``.<name>.medcoder-<pid>-<random>.tmp`` beside their target, and staging
folders ``.<name>.<random>.partial`` with a marker file naming the pid and host that made them, so
a later run can recognise what a killed (SIGKILL, power loss) process left and delete it
(:func:`sweep_stale`: only what is marked as ours and whose process is gone). Every other exit
path (exception, ``KeyboardInterrupt``, SIGTERM/SIGHUP under :func:`signals_raise`) deletes them at
once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

TEMP_TAG = "medcoder"
_TEMP_RE = re.compile(rf"^\.(?P<name>.+)\.{TEMP_TAG}-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")
#: Staging folders: ``.<name>.<random>.partial`` (``mkdtemp``'s random part has no dot).
STAGING_SUFFIX = ".partial"
#: The marker file inside a staging folder: program, pid and host that made it.
STAGING_MARKER = ".medcoder-staging.json"
_STAGING_RE = re.compile(rf"^\.(?P<name>.+)\.[A-Za-z0-9_]+{re.escape(STAGING_SUFFIX)}$")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{TEMP_TAG}-{os.getpid()}-"


def make_temp(path: str | Path) -> Path:
    """Create an empty temp file beside ``path`` (``.<name>.medcoder-<pid>-<rand>.tmp``), with the
    permissions ``open()`` would give (``mkstemp`` makes 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    return Path(tmp)


# -- processes, paths, permissions ---------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host. Every answer that is not a clear "no such
    process" counts as alive (pid <= 0, another user's process, any other error): callers use
    this to decide whether something may be deleted, and keeping it is the safe side."""
    if pid <= 0:
        return True  # not ours to judge: keep
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: exists, owned by someone else
        return True
    return True


def is_inside(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies below it (both already resolved: no file system access)."""
    return path == folder or folder in path.parents


def existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` that exists: the folder a writer of ``path`` writes into
    (the folders between are created), so the one whose type and permissions decide."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    return parent


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (no race with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_default_permissions(root: Path) -> None:
    """Give every folder under ``root`` (and ``root``) mode ``0777 & ~umask`` and every file
    ``0666 & ~umask``: what ``mkdir``/``open`` would have made.

    Why: a staging folder comes from ``mkdtemp`` (0700) and copied files keep their source's
    mode, so without this a folder renamed into place (a bundle) could be unreadable by the
    separate, read-only service account that serves it. Symbolic links are left alone (their mode
    means nothing on Linux).
    """
    mask = current_umask()
    dir_mode, file_mode = 0o777 & ~mask, 0o666 & ~mask
    os.chmod(root, dir_mode)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, dir_mode)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, file_mode)


def fsync_file(fh: IO[Any]) -> None:
    """Flush ``fh`` and push its bytes to disk (before a rename or a state file records them)."""
    fh.flush()
    os.fsync(fh.fileno())


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree (a link is removed, never followed); gone already is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


# -- staging folders and what killed runs left -----------------------------------------------------
def make_staging_dir(parent: Path, name: str) -> Path:
    """``parent/.<name>.<random>.partial`` (mode 0700), marked as this process's (pid + host) so
    that a later run can tell a folder a killed process left behind from one still being written
    (:func:`sweep_stale`)."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=STAGING_SUFFIX))
    marker = {"program": TEMP_TAG, "pid": os.getpid(), "host": socket.gethostname(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (staging / STAGING_MARKER).write_text(json.dumps(marker) + "\n")
    return staging


def _stale_owner(entry: os.DirEntry[str], name: str | None, host: str) -> int | None:
    """The dead owner pid of ``entry`` if it is one of our marked scratch entries (see
    :func:`sweep_stale`), else None."""
    if entry.is_symlink():
        return None
    temp = _TEMP_RE.match(entry.name) if name is not None else None
    if temp is not None and temp["name"] == name:
        if not entry.is_file(follow_symlinks=False):
            return None
        pid = int(temp["pid"])
    else:
        staging = _STAGING_RE.match(entry.name)
        if staging is None or (name is not None and staging["name"] != name):
            return None
        if not entry.is_dir(follow_symlinks=False):
            return None
        try:
            marker = json.loads(Path(entry.path, STAGING_MARKER).read_text())
            pid = int(marker["pid"])
            if marker.get("program") != TEMP_TAG or marker.get("host") != host:
                return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
    if pid == os.getpid() or pid_alive(pid):
        return None
    return pid


def sweep_stale(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove, from ``folder``, what medcoder processes that were killed left behind; return the
    paths removed. ``name``: only what was made for the target of that name (temp files are only
    swept then); None: every staging folder in ``folder``.

    The rule, the same for every caller: an entry is removed only if all of these hold.

    1. medcoder marked it as its own, and the mark names the process that made it: a regular
       file named ``.<name>.medcoder-<pid>-<random>.tmp`` (:func:`make_temp`, the hard-link
       backups of :class:`AtomicFileSet`), or a real folder named ``.<name>.<random>.partial``
       holding :data:`STAGING_MARKER` with ``program: medcoder``, its pid and host
       (:func:`make_staging_dir`).
    2. The mark names this host (where it records one: a staging folder's marker does), the pid
       is not this process's, and no process with that pid exists (:func:`pid_alive`: any other
       answer, a pid reused by an unrelated process included, keeps the entry).

    Why this rule: the three sweeps it replaces differed. Export removed marked folders of this
    host only; batch prediction removed temp files by name; Spark prediction removed anything
    named like its staging, files, folders and links alike. This takes the strictest of each, as
    nothing the program did not create may ever be deleted: no unmarked entry (a user's
    ``.x.partial`` folder, a file someone named like a temp) and no link or special file (we never
    create one; following one could delete elsewhere). A folder, whose removal deletes a tree,
    needs the marker file, not just a name, and the marker's host must be this one (on a shared
    disk another host's pid means nothing here). A temp file's name has no room for a host, so
    temp files are swept only for a named target: only two hosts writing the same output at
    once, a conflict in itself, could meet another host's temp.
    """
    folder = Path(folder)
    host = socket.gethostname()
    removed: list[Path] = []
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return removed
    prefix = "." if name is None else f".{name}."
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid = _stale_owner(entry, name, host)
        if pid is None:
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                continue  # gone already or not ours to delete: never fail a run over a stale temp
        log.info("removed %s, left by an interrupted medcoder process (pid %d)", path, pid)
        removed.append(path)
    return removed


def remove_stale_temps(path: str | Path) -> list[Path]:
    """:func:`sweep_stale` for one target: the temps (and staging folders) of ``path`` that
    killed medcoder processes left. Returns the deleted paths."""
    path = Path(path)
    return sweep_stale(path.parent, path.name)


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
            fsync_file(fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def replace_all(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Rename each staged file or folder onto its target, in order (the last pair is the
    completion marker), all or nothing.

    Why not :meth:`AtomicFileSet.commit`: a folder cannot be renamed onto a non-empty one, so an
    existing target is first moved aside, into a marked staging folder beside it (a killed commit
    leaves nothing that :func:`sweep_stale` does not recognise), and deleted only once every
    rename succeeded. A failed rename removes what this call already put in place and moves every
    earlier target back.
    """
    done: list[tuple[Path, Path | None]] = []
    asides: list[Path] = []
    try:
        for staged, target in pairs:
            old = None
            if target.exists() or target.is_symlink():
                asides.append(make_staging_dir(target.parent, target.name))
                old = asides[-1] / "previous"
                os.replace(target, old)
            done.append((target, old))
            os.replace(staged, target)
    except BaseException:
        for target, old in reversed(done):
            if target.exists():
                remove_path(target)
            if old is not None:
                os.replace(old, target)
        for aside in asides:  # every earlier target is back: only markers are left in them
            shutil.rmtree(aside, ignore_errors=True)
        raise
    for aside in asides:
        shutil.rmtree(aside, ignore_errors=True)


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
