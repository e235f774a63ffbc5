"""CodiEsp-X mention spans: ``{split}/{split}X.tsv`` -> ``{doc_id: [Mention, ...]}``.

Row format (headerless, tab-separated, five fields)::

    articleID  DIAGNOSTICO|PROCEDIMIENTO  code  mention text  "start end[;start end ...]"

Offsets are character offsets into the *Spanish* note ``{split}/text_files/{articleID}.txt``
(the English machine translations have no spans). A discontinuous mention ("Estreptomicina ...
intramuscular": ``2787 2801;2810 2823``) becomes one :class:`Mention` with ``start`` = the first
fragment's start, ``end`` = the last fragment's end, and every fragment kept in ``fragments``.

Honesty contract (../shared/DESIGN.md): only the *train* split's spans may be fitted on; the dev
and test spans exist for evaluation (span-level checks, evidence audits), never for fitting.

Bad data: a row without five non-empty fields, with an unknown label, or with a span that is not
``int int`` pairs with ``0 <= start <= end`` -> ``DataError`` naming the file and line (the file
is corrupt; restore it from the release). Empty fragments (``1320 1320``; the train release has a
few) are dropped; a mention with no non-empty fragment is an error. Blank lines are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medcoder.data.codes import canonical_code, check_code_type
from medcoder.data.codiesp import _read_utf8, require_release_dir
from medcoder.errors import ConfigError, DataError

__all__ = ["KINDS", "Mention", "load_codiesp_mentions", "parse_spans"]

#: CodiEsp-X label -> medcoder code type.
KINDS = {"DIAGNOSTICO": "D", "PROCEDIMIENTO": "P"}


@dataclass(frozen=True)
class Mention:
    """One annotated mention: ``[start, end)`` in the Spanish note, its (normalised) code.

    ``kind`` is ``"D"`` or ``"P"``; ``text`` is the annotated surface string as the TSV gives it
    (fragments of a discontinuous mention joined by a space); ``fragments`` the ``(start, end)``
    pieces (one for a contiguous mention).
    """

    start: int
    end: int
    code: str
    kind: str
    text: str = ""
    fragments: tuple[tuple[int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.fragments:
            object.__setattr__(self, "fragments", ((self.start, self.end),))


def parse_spans(value: str) -> tuple[tuple[int, int], ...]:
    """``"s e"`` or ``"s e;s e"`` -> ``((s, e), ...)``; raises ``ValueError`` when malformed."""
    out = []
    for piece in value.strip().strip('"').split(";"):
        parts = piece.split()
        if len(parts) != 2:
            raise ValueError(f"span {piece!r} is not 'start end'")
        start, end = int(parts[0]), int(parts[1])
        if not 0 <= start <= end:
            raise ValueError(f"span {piece!r} has start > end or a negative offset")
        if start < end:  # the release has a few empty fragments ("1320 1320"): dropped
            out.append((start, end))
    if not out:
        raise ValueError("no non-empty span")
    return tuple(out)


def _release(root: str | Path) -> Path:
    return require_release_dir(root)


def read_mentions_file(path: str | Path, code_type: str | None = None) -> dict[str, list[Mention]]:
    """Parse one CodiEsp-X file (see the module docstring); ``code_type`` None keeps D and P."""
    path = Path(path)
    check_code_type(code_type, allow_none=True)
    if not path.is_file():
        raise DataError(f"{path}: mention file not found", hint="check the CodiEsp root and split")
    out: dict[str, list[Mention]] = {}
    for line_no, line in enumerate(_read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 5 or not all(f.strip() for f in fields):
            raise DataError(
                f"{path}:{line_no}: expected 5 tab-separated fields 'articleID, label, code, "
                f"text, spans', got {len(fields)} in {line[:120]!r}",
                hint="the mention file is corrupt; restore it from the official release",
            )
        doc_id, label, raw_code, text, spans = (f.strip() for f in fields)
        kind = KINDS.get(label.upper())
        if kind is None:
            raise DataError(
                f"{path}:{line_no}: label {label!r} is neither DIAGNOSTICO nor PROCEDIMIENTO",
                hint="the mention file is corrupt; restore it from the official release",
            )
        try:
            fragments = parse_spans(spans)
        except ValueError as exc:
            raise DataError(
                f"{path}:{line_no}: bad span field {spans!r} ({exc})",
                hint="spans are 'start end' or 'start end;start end' character offsets",
            ) from exc
        if code_type is not None and kind != code_type:
            continue
        out.setdefault(doc_id, []).append(
            Mention(
                start=fragments[0][0],
                end=fragments[-1][1],
                code=canonical_code(raw_code, kind),
                kind=kind,
                text=text,
                fragments=fragments,
            )
        )
    return out


def load_codiesp_mentions(
    root: str | Path, split: str, code_type: str | None = "D"
) -> dict[str, list[Mention]]:
    """The mentions of one CodiEsp split, ``{doc_id: [Mention, ...]}`` in file order.

    ``root``: the release folder (as for :func:`medcoder.data.load_codiesp`); ``code_type``:
    ``"D"``, ``"P"`` or None for both. Fit only on ``split="train"``.
    """
    if not isinstance(split, str) or not split:
        raise ConfigError(f"split={split!r} is not a split name", hint="use train, dev or test")
    return read_mentions_file(_release(root) / split / f"{split}X.tsv", code_type)
