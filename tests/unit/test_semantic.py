"""The semantic view: sentence spans, cosine scores, evidence, save/load without code from the folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcoder.errors import BundleError, ConfigError
from medcoder.modeling.semantic import NO_WORDING, SemanticScorer, sentence_spans

CODES = ["i10", "e11.9", "z99.9"]
WORDING = {"i10": ["Essential (primary) hypertension"], "e11.9": ["Type 2 diabetes mellitus", "diabetes type 2"]}
NOTES = ["Patient with essential hypertension.\nNo fever; afebrile.", "Known type 2 diabetes mellitus. Ok."]


def test_sentence_spans_split_on_lines_and_terminators_and_keep_offsets() -> None:
    text = "  First sentence here.  Second one; third\n\n-\n4. Fourth line"
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["First sentence here.", "Second one;", "third", "Fourth line"]
    assert sentence_spans("") == []
    assert sentence_spans("a. b.") == []  # nothing with 4 alphanumerics


@pytest.fixture(scope="module")
def fitted(tiny_encoder: str) -> SemanticScorer:
    return SemanticScorer(encoder=tiny_encoder, batch_size=2).fit(NOTES, np.zeros((2, 3)), CODES, descriptions=WORDING)


def test_scores_are_the_best_sentence_cosine_and_codes_without_wording_score_lowest(fitted: SemanticScorer) -> None:
    s = fitted.score(NOTES)
    assert s.scores.shape == (2, 3)
    assert np.all(s.scores[:, 2] == NO_WORDING)  # z99.9 has no wording
    # by hand: embed each sentence and each string, cosine, best over sentences and strings
    for i, note in enumerate(NOTES):
        sents = fitted.embed([note[a:b] for a, b in sentence_spans(note)])
        for j, code in enumerate(CODES[:2]):
            expected = (sents @ fitted.embed(WORDING[code]).T).max()
            assert s.scores[i, j] == pytest.approx(expected, abs=1e-5)
    assert np.all(s.scores[:, :2] <= 1.0 + 1e-5) and np.all(s.scores[:, :2] >= -1.0 - 1e-5)


def test_embedding_order_does_not_depend_on_batching(fitted: SemanticScorer) -> None:
    strings = ["short", "a much longer string than the others here", "mid length one"]
    one = fitted.embed(strings)
    assert np.allclose(one, np.stack([fitted.embed([x])[0] for x in strings]), atol=1e-5)
    assert np.allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)


def test_evidence_is_the_best_sentence(fitted: SemanticScorer) -> None:
    s = fitted.score(NOTES, evidence=True)
    for i, note in enumerate(NOTES):
        spans = s.evidence_for(i, 0)
        assert len(spans) == 1 and spans[0]["source"] == "semantic"
        assert note[spans[0]["start"]:spans[0]["end"]] in [note[a:b] for a, b in sentence_spans(note)]
        assert spans[0]["weight"] == pytest.approx(float(s.scores[i, 0]))
        assert s.evidence_for(i, 2) == []  # no wording, no evidence


def test_a_note_without_sentences_scores_no_wording_everywhere(fitted: SemanticScorer) -> None:
    s = fitted.score(["", "ok."])
    assert np.all(s.scores == NO_WORDING) and s.evidence_for(0, 0) == []


def test_save_load_round_trip_gives_the_same_scores(fitted: SemanticScorer, tmp_path) -> None:
    fitted.save(tmp_path / "semantic")
    loaded = SemanticScorer.load(tmp_path / "semantic")
    assert loaded.codes == CODES and loaded.get_params() == fitted.get_params()
    assert np.allclose(loaded.score(NOTES).scores, fitted.score(NOTES).scores, atol=1e-6)


def test_load_ignores_an_auto_map_and_refuses_a_corrupt_folder(fitted: SemanticScorer, tmp_path) -> None:
    folder = tmp_path / "semantic"
    fitted.save(folder)
    config = folder / "encoder" / "config.json"
    data = json.loads(config.read_text())
    data["auto_map"] = {"AutoModel": "evil.EvilModel"}  # a file that is not there must never be imported
    config.write_text(json.dumps(data))
    assert type(SemanticScorer.load(folder)._model).__name__ == "BertModel"
    (folder / "semantic_arrays.npz").write_bytes(b"not an npz")
    with pytest.raises(BundleError, match="semantic"):
        SemanticScorer.load(folder)


def test_fit_needs_wording_and_bad_parameters_are_refused(tiny_encoder: str) -> None:
    with pytest.raises(ValueError, match="descriptions"):
        SemanticScorer(encoder=tiny_encoder).fit(NOTES, np.zeros((2, 3)), CODES)
    with pytest.raises(ConfigError, match="max_length"):
        SemanticScorer(max_length=2)
    assert SemanticScorer.fit_problems({"mentions"}) and not SemanticScorer.fit_problems({"descriptions"})
