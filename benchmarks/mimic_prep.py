"""MIMIC-IV preparation on a synthetic MIMIC-IV-sized input: wall time and peak RSS.

Generates ``--notes`` discharge notes of ~``--note-kb`` KB of random words (published
``note/discharge.csv.gz`` schema) plus ``hosp/diagnoses_icd.csv.gz`` / ``procedures_icd.csv.gz``
(~12 diagnoses, ~2 procedures per admission, ICD-9 and ICD-10 admissions mixed, ~2,000 codes per
version with a Zipf-like frequency) in a temp dir, runs ``prepare_mimic`` for
``mimiciv_icd10`` in a child process (so its peak RSS is its own) and deletes everything.

    nice -n 19 .venv/bin/python benchmarks/mimic_prep.py --notes 120000 --note-kb 1.5

Never real data. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_VOCAB = ("patient admitted with chest pain history of hypertension and diabetes mellitus "
          "discharged home stable follow up in weeks blood pressure was normal creatinine "
          "elevated given aspirin metoprolol lisinopril insulin heparin no acute distress "
          "renal failure pneumonia sepsis cough fever")
WORDS = np.array(_VOCAB.split(" "))


def generate(root: Path, n_notes: int, note_kb: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "note").mkdir(parents=True)
    (root / "hosp").mkdir(parents=True)
    n_words = max(1, int(note_kb * 1024 / 7))
    n_codes = 2000
    zipf = 1.0 / np.arange(1, n_codes + 1)
    zipf /= zipf.sum()
    with gzip.open(root / "note" / "discharge.csv.gz", "wt", compresslevel=1, newline="") as notes, \
            gzip.open(root / "hosp" / "diagnoses_icd.csv.gz", "wt", compresslevel=1) as diag, \
            gzip.open(root / "hosp" / "procedures_icd.csv.gz", "wt", compresslevel=1) as proc:
        notes.write("note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text\n")
        diag.write("subject_id,hadm_id,seq_num,icd_code,icd_version\n")
        proc.write("subject_id,hadm_id,seq_num,icd_code,icd_version\n")
        subject = 10_000_000
        for i in range(n_notes):
            if rng.random() < 0.55:  # ~1.8 admissions per patient
                subject += 1
            hadm = 20_000_000 + i
            words = WORDS[rng.integers(0, len(WORDS), n_words)]
            text = " ".join(words[: n_words // 2]) + ",\n" + " ".join(words[n_words // 2:])
            notes.write(f'{subject}-DS-{i},{subject},{hadm},DS,1,2180-01-01 00:00:00,2180-01-02 00:00:00,"{text}"\n')
            version = 10 if rng.random() < 0.45 else 9
            for seq, c in enumerate(np.unique(rng.choice(n_codes, rng.integers(4, 20), p=zipf)), start=1):
                code = f"E{c:04d}" if version == 10 else f"{c:04d}"
                diag.write(f"{subject},{hadm},{seq},{code},{version}\n")
            for seq, c in enumerate(np.unique(rng.choice(200, rng.integers(0, 4))), start=1):
                code = f"0D{c:03d}ZZ" if version == 10 else f"{c:03d}1"
                proc.write(f"{subject},{hadm},{seq},{code},{version}\n")


def child(root: str, cache: str) -> None:
    from medcoder.data.mimic import load_mimic

    t0 = time.perf_counter()
    dd = load_mimic(root, variant="mimiciv_icd10", cache_dir=cache)
    prep = time.perf_counter() - t0
    t1 = time.perf_counter()
    load_mimic(root, variant="mimiciv_icd10", cache_dir=cache)
    reuse = time.perf_counter() - t1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"prep_s": round(prep, 1), "cached_reload_s": round(reuse, 2),
                      "rows": {k: len(v) for k, v in dd.items()},
                      "codes": len({c for v in dd.values() for cs in v["codes"] for c in cs}),
                      "child_peak_rss_mb": round(peak_mb)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=120_000)
    parser.add_argument("--note-kb", type=float, default=1.5)
    parser.add_argument("--workdir", default=None, help="parent folder of the temp data (default: system temp)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(tempfile.mkdtemp(prefix="medcoder-mimic-bench-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        generate(work / "mimiciv", args.notes, args.note_kb)
        gen_s = time.perf_counter() - t0
        sizes = {p.name: p.stat().st_size for p in (work / "mimiciv").rglob("*.csv.gz")}
        with gzip.open(work / "mimiciv" / "note" / "discharge.csv.gz", "rb") as fh:
            raw_notes = sum(len(b) for b in iter(lambda: fh.read(1 << 20), b""))
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
        out = subprocess.run([sys.executable, __file__, "--child", str(work / "mimiciv"), str(work / "cache")],
                             check=True, capture_output=True, text=True, env=env)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        cache_mb = sum(p.stat().st_size for p in (work / "cache").rglob("*") if p.is_file()) / 2**20
        print(json.dumps({
            "notes": args.notes, "note_kb": args.note_kb, "generate_s": round(gen_s, 1),
            "input_gz_mb": {k: round(v / 2**20, 1) for k, v in sizes.items()},
            "discharge_csv_uncompressed_mb": round(raw_notes / 2**20),
            **result, "children_peak_rss_mb": round(children), "cache_mb": round(cache_mb),
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
