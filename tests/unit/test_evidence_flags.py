"""``no_evidence`` is a row of the routing table, fed by one function (``evidence_flags``, through
``routing_inputs``) in calibration and ``Coder.predict`` alike: a code without a span is never
auto-accepted nor counted by Learn-then-Test, and the bundle predicts with the evidence setting
calibration recorded."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest

from medcoder.calibration.calibrators import make_calibrator
from medcoder.calibration.thresholds import DecisionThreshold
from medcoder.data.labels import LabelSpace
from medcoder.errors import ConfigError
from medcoder.inference.coder import Coder, routing_inputs, score_for_routing
from medcoder.modeling.hybrid import (
    NO_EVIDENCE_FLAG,
    FusedScores,
    HybridScorer,
    evidence_flags,
    note_flags,
)
from medcoder.modeling.scorer import Scorer, Scores, Span
from medcoder.routing.policy import DEFAULT_EVIDENCE_TOP_K, RoutingPolicy
from medcoder.routing.reasons import LOW_CONFIDENCE, NO_EVIDENCE

CODES = ["A", "B", "C"]


class KeywordView(Scorer):
    """Code A scores high on "alpha" and shows the word as evidence; B scores high on "beta" with no
    span to show (as a view whose evidence covers only some codes); C is middling, no span."""

    name = "keyword"

    def __init__(self) -> None:
        self.codes = list(CODES)

    def fit(self, texts, labels, codes, **kwargs) -> KeywordView:
        return self

    def score(self, texts: Sequence[str], *, evidence: bool = False) -> Scores:
        texts = list(texts)
        scores = np.full((len(texts), 3), -6.0, dtype=np.float32)
        rows: list[dict[int, list[Span]]] = []
        for i, text in enumerate(texts):
            spans: dict[int, list[Span]] = {}
            if "alpha" in text:
                scores[i, 0] = 6.0
                start = text.index("alpha")
                spans[0] = [{"start": start, "end": start + 5, "weight": 1.0, "source": self.name}]
            if "beta" in text:
                scores[i, 1] = 6.0
            if "gamma" in text:
                scores[i, 2] = 0.5  # predicted (p 0.62 >= 0.5), below tau 0.9
            rows.append(spans)
        return Scores(scores, evidence=rows if evidence else None)

    def save(self, directory) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory) -> KeywordView:
        raise NotImplementedError


def _policy(**kw) -> RoutingPolicy:
    return RoutingPolicy(0.9, DecisionThreshold.fixed(0.5, n_labels=3), min_train_count=0, check_excludes1=False,
                         check_validity=False, **kw)


def _coder(**kw) -> Coder:
    labels = LabelSpace(CODES, dict.fromkeys(CODES, 50))
    scorer = HybridScorer({"keyword": KeywordView()}, None, np.full(3, 50.0))
    calibrator = make_calibrator("none").fit(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    return Coder(scorer, labels, calibrator, _policy(**kw))


TEXTS = ["alpha beta gamma", "alpha only", "nothing here"]


def test_the_flag_is_the_reason_name() -> None:
    assert NO_EVIDENCE_FLAG == NO_EVIDENCE  # modeling spells it (it sits below routing)


def test_evidence_flags_mark_candidates_without_a_span_only() -> None:
    fused = HybridScorer({"keyword": KeywordView()}, None, np.full(3, 50.0)).score(TEXTS, evidence=True)
    everything = np.ones((3, 3), bool)
    missing = evidence_flags(fused, everything)[NO_EVIDENCE]
    assert missing.tolist() == [[False, True, True], [False, True, True], [True, True, True]]
    some = np.zeros((3, 3), bool)
    some[0, 1] = some[1, 0] = True
    assert np.argwhere(evidence_flags(fused, some)[NO_EVIDENCE]).tolist() == [[0, 1]]  # never outside candidates
    with pytest.raises(ValueError, match="shape"):
        evidence_flags(fused, np.ones((2, 3), bool))
    # scored without evidence: every candidate is flagged
    bare = HybridScorer({"keyword": KeywordView()}, None, np.full(3, 50.0)).score(TEXTS, evidence=False)
    assert note_flags(bare, everything)[NO_EVIDENCE].all()


def test_fused_evidence_is_computed_once_and_handed_out_as_copies() -> None:
    calls = []

    def lookup(i: int, j: int) -> list[Span]:
        calls.append((i, j))
        return [{"start": 0, "end": 1, "weight": 1.0}]

    fused = FusedScores(np.zeros((1, 1), np.float32), {"neural": Scores(np.zeros((1, 1)), evidence_lookup=lookup)},
                        np.zeros(1, bool))
    first = fused.evidence_for(0, 0)
    first[0]["start"] = 99
    assert fused.evidence_for(0, 0) == [{"start": 0, "end": 1, "weight": 1.0, "source": "neural"}]
    assert calls == [(0, 0)]


def test_predict_routes_a_code_without_evidence_by_the_rule_and_certification_excludes_it() -> None:
    coder = _coder()
    rows = coder.predict(TEXTS)
    first = {c.code: c for c in rows[0].codes}
    assert first["A"].decision == "auto_accept" and first["A"].evidence
    assert first["B"].decision == "human_review" and first["B"].reasons == [NO_EVIDENCE]  # above τ: rule alone
    assert first["C"].reasons == [LOW_CONFIDENCE, NO_EVIDENCE]  # a rule like the others, not an override
    assert rows[2].codes == []

    # the inputs calibration certifies with are the ones predict routes: B is not among the codes
    # Learn-then-Test counts, and the accepted set is the one predict returned
    scored = score_for_routing(coder.scorer, TEXTS, evidence_top_k=DEFAULT_EVIDENCE_TOP_K)
    probs = coder.calibrator.transform(scored.fused.logits)
    inputs = routing_inputs(coder.policy, coder.label_space, scored, probs)
    eligible = coder.policy.eligible_mask(inputs)
    assert eligible[0].tolist() == [True, False, False] and eligible[1].tolist() == [True, False, False]
    _, accept, counts = coder.policy.route_arrays(inputs)
    assert {(i, CODES[j]) for i, j in np.argwhere(accept)} == {
        (i, c.code) for i, p in enumerate(rows) for c in p.codes if c.decision == "auto_accept"}
    assert counts[NO_EVIDENCE] == 2


def test_predict_uses_the_policys_evidence_setting_by_default() -> None:
    assert _coder().predict(TEXTS)[1].codes[0].decision == "auto_accept"
    # a policy certified without evidence (evidence_top_k=0) accepts nothing, unless told otherwise
    strict = _coder(evidence_top_k=0)
    assert all(c.decision == "human_review" and NO_EVIDENCE in c.reasons
               for p in strict.predict(TEXTS) for c in p.codes)
    assert strict.predict(TEXTS, evidence_top_k=3)[1].codes[0].decision == "auto_accept"
    assert all(NO_EVIDENCE in c.reasons for p in _coder().predict(TEXTS, evidence_top_k=0) for c in p.codes)


def test_evidence_setting_is_recorded_checked_and_defaults_for_old_files() -> None:
    policy = _policy(evidence_top_k=5)
    stored = json.loads(json.dumps(policy.to_dict()))
    assert stored["evidence_top_k"] == 5 and RoutingPolicy.from_dict(stored).evidence_top_k == 5
    assert policy.unfitted().evidence_top_k == 5
    del stored["evidence_top_k"]  # a calibration.json written before it was recorded
    assert RoutingPolicy.from_dict(stored).evidence_top_k == DEFAULT_EVIDENCE_TOP_K == 3
    with pytest.raises(ConfigError, match="evidence_top_k"):
        _policy(evidence_top_k=-1)
