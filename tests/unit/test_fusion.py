"""Stacker, hybrid scorer and out-of-fold driver on synthetic scores (no model, no MLflow)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from medcoder.errors import ConfigError
from medcoder.modeling import views
from medcoder.modeling.hybrid import FusedScores, HybridScorer
from medcoder.modeling.scorer import Scorer, Scores
from medcoder.modeling.stacker import BlendedStacker, Stacker, rank_in_note
from medcoder.training.oof import fold_indices, out_of_fold, scorer_out_of_fold


def test_rank_in_note_is_zero_for_the_best_code() -> None:
    s = np.array([[0.1, 0.9, 0.5], [3.0, -1.0, 2.0]])
    np.testing.assert_array_equal(rank_in_note(s), [[2, 0, 1], [0, 2, 1]])


def _synthetic(n=300, codes=12, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, codes)) < 0.15).astype(int)
    good = Scores(2.0 * y + rng.normal(0, 0.7, y.shape))  # informative view
    noise = Scores(rng.normal(0, 1, y.shape))  # uninformative view
    hit = (y == 1) & (rng.random(y.shape) < 0.5)
    dictionary = Scores(hit.astype(float), flags={"hit": hit, "negated": np.zeros_like(hit)})
    return y, {"good": good, "noise": noise, "dictionary": dictionary}


def test_stacker_trusts_the_informative_views_and_round_trips() -> None:
    y, views = _synthetic()
    freq = np.full(y.shape[1], 10.0)
    st = Stacker(["good", "noise", "dictionary"]).fit(views, freq, y)
    w = st.coefficients()
    assert w["good_score"] > 5 * abs(w["noise_score"])
    assert w["dictionary_hit"] > 0
    z = st.decision_function(views, freq)
    assert z.shape == y.shape
    # the fused ranking beats the best single view on held-out notes of the same distribution
    y2, views2 = _synthetic(seed=1)
    from sklearn.metrics import average_precision_score

    fused_ap = average_precision_score(y2.ravel(), st.decision_function(views2, freq).ravel())
    good_ap = average_precision_score(y2.ravel(), views2["good"].scores.ravel())
    assert fused_ap > good_ap
    again = Stacker.from_dict(json.loads(json.dumps(st.to_dict())))
    np.testing.assert_allclose(again.decision_function(views, freq), z, rtol=1e-5, atol=1e-5)


def test_stacker_refuses_missing_views_and_one_class_labels() -> None:
    y, views = _synthetic()
    freq = np.ones(y.shape[1])
    with pytest.raises(ValueError, match="missing"):
        Stacker(["good", "absent"]).fit(views, freq, y)
    with pytest.raises(ValueError, match="both positive and negative"):
        Stacker(["good"]).fit(views, freq, np.zeros_like(y))


def test_out_of_fold_scores_each_note_with_a_fit_that_never_saw_it() -> None:
    n = 20
    seen_by: dict[int, set[int]] = {}

    def fit_predict(fit_idx, held_idx):
        for i in held_idx:
            seen_by[int(i)] = set(map(int, fit_idx))
        return Scores(np.asarray(held_idx, dtype=float)[:, None].repeat(2, axis=1))

    oof = out_of_fold(n, 4, seed=0, fit_predict=fit_predict)
    np.testing.assert_array_equal(oof.scores[:, 0], np.arange(n))  # rows land where they belong
    assert set(seen_by) == set(range(n)) and all(i not in fit for i, fit in seen_by.items())
    with pytest.raises(ValueError):
        fold_indices(3, 5, seed=0)


class _MemoryScorer(Scorer):
    """Test view: score = how often the code co-occurred with the note's first word in training."""

    name = "test_memory"

    def __init__(self, bonus: float = 1.0) -> None:
        self.bonus = bonus

    def fit(self, texts, labels, codes, **kwargs):
        self.codes = list(codes)
        self.table: dict[str, list[float]] = {}
        for t, row in zip(texts, labels, strict=True):
            key = t.split()[0]
            acc = self.table.setdefault(key, [0.0] * len(codes))
            self.table[key] = [a + b for a, b in zip(acc, row, strict=True)]
        return self

    def score(self, texts, *, evidence=False):
        s = np.array([self.table.get(t.split()[0], [0.0] * len(self.codes)) for t in texts]) * self.bonus
        ev = [{int(j): [{"start": 0, "end": len(t.split()[0]), "weight": 1.0}] for j in np.flatnonzero(r)}
              for t, r in zip(texts, s, strict=True)] if evidence else None
        return Scores(s, evidence=ev)

    def save(self, directory):
        (directory / "state.json").write_text(json.dumps({"codes": self.codes, "table": self.table, "bonus": self.bonus}))

    @classmethod
    def load(cls, directory):
        d = json.loads((directory / "state.json").read_text())
        obj = cls(d["bonus"])
        obj.codes, obj.table = d["codes"], d["table"]
        return obj


def test_scorer_out_of_fold_never_scores_a_note_with_its_own_labels() -> None:
    texts = [f"w{i} rest" for i in range(12)]  # every first word is unique: in-sample would be perfect
    labels = np.eye(12, 3, dtype=int)
    oof = scorer_out_of_fold(_MemoryScorer, texts, labels, ["A", "B", "C"], folds=3, seed=0)
    assert not oof.scores.any()  # nothing leaks from a note into its own score


def test_hybrid_single_view_is_that_view_and_folders_round_trip(tmp_path, monkeypatch) -> None:
    # A view outside the shipped table is added the one way there is: an extended copy of it.
    monkeypatch.setattr(views, "SCORERS", views.SCORERS.with_entry("test_memory", _MemoryScorer))
    texts, codes = ["a x", "b y", "a z"], ["A", "B"]
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    view = _MemoryScorer().fit(texts, labels, codes)
    with pytest.raises(ValueError, match="stacker"):
        HybridScorer({"test_memory": view, "other": view}, None, np.ones(2))
    single = HybridScorer({"test_memory": view}, None, np.ones(2))
    np.testing.assert_array_equal(single.score(texts).logits, view.score(texts).scores)

    st = Stacker(["test_memory"]).fit({"test_memory": view.score(texts)}, np.ones(2), labels)
    hybrid = HybridScorer({"test_memory": view}, st, np.ones(2), support_top_k=1)
    hybrid.save(tmp_path)
    assert (tmp_path / "stacker.json").is_file() and (tmp_path / "scorers" / "test_memory" / "state.json").is_file()
    loaded = HybridScorer.load(tmp_path, np.ones(2))
    np.testing.assert_allclose(loaded.score(texts).logits, hybrid.score(texts).logits)
    fused: FusedScores = loaded.score(texts, evidence=True)
    assert fused.sources_for(0, 0) == ["test_memory"]
    assert fused.evidence_for(0, 0) == [{"start": 0, "end": 1, "weight": 1.0, "source": "test_memory"}]


def test_a_blended_stacker_is_the_mean_of_its_members_and_round_trips_through_a_folder(tmp_path, monkeypatch) -> None:
    """``fusion.stacker_fit=blend``: one score, the mean of the out-of-fold and the tuning stackers'
    logits; ``stacker.json`` keeps both (and the views on top, for readers of the view list)."""
    monkeypatch.setattr(views, "SCORERS", views.SCORERS.with_entry("test_memory", _MemoryScorer))
    y, scores = _synthetic()
    y2, scores2 = _synthetic(seed=1)
    freq = np.full(y.shape[1], 10.0)
    a = Stacker(["good", "dictionary"]).fit(scores, freq, y)
    b = Stacker(["good", "dictionary"], C=0.01).fit(scores2, freq, y2)
    blend = BlendedStacker({"out_of_fold": a, "tuning": b})
    z = blend.decision_function(scores, freq)
    np.testing.assert_allclose(z, (a.decision_function(scores, freq) + b.decision_function(scores, freq)) / 2,
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(z, a.decision_function(scores, freq))
    assert set(blend.coefficients()) == {f"{m}:{k}" for m in ("out_of_fold", "tuning") for k in a.coefficients()}
    with pytest.raises(ValueError, match="fuses views"):
        BlendedStacker({"one": a, "other": Stacker(["good"]).fit(scores, freq, y)})
    with pytest.raises(ValueError, match="at least two"):
        BlendedStacker({"one": a})
    weighted = BlendedStacker({"out_of_fold": a, "tuning": b}, {"out_of_fold": 0.75, "tuning": 0.25})
    np.testing.assert_allclose(weighted.decision_function(scores, freq), 0.75 * a.decision_function(scores, freq)
                               + 0.25 * b.decision_function(scores, freq), rtol=1e-5, atol=1e-5)
    again = BlendedStacker.from_dict(json.loads(json.dumps(weighted.to_dict())))
    assert again.weights == {"out_of_fold": 0.75, "tuning": 0.25}
    for bad in ({"out_of_fold": 0.5, "tuning": 0.6}, {"out_of_fold": 1.0, "tuning": 0.0}, {"out_of_fold": 1.0}):
        with pytest.raises(ValueError, match="must be positive, one per stacker"):
            BlendedStacker({"out_of_fold": a, "tuning": b}, bad)

    texts, codes = ["a x", "b y", "a z"], ["A", "B"]
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    view = _MemoryScorer().fit(texts, labels, codes)
    one = {"test_memory": view.score(texts)}
    members = {"out_of_fold": Stacker(["test_memory"]).fit(one, np.ones(2), labels),
               "tuning": Stacker(["test_memory"], C=0.1).fit(one, np.ones(2), labels)}
    hybrid = HybridScorer({"test_memory": view}, BlendedStacker(members), np.ones(2), support_top_k=1)
    hybrid.save(tmp_path)
    stored = json.loads((tmp_path / "stacker.json").read_text())
    assert stored["params"]["views"] == ["test_memory"] and set(stored["blend"]) == {"out_of_fold", "tuning"}
    loaded = HybridScorer.load(tmp_path, np.ones(2))
    assert isinstance(loaded.stacker, BlendedStacker)
    np.testing.assert_allclose(loaded.score(texts).logits, hybrid.score(texts).logits, rtol=1e-6)


def test_a_bundle_naming_an_unregistered_view_is_refused(tmp_path) -> None:
    texts, codes = ["a x", "b y", "a z"], ["A", "B"]
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    view = _MemoryScorer().fit(texts, labels, codes)
    st = Stacker(["test_memory"]).fit({"test_memory": view.score(texts)}, np.ones(2), labels)
    HybridScorer({"test_memory": view}, st, np.ones(2)).save(tmp_path)
    with pytest.raises(ValueError, match="unknown view 'test_memory'"):
        HybridScorer.load(tmp_path, np.ones(2))  # nothing registers itself by being imported


def test_the_view_table_is_explicit_and_names_match_the_classes() -> None:
    from medcoder.modeling import NEURAL, DictionaryScorer, NeuralScorer, TfidfScorer

    assert dict(views.SCORERS) == {"neural": NeuralScorer, "tfidf": TfidfScorer, "dictionary": DictionaryScorer}
    assert all(cls.name == name for name, cls in views.SCORERS.items())
    assert NeuralScorer.name == NEURAL
    # evidence order comes from the classes: exact matches, then attention, then n-grams, then others
    assert sorted(["tfidf", "other", "neural", "dictionary"], key=views.evidence_rank) == [
        "dictionary", "neural", "tfidf", "other"]


def test_routing_flags_come_from_each_views_class() -> None:
    negated = np.array([[True, False]])
    dictionary = Scores(np.zeros((1, 2)), flags={"hit": negated, "negated": negated})
    tfidf = Scores(np.ones((1, 2)))
    flags = views.routing_flags({"tfidf": tfidf, "dictionary": dictionary, "unregistered": tfidf})
    assert set(flags) == {"negated_mention"}
    np.testing.assert_array_equal(flags["negated_mention"], negated)
    assert views.routing_flags({"tfidf": tfidf}) == {}


def test_fusion_plan_holds_validated_settings_and_builds_views() -> None:
    from medcoder.errors import ConfigError
    from medcoder.modeling import TfidfScorer
    from medcoder.workflows.fusion import FusionPlan

    plan = FusionPlan(views=["tfidf", "dictionary"], folds=4, seed=7, lexicon_sources=("descriptions",),
                      view_params={"tfidf": {"alpha": 0.5}}, stacker_params={"top_k": 5})
    assert plan.views == ("tfidf", "dictionary") and plan.fitted_views == plan.views
    assert not plan.has_neural and not plan.neural_only and plan.neural_folds == 4
    tfidf = plan.make("tfidf")
    assert isinstance(tfidf, TfidfScorer) and tfidf.alpha == 0.5
    assert plan.stacker().views == ["tfidf", "dictionary"] and plan.stacker().top_k == 5
    # what each fitted view takes among what the run offers (no mentions here: not a lexicon source)
    assert plan.available_resources == ("descriptions", "language")
    assert dict(plan.view_resources) == {"tfidf": (), "dictionary": ("descriptions", "language")}
    with pytest.raises(ValueError, match="fitted views"):
        plan.make("neural")
    assert plan.model_name("minilm") == "tfidf+dictionary"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.folds = 2  # type: ignore[misc]
    neural = FusionPlan()
    assert neural.neural_only and neural.has_neural and neural.model_name("minilm") == "minilm"
    for bad, needle in [({"views": []}, "non-empty list"), ({"views": ["tfidf", "magic"]}, r"unknown view\(s\)"),
                        ({"views": ["tfidf"], "folds": 1}, "fusion.folds=1"),
                        ({"views": ["dictionary"]}, "no lexicon")]:
        with pytest.raises(ConfigError, match=needle) as info:
            FusionPlan(**bad)
        assert "\n" not in str(info.value)


def test_stacker_interaction_features_are_named_computed_and_round_trip() -> None:
    # two notes, three codes: the dictionary and a second view, ranks known by hand
    dictionary = Scores(np.array([[0.9, 0.0, 0.4], [0.0, 0.8, 0.0]]),
                        flags={"hit": np.array([[1, 0, 1], [0, 1, 0]], bool)})
    other = Scores(np.array([[0.1, 0.7, 0.5], [0.9, 0.2, 0.1]]))
    views = {"dictionary": dictionary, "other": other}
    plain = Stacker(["dictionary", "other"], top_k=1)
    rich = Stacker(["dictionary", "other"], top_k=1, interactions=True)
    x0, names0 = plain.features(views, np.ones(3))
    x, names = rich.features(views, np.ones(3))
    assert names[: len(names0)] == names0 and np.array_equal(x[:, : len(names0)], x0)
    extra = dict(zip(names[len(names0):], x[:, len(names0):].T, strict=True))
    assert list(extra) == ["dictionary_top3", "other_top3", "agreement_top3", "dictionary_x_other_top",
                           "best_rank", "worst_rank"]
    # with 3 codes every code is in every view's top 3
    np.testing.assert_array_equal(extra["agreement_top3"], np.full(6, 2.0))
    # the dictionary's score only where "other" ranks the code first (top_k=1): code 1 of note 0
    # and code 0 of note 1, where the dictionary scored 0.0
    np.testing.assert_allclose(extra["dictionary_x_other_top"], [0, 0, 0, 0, 0, 0])
    # best rank: note 0 code 0 is the dictionary's first (rank 0) -> -log(1) = 0
    np.testing.assert_allclose(extra["best_rank"][[0, 1, 2]], [0.0, 0.0, -np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(extra["worst_rank"][[0, 1, 2]], [-np.log(3), -np.log(3), -np.log(2)], rtol=1e-6)
    y = np.array([[1, 0, 1], [0, 1, 0]])
    rich.fit(views, np.ones(3), y)
    again = Stacker.from_dict(json.loads(json.dumps(rich.to_dict())))
    assert again.interactions is True
    np.testing.assert_allclose(again.decision_function(views, np.ones(3)), rich.decision_function(views, np.ones(3)),
                               rtol=1e-5, atol=1e-5)
    # a stacker saved before the option existed loads without interactions
    legacy = rich.to_dict()
    del legacy["params"]["interactions"]
    assert Stacker.from_dict(legacy).interactions is False


def test_stacker_interaction_product_keeps_the_dictionary_score_where_the_other_view_agrees() -> None:
    dictionary = Scores(np.array([[0.9, 0.6, 0.0]]), flags={"hit": np.array([[1, 1, 0]], bool)})
    other = Scores(np.array([[0.2, 0.9, 0.5]]))  # ranks: code 1 first, code 2 second, code 0 third
    x, names = Stacker(["dictionary", "other"], top_k=2, interactions=True).features(
        {"dictionary": dictionary, "other": other}, np.ones(3))
    np.testing.assert_allclose(x[:, names.index("dictionary_x_other_top")], [0.0, 0.6, 0.0], rtol=1e-6)


def test_stacker_refuses_a_non_boolean_interactions_switch() -> None:
    with pytest.raises(ConfigError, match=r"fusion.stacker.interactions='yes' is not valid \(expected true or false\)"):
        Stacker(["good"], interactions="yes")
    with pytest.raises(ConfigError, match=r"fusion.stacker.top_k=0 is not valid"):
        Stacker(["good"], top_k=0)


def test_stacker_fitted_on_tuning_scores_cross_fits_their_own_logits() -> None:
    """``fusion.stacker_fit=tuning``: each tuning note's fused logits come from a stacker fitted on
    the other folds' notes (recomputed by hand), and the returned stacker is fitted on all of them."""
    from medcoder.workflows.fusion import FusionPlan, fit_stacker_on_tuning

    y, view_scores = _synthetic(n=60, seed=3)
    view_scores = {"tfidf": view_scores["good"], "dictionary": view_scores["dictionary"]}
    freq = np.full(y.shape[1], 5.0)
    plan = FusionPlan(views=("tfidf", "dictionary"), folds=3, seed=11, lexicon_sources=("descriptions",),
                      stacker_fit="tuning", stacker_folds=4)
    stacker, logits = fit_stacker_on_tuning(plan, view_scores, freq, y)
    fold = np.random.default_rng(11).permutation(len(y)) % 4
    for f in range(4):
        fit, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        rows = {k: Scores(v.scores[fit], flags={n: np.asarray(a)[fit] for n, a in v.flags.items()})
                for k, v in view_scores.items()}
        alone = plan.stacker().fit(rows, freq, y[fit])
        rows = {k: Scores(v.scores[held], flags={n: np.asarray(a)[held] for n, a in v.flags.items()})
                for k, v in view_scores.items()}
        np.testing.assert_allclose(logits[held], alone.decision_function(rows, freq), rtol=1e-5, atol=1e-5)
    whole = plan.stacker().fit(view_scores, freq, y)
    np.testing.assert_allclose(stacker.decision_function(view_scores, freq), whole.decision_function(view_scores, freq))
    assert stacker.n_rows_ == y.size  # fitted on every tuning note's (note, code) pairs
    # in-sample fused logits differ from the cross-fitted ones (the point of cross-fitting them)
    assert not np.allclose(stacker.decision_function(view_scores, freq), logits)
    for bad, needle in [({"stacker_fit": "dev"}, "fusion.stacker_fit='dev'"), ({"stacker_folds": 1}, "stacker_folds=1")]:
        with pytest.raises(ConfigError, match=needle):
            FusionPlan(views=("tfidf", "dictionary"), lexicon_sources=("descriptions",), **bad)
