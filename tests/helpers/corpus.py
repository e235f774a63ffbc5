"""A tiny synthetic corpus whose codes a model can learn (each code has trigger words)."""

from __future__ import annotations

import json
import random
from pathlib import Path

# Each synthetic code has trigger words; notes mention the triggers of their codes, so a model can
# learn the task (and a test can check it learned something).
TOPICS = {
    "E11.9": "diabetes glucose insulin metformin",
    "I10": "hypertension blood pressure amlodipine",
    "J18.9": "pneumonia cough fever consolidation",
    "N39.0": "urinary infection dysuria nitrites",
    "R51": "headache migraine pain head",
    "K35.80": "appendicitis abdominal pain appendix",
}


def _note(rng: random.Random, codes: list[str], n_words: int) -> str:
    filler = ["patient", "was", "seen", "in", "clinic", "and", "examined", "today", "with", "stable", "vitals"]
    words = []
    for code in codes:
        words += TOPICS[code].split()
    while len(words) < n_words:
        words.append(rng.choice(filler))
    rng.shuffle(words)
    return " ".join(words) + "."


def write_corpus(folder: Path, n_train: int = 24, n_dev: int = 12, n_test: int = 12, seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        rows = []
        for i in range(n):
            codes = rng.sample(sorted(TOPICS), k=rng.randint(1, 2))
            rows.append({"id": f"{split}-{i}", "text": _note(rng, codes, rng.randint(20, 90)), "codes": codes})
        path = folder / f"{split}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        paths[split] = str(path)
    return paths


def write_noisy_corpus(folder: Path, n_train: int = 60, n_dev: int = 120, n_test: int = 16, seed: int = 3,
                       keep: float = 0.5, distract: float = 0.5) -> dict[str, str]:
    """Like :func:`write_corpus`, but a model cannot be sure: each code's trigger words appear with
    probability ``keep`` (at least one), and with probability ``distract`` the note also holds one
    trigger word of a code it does not have. Why: on :func:`write_corpus`'s notes a fused coder's
    calibrated probabilities saturate at 1.0, so a certified τ sits at 1.0 and says little; here τ
    falls inside the score range, where a routing difference would show."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    filler = ["patient", "was", "seen", "in", "clinic", "and", "examined", "today", "with", "stable", "vitals"]
    paths = {}
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        rows = []
        for i in range(n):
            codes = rng.sample(sorted(TOPICS), k=rng.randint(1, 2))
            words: list[str] = []
            for code in codes:
                triggers = TOPICS[code].split()
                words += [w for w in triggers if rng.random() < keep] or [rng.choice(triggers)]
            if rng.random() < distract:
                other = rng.choice([c for c in sorted(TOPICS) if c not in codes])
                words.append(rng.choice(TOPICS[other].split()))
            length = rng.randint(20, 60)
            while len(words) < length:
                words.append(rng.choice(filler))
            rng.shuffle(words)
            rows.append({"id": f"{split}-{i}", "text": " ".join(words) + ".", "codes": codes})
        path = folder / f"{split}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        paths[split] = str(path)
    return paths
