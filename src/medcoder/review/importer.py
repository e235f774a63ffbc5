"""Import of a predictions file (``scripts/predict.py``'s JSONL) and its notes into the store.

Why it is strict: the queue is the team's work list and the events are the audit trail, so a
half-imported file, a note whose text changed since it was scored, or two bundles' predictions
in one queue would each corrupt them silently. So:

* the whole file is parsed and checked before the database is touched: a broken line is a
  :class:`~medcoder.errors.DataError` naming ``file:line`` and nothing is imported;
* each note's text must hash to the prediction's ``input_sha256`` (for a note the model read in
  part, flagged ``truncated``, a prefix of the text must);
* notes are keyed by ``(bundle_id, note id)``, so another bundle's predictions of the same notes
  form their own queue; a file holds one bundle;
* one transaction writes everything; a note already present with the same ``input_sha256`` and
  policy is left as it is (re-importing the same file changes nothing), one present with other
  text is refused;
* rows are written in bulk (``executemany`` in chunks): 100,000 notes in well under a minute;
* the blind audit sample and the double-review draw (:mod:`medcoder.review.audit`) are drawn over
  the newly imported notes and recorded in the same transaction, so re-importing a file draws
  nothing new.

Messages name the file, line, field and note id, never note text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from medcoder.data.tabular import iter_unlabeled
from medcoder.errors import DataError
from medcoder.review import models as m
from medcoder.review.audit import AuditPlan, draw_indices, n_to_draw, twin_id, write_draw
from medcoder.review.codes import normalise_code

__all__ = ["ImportWrite", "ParsedNote", "note_key", "read_notes", "read_predictions", "write_import"]

DECISIONS = ("auto_accept", "human_review")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 5000
_REQUIRED = ("id", "codes", "bundle_id", "codeset_fy", "policy_version", "input_sha256")


def note_key(bundle_id: str, note_id: str) -> str:
    """The stable key of a note in one bundle's queue (URL-safe; the same on every import)."""
    return hashlib.sha256(f"{bundle_id}\x00{note_id}".encode()).hexdigest()[:24]


@dataclass
class ParsedNote:
    """One checked prediction line (codes normalised to the dotted spelling)."""

    line: int
    note_id: str
    bundle_id: str
    codeset_fy: int | None
    policy_version: str
    input_sha256: str
    document_decision: str
    document_reasons: list[str]
    timestamp: str
    truncated: bool
    codes: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""
    audit: bool = False
    review_round: int = 1
    twin_of: str | None = None

    @property
    def key(self) -> str:
        return note_key(self.bundle_id, self.note_id)


def _str_list(value: Any, where: str, name: str) -> list[str]:
    if value is None:
        return []
    if type(value) is not list or not all(type(v) is str and "\x00" not in v for v in value):
        raise DataError(f"{where}: {name} must be a list of strings")
    return value


def _ident(value: Any, where: str, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: {name} must be a string")
    value = str(value)
    if not value or len(value) > m.ID_LEN or any(ord(ch) < 32 for ch in value):
        raise DataError(f"{where}: {name} must be 1-{m.ID_LEN} printable characters")
    return value


def _is_int(value: Any) -> bool:
    return type(value) is int  # noqa: E721 - bool (a subclass) is not an offset


def _evidence(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if type(value) is not list:
        raise DataError(f"{where}: evidence must be a list of {{start, end, weight, source}}")
    for span in value:
        if type(span) is not dict:
            raise DataError(f"{where}: evidence spans must be objects")
        start, end = span.get("start"), span.get("end")
        if not (_is_int(start) and _is_int(end) and 0 <= start <= end):
            raise DataError(f"{where}: evidence spans need integer 0 <= start <= end")
    return value


def _code(raw: Any, where: str) -> dict[str, Any]:
    if type(raw) is not dict:
        raise DataError(f"{where}: each entry of codes must be an object")
    try:
        code = normalise_code(raw.get("code"))
    except ValueError as exc:
        raise DataError(f"{where}: a code is {exc}") from None
    p = raw.get("probability")
    if type(p) not in (int, float) or not 0 <= p <= 1:  # NaN fails the comparison too
        raise DataError(f"{where}: code {code}: probability must be a number in [0, 1]")
    decision = raw.get("decision")
    if decision not in DECISIONS:
        raise DataError(f"{where}: code {code}: decision must be one of {', '.join(DECISIONS)}")
    desc = raw.get("description") or ""
    if type(desc) is not str or "\x00" in desc:
        raise DataError(f"{where}: code {code}: description must be a string")
    return {
        "code": code, "description": desc, "probability": float(p), "decision": decision,
        "reasons": _str_list(raw.get("reasons"), where, "reasons"),
        "evidence": _evidence(raw.get("evidence"), where),
        "sources": _str_list(raw.get("sources"), where, "sources"),
    }


def _parse_line(obj: Any, where: str, line: int) -> ParsedNote:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: a prediction must be a JSON object")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}",
                        hint="is this a predictions file written by scripts/predict.py?")
    note_id = _ident(obj["id"], where, "id")
    fy = obj["codeset_fy"]
    if fy is not None and (isinstance(fy, bool) or not isinstance(fy, int)):
        raise DataError(f"{where}: codeset_fy must be a year or null")
    sha = obj["input_sha256"]
    if not isinstance(sha, str) or not _SHA.match(sha):
        raise DataError(f"{where}: input_sha256 must be 64 lower-case hex digits")
    policy = obj["policy_version"]
    if policy is None:
        policy = ""
    if not isinstance(policy, str) or len(policy) > m.ID_LEN:
        raise DataError(f"{where}: policy_version must be a string")
    if not isinstance(obj["codes"], list):
        raise DataError(f"{where}: codes must be a list")
    codes = [_code(c, where) for c in obj["codes"]]
    seen: set[str] = set()
    for c in codes:
        if c["code"] in seen:
            raise DataError(f"{where}: code {c['code']} appears twice")
        seen.add(c["code"])
    decision = obj.get("document_decision") or ""
    timestamp = obj.get("timestamp") or ""
    if not isinstance(decision, str) or not isinstance(timestamp, str):
        raise DataError(f"{where}: document_decision and timestamp must be strings")
    return ParsedNote(
        line=line, note_id=note_id, bundle_id=_ident(obj["bundle_id"], where, "bundle_id"),
        codeset_fy=fy, policy_version=policy, input_sha256=sha, document_decision=decision[:32],
        document_reasons=_str_list(obj.get("document_reasons"), where, "document_reasons"),
        timestamp=timestamp[:64], truncated=bool(obj.get("truncated", False)), codes=codes,
    )


def read_predictions(path: Path) -> list[ParsedNote]:
    """Every prediction of ``path``, checked; the first bad line raises ``DataError(file:line)``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such predictions file", hint="give the output= of scripts/predict.py")
    out: list[ParsedNote] = []
    first: dict[str, int] = {}
    with path.open("rb") as fh:
        for line, raw in enumerate(fh, 1):
            where = f"{path}:{line}"
            try:
                decoded = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{where}: not UTF-8", hint="the file may be damaged") from None
            if not decoded.strip():
                continue
            if "\x00" in decoded or "\\u0000" in decoded:  # no field may hold NUL (PostgreSQL text)
                raise DataError(f"{where}: contains a NUL character", hint="the file may be damaged")
            try:
                obj = json.loads(decoded)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})",
                                hint="the file may be truncated or damaged; nothing was imported") from None
            note = _parse_line(obj, where, line)
            if out and note.bundle_id != out[0].bundle_id:
                raise DataError(f"{where}: bundle_id {note.bundle_id} differs from line {out[0].line}'s "
                                f"{out[0].bundle_id}", hint="import one bundle's predictions per file")
            if note.codeset_fy != (out[0].codeset_fy if out else note.codeset_fy):
                raise DataError(f"{where}: codeset_fy {note.codeset_fy} differs from line {out[0].line}'s "
                                f"{out[0].codeset_fy}", hint="one bundle has one code-set year")
            if note.note_id in first:
                raise DataError(f"{where}: note id {note.note_id} already on line {first[note.note_id]}",
                                hint="ids must be unique within a predictions file")
            first[note.note_id] = line
            out.append(note)
    if not out:
        raise DataError(f"{path}: no predictions in the file")
    return out


def _safe_file_name(note_id: str) -> bool:
    return note_id not in (".", "..") and not any(ch in note_id for ch in "/\\\x00")


def read_notes(parsed: list[ParsedNote], notes: Path | Mapping[str, str], predictions: Path) -> None:
    """Attach each note's text (a folder of ``<id>.txt``, a JSONL/CSV notes file, or a mapping)
    and check it against ``input_sha256``."""
    texts: Mapping[str, str]
    if isinstance(notes, Mapping):
        texts, where_of = notes, "the notes given"
    else:
        notes = Path(notes)
        where_of = str(notes)
        if notes.is_file() and notes.suffix.lower() in (".jsonl", ".csv"):
            fmt = notes.suffix.lower()[1:]
            texts = {doc_id: text for _, doc_id, text in iter_unlabeled(notes, format=fmt)}
        elif notes.is_dir():
            texts = _FolderTexts(notes)
        else:
            raise DataError(f"{notes}: no such notes folder or .jsonl/.csv file",
                            hint="give the input= that was passed to scripts/predict.py")
    for note in parsed:
        where = f"{predictions}:{note.line}"
        try:
            text = texts[note.note_id]
        except KeyError:
            raise DataError(f"{where}: no text for note id {note.note_id} in {where_of}",
                            hint="give the same notes that were predicted") from None
        if not isinstance(text, str):
            raise DataError(f"{where}: the text of note id {note.note_id} is not a string")
        if "\x00" in text:  # PostgreSQL text cannot hold it; no clinical note needs it
            raise DataError(f"{where}: the text of note id {note.note_id} contains a NUL character",
                            hint="remove NUL bytes from the note (and predict it again)")
        if not _matches(text, note.input_sha256, note.truncated):
            raise DataError(f"{where}: the text of note id {note.note_id} in {where_of} does not match "
                            "its input_sha256", hint="the note changed since it was predicted, or the "
                                                     "notes are not the ones predicted; nothing was imported")
        note.text = text


class _FolderTexts(Mapping[str, str]):
    """``<id>.txt`` files of a folder, read the way batch prediction reads them (UTF-8 with an
    optional BOM, universal newlines)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __getitem__(self, note_id: str) -> str:
        if not _safe_file_name(note_id):
            raise KeyError(note_id)
        path = self.folder / f"{note_id}.txt"
        try:
            with path.open(encoding="utf-8-sig") as fh:
                return fh.read()
        except FileNotFoundError:
            raise KeyError(note_id) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the note ({type(exc).__name__})") from None

    def __iter__(self) -> Iterator[str]:
        return (p.stem for p in self.folder.glob("*.txt"))

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.txt"))


def _matches(text: str, sha: str, truncated: bool) -> bool:
    """``sha`` is the text's sha256, or (for a note read in part) the sha256 of a prefix."""
    data = text.encode("utf-8")
    if hashlib.sha256(data).hexdigest() == sha:
        return True
    if not truncated:
        return False
    h = hashlib.sha256()
    for ch in text:
        h.update(ch.encode("utf-8"))
        if h.hexdigest() == sha:
            return True
    return False


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ImportWrite:
    """What :func:`write_import` wrote: the new (first-round) notes, how many were present
    unchanged, and how many notes were drawn for audit and for a second review."""

    new: list[ParsedNote]
    unchanged: int
    n_audit: int = 0
    n_double: int = 0


def _draw(parsed: list[ParsedNote], new: list[ParsedNote], present: Mapping[str, Any], plan: AuditPlan,
          file_sha: str) -> tuple[list[ParsedNote], list[ParsedNote], int, int]:
    """Mark the audit sample on ``new`` and build the second-review twins; returns the audited
    notes, the twins and the two eligible counts."""
    for note in new:  # a retried transaction draws again from scratch
        note.audit = False
    eligible = [note for note in new if any(c["decision"] == "auto_accept" for c in note.codes)]
    picked = draw_indices(len(eligible), n_to_draw(plan.audit_rate, len(eligible), plan.min_audit),
                          seed=plan.audit_seed, file_sha256=file_sha, kind="audit")
    audited = [eligible[i] for i in picked]
    for note in audited:
        note.audit = True
    taken = set(present) | {note.note_id for note in parsed}
    double = [note for note in new if any(c["decision"] == "human_review" for c in note.codes)
              and twin_id(note.note_id) not in taken and len(twin_id(note.note_id)) <= m.ID_LEN]
    picked = draw_indices(len(double), n_to_draw(plan.double_review_rate, len(double), 0),
                          seed=plan.audit_seed, file_sha256=file_sha, kind="double")
    twins = [dataclasses.replace(double[i], note_id=twin_id(double[i].note_id), audit=False, review_round=2,
                                 twin_of=double[i].key) for i in picked]
    return audited, twins, len(eligible), len(double)


def write_import(conn: Connection, parsed: list[ParsedNote], *, predictions: Path, now: datetime,
                 for_update: bool, plan: AuditPlan | None = None) -> ImportWrite:
    """Write the notes of ``parsed`` that are not in the store yet (one transaction, the
    caller's), with the audit and double-review draws of ``plan`` (none when None)."""
    first = parsed[0]
    bundle_id = first.bundle_id
    stmt = select(m.bundles.c.codeset_fy).where(m.bundles.c.bundle_id == bundle_id)
    if for_update:
        stmt = stmt.with_for_update()
    existing_fy = conn.execute(stmt).first()
    if existing_fy is not None and existing_fy[0] != first.codeset_fy:
        raise DataError(f"{predictions}:{first.line}: bundle {bundle_id} is in the store with codeset_fy "
                        f"{existing_fy[0]}, this file says {first.codeset_fy}",
                        hint="a bundle has one code-set year; re-export the bundle under a new id")
    present = {
        row.note_id: (row.input_sha256, row.policy_version)
        for row in conn.execute(select(m.notes.c.note_id, m.notes.c.input_sha256, m.notes.c.policy_version)
                                .where(m.notes.c.bundle_id == bundle_id))
    }
    new: list[ParsedNote] = []
    unchanged = 0
    for note in parsed:
        old = present.get(note.note_id)
        if old is None:
            new.append(note)
        elif old == (note.input_sha256, note.policy_version):
            unchanged += 1
        else:
            raise DataError(f"{predictions}:{note.line}: note id {note.note_id} of bundle {bundle_id} is "
                            "already in the store with another input_sha256 or policy_version",
                            hint="a note predicted again from new text needs its own id; nothing was imported")
    if not new:
        return ImportWrite(new, unchanged)
    plan = plan or AuditPlan(audit_rate=0.0)
    file_sha = file_sha256(predictions)
    audited, twins, n_eligible, n_double_eligible = _draw(parsed, new, present, plan, file_sha)
    if existing_fy is None:
        conn.execute(insert(m.bundles).values(bundle_id=bundle_id, codeset_fy=first.codeset_fy, created_at=now))
    import_id = conn.execute(insert(m.imports).values(
        bundle_id=bundle_id, file_name=str(Path(predictions).resolve())[:4000],
        file_sha256=file_sha, at=now,
        n_notes=len(parsed), n_imported=len(new),
    )).inserted_primary_key[0]
    rows = new + twins
    for start in range(0, len(rows), _CHUNK):
        _write_chunk(conn, rows[start:start + _CHUNK], import_id)
    write_draw(conn, import_id=import_id, bundle_id=bundle_id, kind="audit", plan=plan, n_eligible=n_eligible,
               note_keys=[note.key for note in audited], now=now)
    write_draw(conn, import_id=import_id, bundle_id=bundle_id, kind="double", plan=plan,
               n_eligible=n_double_eligible, note_keys=[note.twin_of or "" for note in twins], now=now)
    if conn.dialect.name == "postgresql":
        # fresh statistics for the queue's planner (a sample: ~1 s at 100,000 notes), in this
        # transaction, so the first queue page after an import does not wait for autovacuum;
        # without them PostgreSQL guesses a broad filter rare and reads all of it (see .queue)
        conn.exec_driver_sql(f"ANALYZE {m.notes.name}, {m.note_codes.name}, {m.note_reasons.name}")
    return ImportWrite(new, unchanged, len(audited), len(twins))


_NOTE_COLUMNS = (
    "note_key", "bundle_id", "note_id", "import_id", "codeset_fy", "policy_version", "input_sha256", "text",
    "codes_json", "document_decision", "predicted_at", "truncated", "n_codes", "n_routed", "status", "version",
    "n_decided", "audit", "review_round", "twin_of",
)
_CODE_COLUMNS = ("note_key", "code", "decision", "probability")
_REASON_COLUMNS = ("note_key", "reason")


def _executemany(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """The driver's own ``executemany``: at 100,000 notes SQLAlchemy's per-row parameter
    processing costs as much as SQLite's writing (every value here is already a plain str, int,
    float or bool)."""
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})",
                         rows)


def _write_chunk(conn: Connection, chunk: list[ParsedNote], import_id: int) -> None:
    note_rows, code_rows, reason_rows = [], [], []
    for note in chunk:
        key = note.key
        routed = [c for c in note.codes if c["decision"] == "human_review"]
        note_rows.append((
            key, note.bundle_id, note.note_id, import_id, note.codeset_fy, note.policy_version, note.input_sha256,
            note.text, json.dumps(note.codes, separators=(",", ":")), note.document_decision, note.timestamp,
            note.truncated, len(note.codes), len(routed), "open", 0, 0, note.audit, note.review_round,
            note.twin_of,
        ))
        code_rows.extend((key, c["code"], c["decision"], c["probability"]) for c in note.codes)
        reasons = {r[:64] for c in routed for r in c["reasons"]} | {r[:64] for r in note.document_reasons}
        reason_rows.extend((key, r) for r in sorted(reasons))
    _executemany(conn, m.notes.name, _NOTE_COLUMNS, note_rows)
    _executemany(conn, m.note_codes.name, _CODE_COLUMNS, code_rows)
    _executemany(conn, m.note_reasons.name, _REASON_COLUMNS, reason_rows)
