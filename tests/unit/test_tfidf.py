"""The "tfidf" view (TF-IDF + dual ridge): learns trigger words, round-trips without pickle."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medcoder.data import LabelSpace
from medcoder.errors import BundleError
from medcoder.modeling.scorer import Scores
from medcoder.modeling.tfidf import ARRAYS_FILE, CONFIG_FILE, VOCAB_FILE, TfidfScorer
from medcoder.modeling.views import SCORERS

from ..helpers.corpus import TOPICS

ANALYZERS = [{"analyzer": "char_wb", "ngram_range": (3, 5)}, {"analyzer": "word", "ngram_range": (1, 2)}]


@pytest.fixture(scope="module")
def splits(tiny_corpus: dict[str, str]) -> dict:
    out = {}
    for name, path in tiny_corpus.items():
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
        out[name] = {"text": [r["text"] for r in rows], "codes": [r["codes"] for r in rows]}
    return out


@pytest.fixture(scope="module")
def space(splits: dict) -> LabelSpace:
    return LabelSpace.from_codes(splits["train"]["codes"])


def _fit(splits: dict, space: LabelSpace, **params) -> TfidfScorer:
    train = splits["train"]
    return TfidfScorer(min_df=1, **params).fit(list(train["text"]), space.encode(train["codes"]), space.codes)


@pytest.mark.parametrize("params", ANALYZERS, ids=lambda p: p["analyzer"])
def test_learns_trigger_words(splits: dict, space: LabelSpace, params: dict) -> None:
    scorer = _fit(splits, space, **params)
    # one note per code made of its trigger words only: its own code must score highest there
    codes = sorted(TOPICS)
    scores = scorer.score([TOPICS[c] for c in codes]).scores
    for row, code in enumerate(codes):
        col = space.index[code]
        assert int(np.argmax(scores[:, col])) == row, f"{code} scores highest on another note"
        assert int(np.argmax(scores[row])) == col, f"the note of {code} ranks another code first"
    if params["analyzer"] != "char_wb":
        return
    # and (default features) held-out notes, triggers among filler words, rank their gold codes first
    dev = splits["dev"]
    dev_scores = scorer.score(list(dev["text"])).scores
    hits = [
        {space.codes[c] for c in np.argsort(-dev_scores[row])[: len(gold)]} == set(gold)
        for row, gold in enumerate(dev["codes"])
    ]
    assert np.mean(hits) >= 0.9, hits


def test_registered_and_scores_follow_the_codes(splits: dict, space: LabelSpace) -> None:
    assert SCORERS["tfidf"] is TfidfScorer
    codes = list(reversed(space.codes))  # any order the caller gives is the column order
    train = splits["train"]
    scorer = TfidfScorer(min_df=1).fit(list(train["text"]), LabelSpace(codes).encode(train["codes"]), codes)
    out = scorer.score(list(splits["test"]["text"]))
    assert isinstance(out, Scores) and out.evidence is None
    assert out.scores.shape == (len(splits["test"]["text"]), len(codes)) and out.scores.dtype == np.float32
    assert scorer.codes == codes
    note = TOPICS["I10"]
    assert int(np.argmax(scorer.score([note]).scores[0])) == codes.index("I10")


@pytest.mark.parametrize("params", ANALYZERS, ids=lambda p: p["analyzer"])
def test_save_load_round_trip_is_exact_and_pickle_free(
    splits: dict, space: LabelSpace, params: dict, tmp_path: Path
) -> None:
    scorer = _fit(splits, space, **params, alpha=0.05, evidence_top_k=3)
    texts = list(splits["test"]["text"]) + ["", "Ünïcödé — 糖尿病 😀 diabetes"]
    before = scorer.score(texts, evidence=True)
    scorer.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {CONFIG_FILE, VOCAB_FILE, ARRAYS_FILE}
    # plain JSON + an npz of plain arrays: readable without pickle
    json.loads((tmp_path / CONFIG_FILE).read_text(encoding="utf-8"))
    assert isinstance(json.loads((tmp_path / VOCAB_FILE).read_text(encoding="utf-8")), list)
    with np.load(tmp_path / ARRAYS_FILE, allow_pickle=False) as npz:
        for key in npz.files:
            assert npz[key].dtype != object
        assert npz["dual_coef"].dtype == np.float32 and npz["idf"].dtype == np.float32
    with zipfile.ZipFile(tmp_path / ARRAYS_FILE) as zf:
        assert all(name.endswith(".npy") for name in zf.namelist())
    loaded = SCORERS["tfidf"].load(tmp_path)
    after = loaded.score(texts, evidence=True)
    assert np.array_equal(before.scores, after.scores)
    assert before.evidence == after.evidence
    assert loaded.codes == scorer.codes and loaded.get_params() == scorer.get_params()
    assert loaded.vectorizer_.get_params()["ngram_range"] == tuple(params["ngram_range"])


def test_empty_and_unicode_notes(splits: dict, space: LabelSpace) -> None:
    scorer = _fit(splits, space)
    texts = ["", "   \n\t ", "\x00\ud800 lone surrogate", "Ünïcödé — 糖尿病 😀 " * 50, "x" * 40_000,
             "diabétes glucosa insulina ﬁbrosis İstanbul"]
    out = scorer.score(texts, evidence=True)
    assert out.scores.shape == (len(texts), len(space)) and np.isfinite(out.scores).all()
    assert np.all(out.scores[0] == 0) and out.evidence[0] == {}
    for text, row in zip(texts, out.evidence, strict=True):
        for spans in row.values():
            for span in spans:
                assert 0 <= span["start"] < span["end"] <= len(text)
    # an unfitted scorer and bad inputs fail loudly
    with pytest.raises(RuntimeError, match="not fitted"):
        TfidfScorer().score(["x"])
    with pytest.raises(TypeError):
        scorer.score("one string, not a list")
    with pytest.raises(ValueError, match="labels shape"):
        TfidfScorer().fit(["a b c"], np.zeros((2, 1)), ["A"])


def test_evidence_points_at_trigger_words(splits: dict, space: LabelSpace) -> None:
    scorer = _fit(splits, space, evidence_top_k=1)
    note = "Patient was seen today.  Known HYPERTENSION, takes amlodipine."
    out = scorer.score([note], evidence=True)
    col = space.index["I10"]
    assert list(out.evidence[0]) == [col]  # top-1 code only
    spans = out.evidence[0][col]
    words = {note[s["start"]:s["end"]].strip(".,").lower() for s in spans}
    assert {"hypertension", "amlodipine"} <= words
    assert all(s["source"] == "tfidf" and s["weight"] > 0 for s in spans)
    assert spans[0]["weight"] == max(s["weight"] for s in spans)
    # codes asked about explicitly (unknown ones ignored)
    asked = scorer.score([note], evidence=True, evidence_codes=["E11.9", "I10", "NOT-A-CODE"])
    assert set(asked.evidence[0]) <= {space.index["E11.9"], col} and col in asked.evidence[0]


def test_load_rejects_broken_folders(splits: dict, space: LabelSpace, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        TfidfScorer.load(tmp_path)
    scorer = _fit(splits, space)
    scorer.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["codes"] = config["codes"][:-1]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(BundleError, match="shapes disagree"):
        TfidfScorer.load(tmp_path)
    config["schema_version"] = 99
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(BundleError, match="schema_version"):
        TfidfScorer.load(tmp_path)
    # an npz holding a pickled object array is refused, not unpickled
    scorer.save(tmp_path)
    np.savez(tmp_path / ARRAYS_FILE, idf=np.array([object()], dtype=object))
    with pytest.raises(BundleError, match="npz"):
        TfidfScorer.load(tmp_path)
