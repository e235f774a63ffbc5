"""Load the CodiEsp corpus (CLEF eHealth 2020) from its official release layout.

Layout (folder ``final_dataset_v4_to_publish``; its parent is accepted too)::

    {split}/{split}D.tsv  {split}/{split}P.tsv    headerless ``articleID<TAB>code``
    {split}/text_files/     Spanish notes, ``{articleID}.txt``   (language="es")
    {split}/text_files_en/  English notes (machine translated)   (language="en")

Every document with a text file in the split becomes one row ``{id, text, codes}``, sorted by id —
including documents without any code of the requested type (``codes=[]``): 65 train documents have
no procedure code, and dropping them would change the evaluation set depending on ``code_type``.
Codes are normalised with :func:`medcoder.data.codes.canonical_code` and de-duplicated (first-seen
order kept).

Bad-data policy (why: corrupt label files must stop a run, while a few unusable notes should not):

* a TSV row that does not have exactly two tab-separated, non-empty fields -> ``DataError`` naming
  the file and line number, always (the label file itself is corrupt; blank lines are ignored);
* a label row for a document that has no text file -> ``on_error="skip"``: skipped and counted in
  the :class:`LoadReport`; ``on_error="raise"``: ``DataError`` naming file, line and id;
* an empty or whitespace-only note -> skipped (with its labels) and counted with ``"skip"``;
  ``DataError`` naming the file with ``"raise"``;
* a text or label file that is not valid UTF-8 -> ``DataError`` naming the file, always (a wrong
  encoding means every note may be garbled, not just one).

Skips are logged (ids only, never note text) and returned by :func:`load_codiesp_with_report`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import datasets

from medcoder.data._common import build_dataset, check_on_error, is_empty_note
from medcoder.data.codes import canonical_code, check_code_type, dedupe
from medcoder.data.report import LoadReport, SplitReport
from medcoder.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

RELEASE_DIRNAME = "final_dataset_v4_to_publish"
TEXT_DIRS = {"es": "text_files", "en": "text_files_en"}
DEFAULT_SPLITS = ("train", "dev", "test")


def _is_release(path: Path) -> bool:
    return (path / "train" / "trainD.tsv").is_file()


def find_release_dir(path: str | Path, *, max_depth: int = 3) -> Path | None:
    """Return the release folder at or below ``path`` (breadth-first, shallow), or None.

    Why search: people point at the release folder, its parent (this repo's ``shared/data``
    copy) or an unzipped download whose top folder name we do not control.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        return None
    if _is_release(path):
        return path
    if _is_release(path / RELEASE_DIRNAME):
        return path / RELEASE_DIRNAME
    frontier = [path]
    for _ in range(max_depth):
        nxt: list[Path] = []
        for folder in frontier:
            for child in sorted(p for p in folder.iterdir() if p.is_dir()):
                if _is_release(child):
                    return child
                nxt.append(child)
        frontier = nxt
    return None


def require_release_dir(root: str | Path, *, key: str | None = None) -> Path:
    """The CodiEsp release folder at ``root`` (or its release subfolder); a one-line ``DataError``
    otherwise, telling the user which folder to point ``key`` at."""
    release = find_release_dir(root, max_depth=0)
    if release is None:
        raise DataError(
            f"{root}: not a CodiEsp release folder (expected train/trainD.tsv in it or in "
            f"{RELEASE_DIRNAME}/ below it)",
            hint=f"point {key + ' ' if key else ''}at the unzipped 'final_dataset_v4_to_publish' folder",
        )
    return release


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid UTF-8 (byte {exc.start})",
            hint="re-encode the file as UTF-8 (the CodiEsp release is UTF-8)",
        ) from exc


def _read_texts(text_dir: Path) -> dict[str, str]:
    if not text_dir.is_dir():
        raise DataError(
            f"{text_dir}: text folder not found",
            hint="check data.root and data.language (en -> text_files_en, es -> text_files)",
        )
    return {p.stem: _read_utf8(p) for p in sorted(text_dir.glob("*.txt"))}


def _read_labels(path: Path) -> list[tuple[int, str, str]]:
    """Parse ``articleID<TAB>code`` rows into ``(line_no, id, raw_code)``; corrupt rows are fatal."""
    if not path.is_file():
        raise DataError(f"{path}: label file not found", hint="check data.root and data.code_type")
    rows = []
    for line_no, line in enumerate(_read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(
                f"{path}:{line_no}: expected 'articleID<TAB>code', got {line!r}",
                hint="the label file is corrupt; restore it from the official release",
            )
        rows.append((line_no, fields[0].strip(), fields[1]))
    return rows


def _load_split(
    release: Path, split: str, language: str, code_type: str, on_error: str
) -> tuple[datasets.Dataset, SplitReport]:
    split_dir = release / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder not found", hint="check data.splits")
    text_dir = split_dir / TEXT_DIRS[language]
    texts = _read_texts(text_dir)
    report = SplitReport()

    empty = sorted(i for i, t in texts.items() if is_empty_note(t))
    if empty and on_error == "raise":
        raise DataError(
            f"{text_dir / (empty[0] + '.txt')}: empty note (id {empty[0]})",
            hint="remove the file, or set data.on_error=skip to skip empty notes",
        )
    report.empty_note_ids = empty
    for doc_id in empty:
        del texts[doc_id]

    label_path = split_dir / f"{split}{code_type}.tsv"
    codes: dict[str, list[str]] = {doc_id: [] for doc_id in texts}
    orphans: set[str] = set()
    for line_no, doc_id, raw in _read_labels(label_path):
        if doc_id not in codes:
            if doc_id in report.empty_note_ids:
                continue  # already counted as an empty note
            if on_error == "raise":
                raise DataError(
                    f"{label_path}:{line_no}: label for id {doc_id!r} has no text file in {text_dir}",
                    hint="add the note, or set data.on_error=skip to skip such labels",
                )
            report.n_labels_without_text += 1
            orphans.add(doc_id)
            continue
        codes[doc_id].append(canonical_code(raw, code_type))

    ids = sorted(codes)
    deduped = [dedupe(codes[i]) for i in ids]
    report.labels_without_text_ids = sorted(orphans)
    report.n_duplicate_labels = sum(len(codes[i]) - len(d) for i, d in zip(ids, deduped, strict=True))
    report.n_docs = len(ids)
    report.n_labels = sum(len(d) for d in deduped)
    report.n_docs_without_codes = sum(1 for d in deduped if not d)
    return build_dataset(ids, [texts[i] for i in ids], deduped), report


def load_codiesp_with_report(
    root: str | Path,
    *,
    language: str = "en",
    code_type: str = "D",
    splits: Sequence[str] = DEFAULT_SPLITS,
    on_error: str = "skip",
) -> tuple[datasets.DatasetDict, LoadReport]:
    """Load CodiEsp and also return what was skipped (see the module docstring for the policy)."""
    if language not in TEXT_DIRS:
        raise ConfigError(
            f"data.language={language!r} is not available in CodiEsp",
            hint=f"use one of {', '.join(TEXT_DIRS)}",
        )
    check_code_type(code_type)
    check_on_error(on_error)
    if isinstance(splits, str):
        splits = (splits,)
    release = require_release_dir(root, key="data.root")
    out = datasets.DatasetDict()
    report = LoadReport()
    for split in splits:
        out[split], report.splits[split] = _load_split(release, split, language, code_type, on_error)
    report.log(f"codiesp[{language},{code_type}]")
    return out, report


def load_codiesp(
    root: str | Path,
    *,
    language: str = "en",
    code_type: str = "D",
    splits: Sequence[str] = DEFAULT_SPLITS,
    on_error: str = "skip",
) -> datasets.DatasetDict:
    """Load CodiEsp as a ``DatasetDict`` of ``{id, text, codes}`` rows per split."""
    data, _ = load_codiesp_with_report(
        root, language=language, code_type=code_type, splits=splits, on_error=on_error
    )
    return data
