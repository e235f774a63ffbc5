"""English pseudo-mentions projected from CodiEsp's Spanish spans onto the machine translations."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcoder.data.mentions import Mention
from medcoder.modeling.projected_mentions import load_projected_mentions, project_mentions

ES = ["Paciente con fiebre alta. Sin otros datos.", "Refiere fiebre. Dolor abdominal intenso.",
      "Nada relevante."]
EN = ["Patient with high fever. No other data.", "Reports fever. Severe abdominal pain.",
      "Nothing relevant. Fever absent."]
SPANS = [[Mention(13, 19, "R50.9", "D", "fiebre")],
         [Mention(8, 14, "R50.9", "D", "fiebre"), Mention(16, 31, "R10.9", "D", "Dolor abdominal")], []]


def test_an_ngram_found_where_the_spans_translate_in_enough_notes_becomes_a_mention() -> None:
    out = project_mentions(EN, ES, SPANS, min_notes=2, min_ratio=0.3)
    assert [[(m.code, m.kind, EN[i][m.start:m.end]) for m in note] for i, note in enumerate(out)] == [
        [("R50.9", "D", "fever")], [("R50.9", "D", "fever")], []]
    # R10.9's n-grams are in one note's window only: below min_notes
    assert project_mentions(EN, ES, SPANS, min_notes=1, min_ratio=0.3)[1][-1].code == "R10.9"
    # "fever" is in a R50.9 window in 2 of the 3 notes that contain it: a ratio of 0.67
    assert project_mentions(EN, ES, SPANS, min_notes=2, min_ratio=0.7) == [[], [], []]


def test_misaligned_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        project_mentions(EN[:2], ES, SPANS)


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


def test_only_the_notes_given_are_mined(tmp_path: Path) -> None:
    root = _release(tmp_path)
    everything = load_projected_mentions(root, "train", "D", ["d0", "d1", "d2"])
    assert [m.text for m in everything["d0"]] == ["fever"]
    # without d1 (say, a tuning note) "fever" is in one window only: nothing is kept
    assert load_projected_mentions(root, "train", "D", ["d0", "d2"]) == {"d0": [], "d2": []}
