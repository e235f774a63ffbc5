"""Synthetic MIMIC-III v1.4 / MIMIC-IV files in the exact published column schemas (never real data).

Patients have 1-3 admissions; codes are drawn from a small skewed pool (so stratification and the
frequency filters have something to do) written without dots, as PhysioNet ships them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

NOTEEVENTS_COLUMNS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME",
                      "CATEGORY", "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
ICD_III_COLUMNS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]
DISCHARGE_COLUMNS = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                     "storetime", "text"]
ICD_IV_COLUMNS = ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]

# raw (undotted) codes; the first ones are frequent
III_DIAG = ["4019", "4280", "42731", "25000", "5849", "486", "E8790", "V5861", "0389", "99592",
            "E9342", "311", "7906", "2720"]
III_PROC = ["3893", "9604", "966", "9671", "3961", "0040", "8856"]
IV_DIAG_10 = ["I10", "E119", "N179", "J189", "Z7901", "F329", "E785", "K219", "R0902", "A419"]
IV_PROC_10 = ["0DTJ4ZZ", "02HV33Z", "5A1955Z", "0BH17EZ", "30233N1"]
IV_DIAG_9 = ["4019", "25000", "E8497", "V4581", "2724"]
IV_PROC_9 = ["3893", "9904", "4513"]

WORDS = ["patient", "admitted", "with", "chest", "pain", "history", "of", "hypertension", "and",
         "diabetes", "discharged", "home", "stable", "follow", "up", "in", "2", "weeks", "bp", "120/80"]


@dataclass
class Truth:
    """What a loader should produce (before frequency filters): hadm -> text, codes, patient."""
    subject: dict[int, int] = field(default_factory=dict)
    text: dict[int, str] = field(default_factory=dict)
    diag: dict[int, list[str]] = field(default_factory=dict)
    proc: dict[int, list[str]] = field(default_factory=dict)
    version: dict[int, int] = field(default_factory=dict)


def _pick(rng: random.Random, pool: list[str], k: int) -> list[str]:
    weights = [1.0 / (i + 1) for i in range(len(pool))]
    out: list[str] = []
    while len(out) < min(k, len(pool)):
        c = rng.choices(pool, weights)[0]
        if c not in out:
            out.append(c)
    return out


def _text(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    # commas, quotes and newlines exercise the CSV quoting, as in the real TEXT column
    return " ".join(words[: n // 2]) + ',\n"quoted", line\n' + " ".join(words[n // 2:])


def write_mimic3(root: Path, *, n_patients: int = 60, seed: int = 0, gz: bool = True) -> Truth:
    """NOTEEVENTS, DIAGNOSES_ICD, PROCEDURES_ICD in ``root``. Some admissions get an addendum
    (later in the file), some have no code, some notes are not discharge summaries."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    truth = Truth()
    notes, addenda, diag_rows, proc_rows = [], [], [], []
    hadm = 100_000
    for subject in range(1, n_patients + 1):
        for _ in range(rng.randint(1, 3)):
            hadm += 1
            report = _text(rng, rng.randint(10, 40))
            notes.append([subject, hadm, "2150-01-01", "", "", "Discharge summary", "Report", "", "", report])
            notes.append([subject, hadm, "2150-01-01", "2150-01-01 10:00:00", "", "Nursing", "Nursing Progress Note",
                          "1", "", "nursing note, not a discharge summary"])
            text = report
            if rng.random() < 0.3:
                add = "ADDENDUM: " + _text(rng, 5)
                addenda.append([subject, hadm, "2150-01-02", "", "", "Discharge summary", "Addendum", "", "", add])
                text = f"{report} {add}"
            if rng.random() < 0.1:  # an admission without any code
                truth.subject[hadm], truth.text[hadm] = subject, text
                truth.diag[hadm], truth.proc[hadm] = [], []
                continue
            diag = _pick(rng, III_DIAG, rng.randint(1, 5))
            proc = _pick(rng, III_PROC, rng.randint(0, 2))
            for seq, c in enumerate(diag, start=1):
                diag_rows.append([subject, hadm, seq, c])
            diag_rows.append([subject, hadm, "", ""])  # a row without a code (exists in v1.4)
            for seq, c in enumerate(proc, start=1):
                proc_rows.append([subject, hadm, seq, c])
            truth.subject[hadm], truth.text[hadm] = subject, text
            truth.diag[hadm], truth.proc[hadm] = diag, proc
    # a radiology report without admission
    notes.append([1, "", "2150-01-01", "", "", "Radiology", "CHEST", "", "", "no admission"])
    rows = notes + addenda
    suffix = ".csv.gz" if gz else ".csv"
    pd.DataFrame([[i + 1, *r] for i, r in enumerate(rows)], columns=NOTEEVENTS_COLUMNS).to_csv(
        root / f"NOTEEVENTS{suffix}", index=False)
    for name, rs in (("DIAGNOSES_ICD", diag_rows), ("PROCEDURES_ICD", proc_rows)):
        pd.DataFrame([[i + 1, *r] for i, r in enumerate(rs)], columns=ICD_III_COLUMNS).to_csv(
            root / f"{name}{suffix}", index=False)
    return truth


def write_mimic4(root: Path, note_root: Path | None = None, *, n_patients: int = 150, seed: int = 0,
                 gz: bool = True) -> Truth:
    """``note/discharge`` (under ``note_root``, default ``root``) and ``hosp/diagnoses_icd``,
    ``hosp/procedures_icd``; each admission is coded in ICD-9 or ICD-10 (``icd_version``)."""
    rng = random.Random(seed)
    note_root = note_root or root
    (root / "hosp").mkdir(parents=True, exist_ok=True)
    (note_root / "note").mkdir(parents=True, exist_ok=True)
    truth = Truth()
    notes, diag_rows, proc_rows = [], [], []
    hadm = 20_000_000
    for subject in range(10_000_001, 10_000_001 + n_patients):
        for _ in range(rng.randint(1, 3)):
            hadm += 1
            version = 10 if rng.random() < 0.6 else 9
            text = _text(rng, rng.randint(10, 40))
            notes.append([f"{subject}-DS-{hadm % 100}", subject, hadm, "DS", 1, "2180-01-01 00:00:00",
                          "2180-01-02 00:00:00", text])
            dpool, ppool = (IV_DIAG_10, IV_PROC_10) if version == 10 else (IV_DIAG_9, IV_PROC_9)
            diag = _pick(rng, dpool, rng.randint(1, 4))
            proc = _pick(rng, ppool, rng.randint(0, 2))
            if hadm % 50 == 0:  # a rare code (fewer than 10 admissions): Edin drop it
                diag.append("Q8909" if version == 10 else "V1005")
            for seq, c in enumerate(diag, start=1):
                diag_rows.append([subject, hadm, seq, c, version])
            for seq, c in enumerate(proc, start=1):
                proc_rows.append([subject, hadm, seq, c, version])
            truth.subject[hadm], truth.text[hadm], truth.version[hadm] = subject, text, version
            truth.diag[hadm], truth.proc[hadm] = diag, proc
    suffix = ".csv.gz" if gz else ".csv"
    pd.DataFrame(notes, columns=DISCHARGE_COLUMNS).to_csv(note_root / "note" / f"discharge{suffix}", index=False)
    pd.DataFrame(diag_rows, columns=ICD_IV_COLUMNS).to_csv(root / "hosp" / f"diagnoses_icd{suffix}", index=False)
    pd.DataFrame(proc_rows, columns=ICD_IV_COLUMNS).to_csv(root / "hosp" / f"procedures_icd{suffix}", index=False)
    return truth
