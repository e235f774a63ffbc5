"""What medcoder made, and may therefore replace or delete: one rule, one marker file.

Why (issue 22): training deleted ``checkpoint_dir / run_name`` after every run and before one with
``trainer.resume=never``; with ``run_name=../../precious`` that was someone else's folder.
``codeset_diff`` and ``migrate_labels`` replaced whatever files sat in the ``output_dir`` they were
given (``migrate_labels`` even deleted a CodiEsp release folder there). A program may only delete or
replace what it created, and it has to be able to tell:

* A folder medcoder creates for its own use (a run's checkpoint folder) gets the marker file
  :data:`OWNER_MARKER` (``program: medcoder`` and the folder's ``kind``) when it is created
  (:func:`create_owned_dir`). :func:`remove_owned_dir` deletes only a real folder (never a link)
  holding that marker of the same kind; anything else is a one-line ``ConfigError``.
* Files medcoder writes into a folder a user names (``output_dir``) are listed in that folder's
  marker *before* they are written (:func:`claim_outputs`, so a kill between the two never leaves
  an unlisted file of ours). An existing entry of those names that the marker does not list (a
  user's file, a link, the output of an older medcoder) is refused, before anything is written;
  other files in the folder are left alone.

This sits beside :mod:`medcoder.atomic` (how files are written) and is used by the workflows and by
the domain writers that replace files (``codesets``); it reads no config.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medcoder.atomic import atomic_write_text
from medcoder.errors import ConfigError

__all__ = ["OWNER_MARKER", "claim_outputs", "create_owned_dir", "mark_owned", "owned_kind", "remove_owned_dir"]

log = logging.getLogger(__name__)

#: The marker file of a folder medcoder created or writes into.
OWNER_MARKER = ".medcoder-owner.json"
_PROGRAM = "medcoder"


def _read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of ``folder`` if it is a regular file (not a link) written by medcoder, else None."""
    marker = folder / OWNER_MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("program") == _PROGRAM else None


def _write_marker(folder: Path, data: dict[str, Any]) -> None:
    atomic_write_text(folder / OWNER_MARKER, json.dumps(data, indent=1, sort_keys=True) + "\n")


def owned_kind(folder: Path) -> str | None:
    """The ``kind`` medcoder marked ``folder`` with, or None (not a real folder, or no valid marker)."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return None
    data = _read_marker(folder)
    return str(data.get("kind")) if data is not None else None


def create_owned_dir(folder: Path, kind: str, *, key: str) -> Path:
    """Create ``folder`` (parents too) for medcoder's own use and mark it as ``kind``.

    An existing folder is accepted if it already carries the marker of ``kind`` (a run resumed in
    its own folder), or if it is an empty real folder (nothing in it can be lost; also what a kill
    between ``mkdir`` and the marker leaves). Anything else (a link, a file, a folder with content
    and no marker, another kind's folder) is a one-line ``ConfigError`` naming ``key``: medcoder
    would later delete that folder, so it never adopts one it did not make.
    """
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ConfigError(f"{key}: {folder} exists and is not a folder medcoder created (a link or a file)",
                          hint=f"pick another {key}, or move {folder} away")
    if folder.is_dir():
        if owned_kind(folder) == kind:
            return folder
        if any(folder.iterdir()):
            raise ConfigError(f"{key}: {folder} exists and was not created by medcoder for {kind} (no {OWNER_MARKER} "
                              f"of kind {kind!r}); it would be deleted later, so it is not used",
                              hint=f"pick another {key}, or delete or move {folder} yourself")
    folder.mkdir(parents=True, exist_ok=True)
    return mark_owned(folder, kind)


def mark_owned(folder: Path, kind: str) -> Path:
    """Mark ``folder``, which this process has just made (e.g. a temp folder about to be renamed
    into place), as medcoder's ``kind``, so a later run may replace it (:func:`remove_owned_dir`)."""
    folder = Path(folder)
    _write_marker(folder, {"program": _PROGRAM, "kind": kind, "pid": os.getpid(),
                           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return folder


def remove_owned_dir(folder: Path, kind: str, *, key: str, strict: bool = True) -> bool:
    """Delete ``folder`` if medcoder created it as ``kind`` (:func:`create_owned_dir`); True if it did.

    A folder that does not exist is fine (False). Anything else (a link, a file, a folder without
    the marker or with another kind's) is never deleted: a one-line ``ConfigError`` when ``strict``,
    else a warning (a finished run must not fail over its clean-up).
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return False
    if owned_kind(folder) != kind:
        message = (f"{key}: refusing to delete {folder}: it was not created by medcoder for {kind} "
                   f"(no {OWNER_MARKER} of kind {kind!r})")
        if strict:
            raise ConfigError(message, hint=f"pick another {key}, or delete or move {folder} yourself")
        log.warning("%s; left as it is", message)
        return False
    shutil.rmtree(folder)
    return True


def claim_outputs(folder: Path, names: Iterable[str], *, kind: str, key: str = "output_dir") -> Path:
    """Before writing the entries ``names`` into ``folder``: refuse, in one line naming the path, to
    replace an existing entry that medcoder did not write there; then list ``names`` in the
    folder's marker (created with the folder if needed). Returns ``folder``.

    An entry counts as medcoder's when the folder's marker lists it; a link never does (replacing
    or deleting through it would reach elsewhere). Other files in the folder are left alone.
    """
    folder = Path(folder)
    names = list(names)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}={folder} exists and is not a folder", hint=f"give {key} a new or existing folder")
    data = _read_marker(folder) if folder.is_dir() else None
    listed = set(data.get("files") or []) if data is not None else set()
    for name in names:
        path = folder / name
        if path.is_symlink() or (path.exists() and name not in listed):
            raise ConfigError(f"{key}: {path} exists and was not written by medcoder; refusing to replace it",
                              hint=f"choose a new {key}=..., or move {path} away")
    folder.mkdir(parents=True, exist_ok=True)
    data = data or {"program": _PROGRAM, "kind": kind,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    data["files"] = sorted(listed | set(names))
    _write_marker(folder, data)
    return folder
