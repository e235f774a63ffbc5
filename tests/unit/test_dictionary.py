"""The "dictionary" view and the CodiEsp-X mention loader, on tiny synthetic notes (no corpus)."""

from __future__ import annotations

import numpy as np
import pytest

from medcoder.data.mentions import Mention, load_codiesp_mentions, read_mentions_file
from medcoder.errors import DataError
from medcoder.modeling.dictionary import DictionaryScorer, normalize_with_offsets
from medcoder.modeling.views import SCORERS

CODES = ["E11.9", "N28.9", "E27.9", "R50.9"]


def _mention(text: str, phrase: str, code: str) -> Mention:
    start = text.index(phrase)
    return Mention(start=start, end=start + len(phrase), code=code, kind="D", text=phrase)


def _fit(texts, golds, phrases, **kw) -> DictionaryScorer:
    labels = np.array([[c in g for c in CODES] for g in golds], dtype=int)
    mentions = [[_mention(t, p, c) for p, c in ph] for t, ph in zip(texts, phrases, strict=True)]
    return DictionaryScorer(**kw).fit(texts, labels, CODES, mentions=mentions)


def _small() -> DictionaryScorer:
    texts = [
        "Paciente con diabetes mellitus tipo 2 en tratamiento.",
        "Insuficiencia renal leve. Diabetes mellitus tipo 2.",
        "Masa suprarrenal derecha, sin fiebre.",
        "Fiebre alta de tres dias.",
    ]
    golds = [{"E11.9"}, {"N28.9", "E11.9"}, {"E27.9"}, {"R50.9"}]
    phrases = [
        [("diabetes mellitus tipo 2", "E11.9")],
        [("renal", "N28.9"), ("Diabetes mellitus tipo 2", "E11.9")],
        [("suprarrenal", "E27.9")],
        [("Fiebre", "R50.9")],
    ]
    return _fit(texts, golds, phrases, cross_fit=1)


def test_normalisation_keeps_offsets_into_the_original():
    text = "  Diabétes\tMELLITUS,  tipo-2 "
    norm, offsets = normalize_with_offsets(text)
    assert norm == "diabetes mellitus tipo 2"
    assert len(offsets) == len(norm)
    s = norm.index("mellitus")
    assert text[offsets[s] : offsets[s + len("mellitus") - 1] + 1] == "MELLITUS"


def test_exact_spans_despite_accents_case_and_whitespace():
    scorer = _small()
    note = "Antecedentes:  DIABETES   Méllitus\nTIPO 2, controlada."
    out = scorer.score([note], evidence=True)
    j = CODES.index("E11.9")
    assert out.flags["hit"][0, j] and not out.flags["negated"][0, j]
    (span,) = out.evidence[0][j]
    assert note[span["start"] : span["end"]] == "DIABETES   Méllitus\nTIPO 2"
    assert span["source"] == "dictionary" and "negated" not in span
    assert span["weight"] == pytest.approx(out.scores[0, j])


def test_word_boundaries():
    scorer = _small()
    out = scorer.score(["Masa suprarrenal izquierda.", "Funcion renal alterada."], evidence=True)
    renal, supra = CODES.index("N28.9"), CODES.index("E27.9")
    # "renal" never fires inside "suprarrenal"; "suprarrenal" is a mention of its own
    assert not out.flags["hit"][0, renal] and out.flags["hit"][0, supra]
    assert [(s["start"], s["end"]) for s in out.evidence[0][supra]] == [(5, 16)]
    assert out.flags["hit"][1, renal] and not out.flags["hit"][1, supra]


def test_negated_mention_is_flagged_and_scored_lower():
    # training: "sin fiebre" is never coded, plain "fiebre" always is -> the factor is learned < 1
    texts = [f"Nota {i}. Fiebre alta." for i in range(6)] + [f"Nota {i}. Paciente sin fiebre." for i in range(6)]
    golds = [{"R50.9"}] * 6 + [set()] * 6
    phrases = [[("Fiebre", "R50.9")]] * 6 + [[]] * 6
    scorer = _fit(texts, golds, phrases, cross_fit=3)
    assert scorer.neg_factor_ < 0.5
    notes = ["Refiere fiebre desde ayer.", "Acude sin fiebre ni tos.", "Fiebre: negativa."]
    out = scorer.score(notes, evidence=True)
    j = CODES.index("R50.9")
    assert out.flags["hit"][:, j].tolist() == [True, True, True]
    assert out.flags["negated"][:, j].tolist() == [False, True, True]
    assert out.scores[1, j] < out.scores[0, j] and out.scores[2, j] < out.scores[0, j]
    assert out.evidence[1][j][0]["negated"] is True
    # scope stops at a terminator and at the sentence end
    out = scorer.score(["No hay tos, pero fiebre alta.", "No tose. Fiebre alta."])
    assert not out.flags["negated"][:, j].any()


def test_save_load_round_trip(tmp_path):
    scorer = _small()
    scorer.save(tmp_path / "dict")
    assert [p.name for p in (tmp_path / "dict").iterdir()] == ["dictionary.json"]
    back = SCORERS["dictionary"].load(tmp_path / "dict")
    notes = ["Diabetes mellitus tipo 2 sin fiebre.", "Masa suprarrenal y funcion renal.", ""]
    a, b = scorer.score(notes, evidence=True), back.score(notes, evidence=True)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.evidence == b.evidence
    for name in ("hit", "negated"):
        np.testing.assert_array_equal(a.flags[name], b.flags[name])


def test_cross_fitted_precision_is_lower_than_in_sample():
    # "lesion" is annotated as N28.9 in the two notes where it is gold, but also appears in six
    # notes where it is not: in-sample it always matches its own notes, cross-fitted it does not
    texts = [f"Caso {i}: lesion renal." for i in range(2)] + [f"Caso {i}: lesion cutanea." for i in range(6)]
    texts += [f"Caso {i}: control." for i in range(2)]
    golds = [{"N28.9"}] * 2 + [set()] * 8
    phrases = [[("lesion", "N28.9")]] * 2 + [[]] * 8
    unique = [[("lesion renal", "N28.9")], [("lesion renal", "N28.9")]] + [[]] * 8
    insample = _fit(texts, golds, unique, cross_fit=1, seed=0)
    crossfit = _fit(texts, golds, unique, cross_fit=2, seed=0)
    assert crossfit.precision_["lesion renal"]["N28.9"] < insample.precision_["lesion renal"]["N28.9"]
    insample = _fit(texts, golds, phrases, cross_fit=1)
    crossfit = _fit(texts, golds, phrases, cross_fit=5)
    assert crossfit.precision_["lesion"]["N28.9"] <= insample.precision_["lesion"]["N28.9"]


def test_short_and_stopword_mentions_are_dropped_and_descriptions_work():
    texts = ["La TA de 2 y DM.", "Essential hypertension, treated."]
    labels = np.array([[0, 0, 0, 0], [0, 0, 0, 1]])
    mentions = [[Mention(3, 5, "E11.9", "D", "TA"), Mention(6, 10, "N28.9", "D", "de 2")], []]
    scorer = DictionaryScorer(cross_fit=1).fit(
        texts, labels, CODES, mentions=mentions, descriptions={"R50.9": ["Essential hypertension"]}
    )
    assert list(scorer.lexicon_) == ["essential hypertension"]
    assert scorer.sources_["essential hypertension"] == "description"


X_ROWS = (
    "doc1\tDIAGNOSTICO\tn44.8\tteste aumentado\t10 25\n"
    "doc1\tPROCEDIMIENTO\t3e02329\tEstreptomicina intramuscular\t30 44;50 63\n"
    "\n"
    "doc2\tDIAGNOSTICO\tr509\tfiebre\t0 6\n"
)


def _release(tmp_path, x_text: str):
    root = tmp_path / "final_dataset_v4_to_publish"
    (root / "train").mkdir(parents=True)
    (root / "train" / "trainD.tsv").write_text("doc1\tn44.8\n", encoding="utf-8")
    (root / "train" / "trainX.tsv").write_text(x_text, encoding="utf-8")
    return root


def test_mentions_loader(tmp_path):
    root = _release(tmp_path, X_ROWS)
    both = load_codiesp_mentions(root, "train", None)
    assert sorted(both) == ["doc1", "doc2"]
    proc = both["doc1"][1]
    assert (proc.start, proc.end, proc.code, proc.kind) == (30, 63, "3E02329", "P")
    assert proc.fragments == ((30, 44), (50, 63))
    d = load_codiesp_mentions(root.parent, "train", "D")  # the parent folder is accepted
    assert [m.code for m in d["doc1"]] == ["N44.8"] and d["doc2"][0].code == "R50.9"
    assert d["doc1"][0].fragments == ((10, 25),)


@pytest.mark.parametrize(
    "bad",
    [
        "doc3\tDIAGNOSTICO\tr50.9\tfiebre\n",  # four fields
        "doc3\tDIAGNOSTICO\tr50.9\tfiebre\t7 x\n",  # not a number
        "doc3\tDIAGNOSTICO\tr50.9\tfiebre\t9 3\n",  # start > end
        "doc3\tSINTOMA\tr50.9\tfiebre\t0 6\n",  # unknown label
    ],
)
def test_mentions_loader_rejects_malformed_rows(tmp_path, bad):
    root = _release(tmp_path, X_ROWS + bad)
    with pytest.raises(DataError, match=r"trainX\.tsv:5"):
        load_codiesp_mentions(root, "train", "D")
    with pytest.raises(DataError, match="not found"):
        read_mentions_file(tmp_path / "missing.tsv")


# --------------------------------------------------------------------------- loose matches


def _loose(window: int) -> DictionaryScorer:
    texts = [f"Caso {i}: carcinoma urotelial de vejiga." for i in range(4)]
    texts += [f"Caso {i}: vejiga sin alteraciones. Carcinoma previo en piel." for i in range(4)]
    golds = [{"E27.9"}] * 4 + [set()] * 4
    phrases = [[("carcinoma urotelial de vejiga", "E27.9")]] * 4 + [[]] * 4
    return _fit(texts, golds, phrases, cross_fit=1, loose_window=window)


def test_loose_match_finds_reordered_inflected_words_within_the_window():
    scorer = _loose(6)
    j = CODES.index("E27.9")
    notes = [
        "Vejiga: se observan carcinomas uroteliales multiples.",  # order, plural, 4 words apart
        "Carcinoma urotelial. Vejiga normal.",  # the words cross a sentence end: no match
        "Carcinoma urotelial de la vejiga urinaria.",  # exact match fails ("la"), loose finds it
    ]
    out = scorer.score(notes, evidence=True)
    assert out.flags["hit"][0, j] and not out.flags["hit"][1, j] and out.flags["hit"][2, j]
    (span,) = out.evidence[0][j]
    assert span["loose"] is True
    assert notes[0][span["start"] : span["end"]] == "Vejiga: se observan carcinomas uroteliales"
    # the loose match's precision is its own (learned or the loose pooled prior), not the exact one's
    assert span["weight"] == pytest.approx(scorer._precision("~carcinoma urotelial de vejiga", "E27.9"))
    # an exact match is reported as exact, once (no loose duplicate of the same string)
    exact = scorer.score(["Carcinoma urotelial de vejiga."], evidence=True)
    assert [s.get("loose", False) for s in exact.evidence[0][j]] == [False]


def test_loose_match_is_off_by_default_and_respects_the_window():
    j = CODES.index("E27.9")
    note = "Vejiga: se observan carcinomas uroteliales multiples."
    assert not _loose(0).score([note]).flags["hit"][0, j]
    far = "Carcinoma en la pared lateral derecha de la vejiga con patron urotelial."
    assert not _loose(3).score([far]).flags["hit"][0, j]
    assert _loose(12).score([far]).flags["hit"][0, j]


def test_loose_precision_is_cross_fitted_and_saved(tmp_path):
    # the loose form also fires in decoy notes where the code is not gold: its cross-fitted
    # precision must fall below the exact string's
    texts = [f"Caso {i}: carcinoma de vejiga." for i in range(6)]
    texts += [f"Caso {i}: vejiga normal, carcinoma cutaneo." for i in range(6)]
    golds = [{"E27.9"}] * 6 + [set()] * 6
    phrases = [[("carcinoma de vejiga", "E27.9")]] * 6 + [[]] * 6
    scorer = _fit(texts, golds, phrases, cross_fit=3, loose_window=6)
    assert scorer.precision_["~carcinoma de vejiga"]["E27.9"] < scorer.precision_["carcinoma de vejiga"]["E27.9"]
    assert scorer.stats_["cv_loose_affirmed_matches"] >= 6
    scorer.save(tmp_path / "d")
    back = SCORERS["dictionary"].load(tmp_path / "d")
    assert back.loose_window == 6 and back.p0_loose_ == pytest.approx(scorer.p0_loose_)
    notes = ["Vejiga, carcinoma.", "Carcinoma de vejiga."]
    a, b = scorer.score(notes, evidence=True), back.score(notes, evidence=True)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.evidence == b.evidence
