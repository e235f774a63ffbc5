"""The ``data`` config group -> a corpus: one table from ``data.format`` to a loader entry.

Why a table of small functions: the ``data`` keys used to be copied one by one, each with its own
default, inside an if/elif per format, so a default lived in two places and a misspelt key
(``data.lenguage=es``) was silently ignored while the run went on in English. Now each entry's
signature *is* the list of keys its format takes and their defaults (the one place), and a key
that is neither a parameter of the entry nor one of :data:`METADATA_KEYS` is a one-line
:class:`~medcoder.errors.ConfigError` naming it and the valid keys.

A ``null`` value means "the default" (the shipped configs spell optional keys as ``null``), so
``None`` values are dropped before the entry is called.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from medcoder.constraints import check_keys
from medcoder.data.codiesp import DEFAULT_SPLITS, load_codiesp
from medcoder.data.mimic import load_mimic
from medcoder.data.resolve import resolve_codiesp_root
from medcoder.data.tabular import load_tabular
from medcoder.errors import ConfigError, DataError
from medcoder.registry import Registry

__all__ = ["FORMATS", "METADATA_KEYS", "LOADERS", "REVIEWED_LABELS_FILE", "VERIFIED_FIELD", "file_sha256", "load_corpus", "load_reviewed",
           "loader_call", "reviewed_labels_path", "valid_keys"]

Loader = Callable[..., datasets.DatasetDict]

#: Keys every ``data`` group may carry that describe the corpus for the code *around* the loader;
#: an entry receives one only when its signature names it (CodiEsp reads ``language`` and
#: ``code_type`` itself). ``name``: run names and the ``medcoder.data`` tag; ``format``: picks the
#: entry; ``code_type``: whether the ICD-10-CM rules and descriptions apply (train, calibrate,
#: export, migrate_labels, config checks); ``language``: the dictionary view's language and
#: migrate_labels' output (fusion, config checks).
METADATA_KEYS: tuple[str, ...] = ("name", "format", "code_type", "language")


def _codiesp(*, root: str | Path | None = None, language: str = "en", code_type: str = "D",
             cache_dir: str | Path | None = None, download: bool = True, on_error: str = "skip",
             splits: Sequence[str] = DEFAULT_SPLITS) -> datasets.DatasetDict:
    """CodiEsp: ``root`` null = find a local copy in ``cache_dir`` or download the release."""
    release = resolve_codiesp_root(root, cache_dir=cache_dir, download=bool(download))
    return load_codiesp(release, language=language, code_type=code_type, splits=tuple(splits),
                        on_error=on_error)


def _jsonl(*, train: str | Path | None = None, dev: str | Path | None = None,
           test: str | Path | None = None, id_column: str = "id", text_column: str = "text",
           codes_column: str = "codes", on_error: str = "skip") -> datasets.DatasetDict:
    """A user's JSON Lines files, one per split (``codes`` is a list: no separator key)."""
    return load_tabular(_required_train(train, "jsonl"), dev, test, format="jsonl", id_column=id_column,
                        text_column=text_column, codes_column=codes_column, on_error=on_error)


def _csv(*, train: str | Path | None = None, dev: str | Path | None = None,
         test: str | Path | None = None, id_column: str = "id", text_column: str = "text",
         codes_column: str = "codes", codes_separator: str = ";",
         on_error: str = "skip") -> datasets.DatasetDict:
    """A user's CSV files, one per split; ``codes`` is one cell joined by ``codes_separator``."""
    return load_tabular(_required_train(train, "csv"), dev, test, format="csv", id_column=id_column,
                        text_column=text_column, codes_column=codes_column,
                        codes_separator=codes_separator, on_error=on_error)


def _mimic(*, root: str | Path | None = None, variant: str | None = None,
           cache_dir: str | Path | None = None, note_root: str | Path | None = None,
           split_files: str | Path | Mapping[str, Any] | None = None,
           code_types: Sequence[str] = ("D", "P"), min_code_count: int | None = None,
           top50: str = "mullenbach", text_preprocessing: str = "none") -> datasets.DatasetDict:
    """A credentialed user's local PhysioNet files, split as Edin et al. (see
    :mod:`medcoder.data.mimic`; ``min_code_count`` null = the variant's own default)."""
    return load_mimic(root, variant=variant, cache_dir=cache_dir, note_root=note_root,
                      split_files=split_files, code_types=tuple(code_types),
                      min_code_count=min_code_count, top50=top50,
                      text_preprocessing=text_preprocessing)


def _required_train(train: str | Path | None, fmt: str) -> str | Path:
    if not train:
        raise ConfigError(f"data.train is required for data.format={fmt}",
                          hint="set data.train=/path/to/train file")
    return train


LOADERS: Registry[Loader] = Registry("data.format", {
    "codiesp": _codiesp,
    "jsonl": _jsonl,
    "csv": _csv,
    "mimic": _mimic,
})

FORMATS: tuple[str, ...] = tuple(LOADERS)


def valid_keys(fmt: str) -> tuple[str, ...]:
    """The keys a ``data`` group of format ``fmt`` may carry: the entry's parameters and
    :data:`METADATA_KEYS`, sorted."""
    return tuple(sorted({*_parameters(LOADERS.lookup(fmt)), *METADATA_KEYS}))


def loader_call(data_cfg: Mapping[str, Any]) -> tuple[Loader, dict[str, Any]]:
    """The entry for ``data.format`` and the keyword arguments it gets, without loading anything.

    Raises a one-line ``ConfigError`` for an unknown format or an unknown key (with the valid
    keys and, for a near miss, the key that was probably meant).
    """
    values = dict(data_cfg.items())
    fmt = values.get("format")
    entry = LOADERS.lookup(fmt)
    params = _parameters(entry)
    check_keys("data", values, {*params, *METADATA_KEYS}, context=f" for data.format={fmt}")
    return entry, {k: v for k, v in values.items() if k in params and v is not None}


def load_corpus(data_cfg: Mapping[str, Any]) -> datasets.DatasetDict:
    """Load the corpus a ``data`` config group describes, given as a plain mapping (workflows
    resolve the Hydra node first: ``medcoder.workflows.factories.build_corpus``). The keys each
    format takes, and their defaults, are the signatures of this module's entries."""
    entry, kwargs = loader_call(data_cfg)
    return entry(**kwargs)


def _parameters(entry: Loader) -> tuple[str, ...]:
    return tuple(inspect.signature(entry).parameters)


#: The labels file of a review export (``scripts/review.py action=export export_dir=...``).
REVIEWED_LABELS_FILE = "labels.jsonl"


def reviewed_labels_path(ref: str | Path) -> Path:
    """The reviewed-labels file ``ref`` names: a ``labels.jsonl`` file, or an export folder holding
    one. A missing path is a one-line ``DataError``."""
    path = Path(str(ref)).expanduser()
    if path.is_dir():
        path = path / REVIEWED_LABELS_FILE
    if not path.is_file():
        raise DataError(f"reviewed={path}: file not found",
                        hint="give the labels.jsonl of `python scripts/review.py action=export export_dir=<dir>`, "
                             "or that folder")
    return path.resolve()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: The field of a ``labels.jsonl`` row that says every auto-accepted code of the note was checked by a
#: person (decided by a reviewer, or audited). Absent: false.
VERIFIED_FIELD = "verified"


def load_reviewed(ref: str | Path, *, sha256: str | None = None) -> tuple[datasets.Dataset, Path, str]:
    """Reviewed notes of a review export (``{id, text, codes, verified}`` JSON Lines, the
    ``data=jsonl`` format plus one field): ``(notes, path, sha256 of the file)``; the notes carry a
    boolean ``verified`` column.

    Why its own loader: these notes decide what a retrained candidate is certified on, so the file
    is pinned by its digest (``sha256``: the one recorded when the candidate was trained; a file
    changed since is refused, since calibrate/export would rebuild another partition), and an
    export without notes is refused here rather than training a candidate on nothing new.
    Empty notes are skipped as ``data=jsonl`` skips them (logged by id); ids must be unique.

    ``verified`` (:data:`VERIFIED_FIELD`): true when every auto-accepted code of the note was decided
    by a reviewer or audited. **Absent means false** (an export from before the field existed, or a
    hand-made file): such a note may train a candidate but never certify one
    (:func:`medcoder.data.splits.split_reviewed`). A value other than true/false is a one-line
    ``DataError``.
    """
    path = reviewed_labels_path(ref)
    digest = file_sha256(path)
    if sha256 is not None and digest != sha256:
        raise DataError(f"reviewed={path}: the file changed since the candidate was trained (sha256 {digest[:12]}... "
                        f"!= {str(sha256)[:12]}...)", hint="restore the exported file the run was trained with")
    notes = load_tabular(path, format="jsonl", on_error="skip")["train"]
    if len(notes) == 0:
        raise DataError(f"reviewed={path}: no reviewed notes in the export",
                        hint="submit reviews in the workbench, then export again (scripts/review.py action=export)")
    flags = _verified_flags(path)
    return notes.add_column(VERIFIED_FIELD, [flags.get(str(i), False) for i in notes["id"]]), path, digest


def _verified_flags(path: Path) -> dict[str, bool]:
    """``id -> verified`` of every row of a reviewed-labels file (rows already parsed once by
    :func:`load_tabular`, so only the one field is checked here)."""
    flags: dict[str, bool] = {}
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):  # a row load_tabular refused or skipped already
                continue
            if not isinstance(row, dict):
                continue
            value = row.get(VERIFIED_FIELD, False)
            if not isinstance(value, bool):
                raise DataError(f"{path}:{line_no}: field {VERIFIED_FIELD!r} must be true or false, got "
                                f"{type(value).__name__}", hint="re-export the reviews (scripts/review.py action=export)")
            flags[str(row.get("id"))] = value
    return flags
