"""English pseudo-mentions projected from CodiEsp's Spanish spans onto the machine translations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcoder.data.mentions import Mention
from medcoder.modeling.dictionary import DictionaryScorer
from medcoder.modeling.projected_mentions import (
    PROJECTED,
    load_projected_mentions,
    note_ngrams,
    select_projections,
    window_candidates,
)

ES = ["Paciente con fiebre alta. Sin otros datos.", "Refiere fiebre. Dolor abdominal intenso.",
      "Nada relevante."]
EN = ["Patient with high fever. No other data.", "Reports fever. Severe abdominal pain.",
      "Nothing relevant. Fever absent."]
SPANS = [[Mention(13, 19, "R50.9", "D", "fiebre")],
         [Mention(8, 14, "R50.9", "D", "fiebre"), Mention(16, 31, "R10.9", "D", "Dolor abdominal")], []]


def _selected(min_notes: int = 2, min_ratio: float = 0.3) -> list[list[Mention]]:
    candidates = window_candidates(EN, ES, SPANS)
    kept = select_projections(candidates, [note_ngrams(t) for t in EN], min_notes=min_notes, min_ratio=min_ratio)
    return [[m for m in note if (m.text, m.code) in kept] for note in candidates]


def test_an_ngram_found_where_the_spans_translate_in_enough_notes_becomes_a_mention() -> None:
    out = _selected()
    assert [[(m.code, m.kind, EN[i][m.start:m.end]) for m in note] for i, note in enumerate(out)] == [
        [("R50.9", PROJECTED, "fever")], [("R50.9", PROJECTED, "fever")], []]
    # R10.9's n-grams are in one note's window only: below min_notes
    assert "R10.9" in {m.code for m in _selected(min_notes=1)[1]}
    # "fever" is in a R50.9 window in 2 of the 3 notes that contain it: a ratio of 0.67
    assert _selected(min_ratio=0.7) == [[], [], []]


def test_candidates_are_unselected_and_selection_counts_only_the_notes_passed() -> None:
    candidates = window_candidates(EN, ES, SPANS)
    assert {m.text for m in candidates[0]} >= {"patient", "high fever", "fever"}
    grams = [note_ngrams(t) for t in EN]
    assert select_projections(candidates, grams) == {("fever", "R50.9")}
    # without note 1 (held out), "fever" is in one R50.9 window only: nothing is selected
    assert select_projections([candidates[0], candidates[2]], [grams[0], grams[2]]) == set()


def test_misaligned_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        window_candidates(EN[:2], ES, SPANS)


def test_the_dictionary_selects_projections_per_fold_from_its_build_notes_only() -> None:
    """Leak-free cross-fitting: a held-out note's own window never admits the entry its precision
    is then counted with. Two notes hold "fever" in a R50.9 window: with 2 folds each note's fold
    is built from the other note alone, so the entry is never in a fold lexicon (0 cross-fitted
    matches), while the shipped lexicon (both notes) has it."""
    texts = EN[:2]
    candidates = window_candidates(texts, ES[:2], SPANS[:2])
    labels = np.array([[1, 0], [1, 1]])
    scorer = DictionaryScorer(cross_fit=2, seed=0).fit(texts, labels, ["R50.9", "R10.9"], mentions=candidates,
                                                      language="en")
    assert scorer.lexicon_ == {"fever": ["R50.9"]} and scorer.sources_ == {"fever": "projected"}
    assert scorer.counts_["fever"]["R50.9"][0] == 0  # never matched out of fold
    assert scorer.stats_["cv_affirmed_matches"] == 0


def _release(tmp_path: Path) -> Path:
    root = tmp_path / "final_dataset_v4_to_publish" / "train"
    for sub in ("text_files", "text_files_en"):
        (root / sub).mkdir(parents=True)
    for i, (es, en) in enumerate(zip(ES, EN, strict=True)):
        (root / "text_files" / f"d{i}.txt").write_text(es, encoding="utf-8")
        (root / "text_files_en" / f"d{i}.txt").write_text(en, encoding="utf-8")
    rows = [f"d{i}\tDIAGNOSTICO\t{m.code.lower()}\t{m.text}\t{m.start} {m.end}\n"
            for i, spans in enumerate(SPANS) for m in spans]
    (root / "trainX.tsv").write_text("".join(rows), encoding="utf-8")
    (root / "trainD.tsv").write_text("d0\tr50.9\n", encoding="utf-8")
    return root.parent


def test_the_release_reader_projects_only_the_notes_given(tmp_path: Path) -> None:
    root = _release(tmp_path)
    everything = load_projected_mentions(root, "train", "D", ["d0", "d1", "d2"])
    assert "fever" in {m.text for m in everything["d1"]} and everything["d2"] == []
    assert set(load_projected_mentions(root, "train", "D", ["d0", "d2"])) == {"d0", "d2"}
