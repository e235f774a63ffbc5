"""The dictionary view on real CodiEsp (Spanish diagnoses): train spans -> dev MAP above a floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcoder.data import LabelSpace, load_codiesp
from medcoder.data.mentions import load_codiesp_mentions
from medcoder.evaluation.metrics import codiesp_map
from medcoder.modeling.dictionary import DictionaryScorer

pytestmark = pytest.mark.integration

RELEASE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "codiesp" / "final_dataset_v4_to_publish"
if not RELEASE.is_dir():
    pytest.skip(f"CodiEsp corpus not present at {RELEASE}", allow_module_level=True)

# Measured 2026-11-28 (benchmarks/dictionary_probe.py, 5-fold cross-fit): dev MAP 0.536.
DEV_MAP_FLOOR = 0.50


def test_dictionary_es_d_train_to_dev():
    splits = load_codiesp(RELEASE, language="es", code_type="D", splits=("train", "dev"))
    train, dev = splits["train"], splits["dev"]
    space = LabelSpace.from_codes(train["codes"], min_count=1)
    by_doc = load_codiesp_mentions(RELEASE, "train", "D")  # train spans only
    scorer = DictionaryScorer().fit(
        train["text"], space.encode(train["codes"]), space.codes,
        mentions=[by_doc.get(i, []) for i in train["id"]],
    )
    out = scorer.score(dev["text"], evidence=True)
    dev_map = codiesp_map(out.scores, space.codes, dev["codes"])
    assert dev_map > DEV_MAP_FLOOR, dev_map
    # evidence spans are exact offsets into the notes, on word boundaries
    text = dev["text"][0]
    spans = [s for per_code in out.evidence[0].values() for s in per_code]
    assert spans and all(0 <= s["start"] < s["end"] <= len(text) for s in spans)
    assert all(text[s["start"]].isalnum() and text[s["end"] - 1].isalnum() for s in spans)
    assert out.flags["hit"].any() and (out.flags["negated"] <= out.flags["hit"]).all()
