"""A fourth view is its own class + one registry entry + (optionally) its parameter block: a toy
scorer defined here, added to the one table of views (``medcoder.modeling.views.SCORERS``) with
``with_entry``, trains end to end inside ``scripts/train.py``'s workflow next to tfidf
(``fusion.views=[tfidf,toy]``: fit resources, out-of-fold scores, stacker, MLflow metrics, saved
folders) and the fused coder loaded back from the run folder scores notes — with no edit to the
workflows, the hybrid scorer or the config checks. And a misspelt key in the fusion group is one
line naming it, before anything is read or logged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from scipy.special import expit

from medcoder.data import LabelSpace
from medcoder.errors import ConfigError
from medcoder.evaluation.metrics import codiesp_map
from medcoder.modeling import views
from medcoder.modeling.hybrid import HybridScorer
from medcoder.modeling.scorer import Scorer, Scores, Span
from medcoder.workflows.train import train

from ..helpers.configs import compose_cfg, tiny_overrides

_WORD = re.compile(r"\w+")


class ToyScorer(Scorer):
    """Learns one keyword per code (the word most specific to the code's training notes); a note's
    score for the code is ``weight`` x how often the keyword occurs in it, with each occurrence as
    evidence. Records the fit resources it was handed, to show the run serves what a view asks for."""

    name = "toy"
    evidence_rank = 5  # before every shipped view
    fit_resources = ("language",)

    def __init__(self, *, weight: float = 1.0) -> None:
        self.weight = float(weight)
        self.codes: list[str] = []
        self.keywords: list[str] = []
        self.language = ""

    def fit(self, texts, labels, codes, *, language: str = "", **kwargs) -> ToyScorer:
        assert not kwargs, kwargs  # nothing it did not ask for
        self.codes, self.language = list(codes), language
        words = [set(_WORD.findall(t.lower())) for t in texts]
        vocab = sorted(set().union(*words))
        self.keywords = []
        for j in range(len(codes)):
            gold = np.asarray(labels)[:, j] > 0

            def specificity(w: str, gold: np.ndarray = gold) -> float:
                has = np.array([w in ws for ws in words])
                return float((has & gold).sum()) / (1.0 + float(has.sum())) + 1e-6 * float((has & gold).sum())

            self.keywords.append(max(vocab, key=specificity))
        return self

    def score(self, texts, *, evidence: bool = False) -> Scores:
        texts = list(texts)
        scores = np.zeros((len(texts), len(self.codes)), dtype=np.float32)
        ev: list[dict[int, list[Span]]] | None = [] if evidence else None
        for i, text in enumerate(texts):
            spans: dict[int, list[Span]] = {}
            for j, kw in enumerate(self.keywords):
                hits = [m for m in _WORD.finditer(text) if m.group().lower() == kw]
                scores[i, j] = self.weight * len(hits)
                if hits:
                    spans[j] = [{"start": m.start(), "end": m.end(), "weight": 1.0, "source": self.name} for m in hits]
            if ev is not None:
                ev.append(spans)
        return Scores(scores, evidence=ev)

    def save(self, directory) -> None:
        state = {"codes": self.codes, "keywords": self.keywords, "weight": self.weight, "language": self.language}
        (Path(directory) / "toy.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, directory) -> ToyScorer:
        state = json.loads((Path(directory) / "toy.json").read_text())
        obj = cls(weight=state["weight"])
        obj.codes, obj.keywords, obj.language = state["codes"], state["keywords"], state["language"]
        return obj


@pytest.fixture
def toy_registered(monkeypatch):
    """The one table of views, extended for this test only (the shipped table is not mutated)."""
    monkeypatch.setattr(views, "SCORERS", views.SCORERS.with_entry("toy", ToyScorer))


def _overrides(root: Path, corpus: dict[str, str], *extra: str) -> list[str]:
    # No neural view: the configured encoder is never resolved, so a missing one must not matter.
    return tiny_overrides(root, corpus, str(root / "no-such-encoder"), "fusion=stacked", *extra)


def test_a_fourth_view_trains_end_to_end_and_the_fused_coder_scores_notes(toy_registered, tiny_corpus,
                                                                          tmp_path) -> None:
    result = train(compose_cfg(_overrides(tmp_path, tiny_corpus, "fusion.views=[tfidf,toy]", "+fusion.toy.weight=2.0")))

    # the run: each view alone and fused, the toy view's own timings, the tag naming the views
    m = result.metrics
    for split in ("dev", "test"):
        assert {f"{split}_map", f"{split}_map_toy", f"{split}_map_tfidf", f"{split}_p_at_8_toy"} <= set(m)
    assert {"fusion_oof_toy_seconds", "fusion_fit_toy_seconds", "fusion_fit_stacker_seconds"} <= set(m)
    assert m["test_map_toy"] > 0.5, m["test_map_toy"]  # the keywords are the corpus' trigger words
    run = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(result.run_id)
    assert run.data.tags["medcoder.model"] == "tfidf+toy" and run.data.tags["medcoder.encoder_mode"] == "none"
    assert run.data.params["fusion.toy.weight"] == "2.0"

    # the run folder: stacker over both views, the toy view's own folder, its out-of-fold scores
    out = result.model_dir
    assert json.loads((out / "stacker.json").read_text())["params"]["views"] == ["tfidf", "toy"]
    saved = json.loads((out / "scorers" / "toy" / "toy.json").read_text())
    assert saved["weight"] == 2.0 and saved["language"] == "en"  # its parameter block and its fit resource
    with np.load(out / "oof_train.npz") as oof:
        assert {"labels", "tfidf_scores", "toy_scores"} <= set(oof.files)

    # the fused coder, loaded back by view name from the one table, scores notes as the run did
    label_space = LabelSpace.from_json(out / "labels.json")
    frequency = np.array([label_space.frequency.get(c, 0) for c in label_space.codes], dtype=np.float32)
    coder = HybridScorer.load(out, frequency)
    assert list(coder.views) == ["tfidf", "toy"] and isinstance(coder.views["toy"], ToyScorer)
    test = [json.loads(line) for line in Path(tiny_corpus["test"]).read_text().splitlines()]
    fused = coder.score([r["text"] for r in test], evidence=True)
    assert fused.logits.shape == (len(test), len(label_space))
    assert codiesp_map(expit(fused.logits), label_space.codes, [r["codes"] for r in test]) == pytest.approx(
        m["test_map"], abs=1e-6)
    # evidence order comes from the views' classes: the toy view (rank 5) before tfidf
    i, j = next((i, j) for i in range(len(test)) for j in range(len(label_space))
                if fused.views["toy"].evidence_for(i, j) and fused.views["tfidf"].evidence_for(i, j))
    sources = [span["source"] for span in fused.evidence_for(i, j)]
    assert sources[0] == "toy" and "tfidf" in sources
    assert all(0 <= s["start"] < s["end"] <= len(test[i]["text"]) for s in fused.evidence_for(i, j))


def test_an_unregistered_view_is_refused_in_one_line(tiny_corpus, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^fusion.views=\['tfidf', 'toy'\] is not valid \(unknown view\(s\) \['toy'\]"):
        train(compose_cfg(_overrides(tmp_path, tiny_corpus, "fusion.views=[tfidf,toy]")))
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(("override", "key"), [
    ("+fusion.foldz=3", "fusion.foldz"),
    ("+fusion.tfidf.max_featurez=5", "fusion.tfidf.max_featurez"),
    ("+fusion.stacker.CC=1", "fusion.stacker.CC"),
    ("+fusion.dictionary.windoww=3", "fusion.dictionary.windoww"),  # a block of a view not in fusion.views too
    ("+fusion.neural={head:1}", "fusion.neural"),  # the neural view's settings are the model/trainer groups
])
def test_a_misspelt_fusion_key_is_one_line_naming_it(override, key, tiny_corpus, tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        train(compose_cfg(_overrides(tmp_path, tiny_corpus, "fusion.views=[tfidf,dictionary]", override)))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{key}: unknown key"), message
    assert not (tmp_path / "mlflow.db").exists()  # refused at the door: nothing read, nothing logged


def test_a_toy_view_block_is_checked_against_its_class(toy_registered, tiny_corpus, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^fusion.toy.wieght: unknown key.*weight"):
        train(compose_cfg(_overrides(tmp_path, tiny_corpus, "fusion.views=[tfidf,toy]", "+fusion.toy.wieght=2")))
