"""The certification split (issue 19, medcoder.data.splits.carve_certification): the labels that
certify τ are notes no tuning job reads, carved the same way every time from a seed, and test is
never touched."""

from __future__ import annotations

import random

import pytest
from datasets import Dataset

from medcoder.data.splits import CERTIFY_SPLIT, REFIT_ONLY_SPLIT, carve_certification, refit_splits
from medcoder.errors import ConfigError


def _split(name: str, n: int, rng: random.Random, groups: bool = False) -> Dataset:
    rows = {"id": [f"{name}-{i}" for i in range(n)], "text": [f"note {i}" for i in range(n)],
            "codes": [rng.sample(["a", "b", "c", "d"], k=rng.randint(1, 2)) for _ in range(n)]}
    if groups:
        rows["group"] = [f"p{i // 3}" for i in range(n)]
    return Dataset.from_dict(rows)


@pytest.fixture()
def corpus() -> dict[str, Dataset]:
    rng = random.Random(0)
    return {"train": _split("train", 200, rng), "dev": _split("dev", 100, rng), "test": _split("test", 50, rng)}


def test_dev_halves_splits_dev_into_disjoint_tune_and_certify_and_leaves_train_and_test(corpus) -> None:
    out = carve_certification(corpus, "dev_halves", fraction=0.5, seed=3)
    tune, certify = set(out["dev"]["id"]), set(out[CERTIFY_SPLIT]["id"])
    assert tune | certify == set(corpus["dev"]["id"]) and not tune & certify
    assert 40 <= len(certify) <= 60
    assert out["train"]["id"] == corpus["train"]["id"] and out["test"]["id"] == corpus["test"]["id"]
    # stratified: each code keeps roughly its share in both halves
    for code in "abcd":
        share = [sum(code in c for c in out[s]["codes"]) / len(out[s]) for s in ("dev", CERTIFY_SPLIT)]
        assert abs(share[0] - share[1]) < 0.15, (code, share)


def test_inner_train_moves_tuning_into_train_and_certifies_on_the_whole_dev(corpus) -> None:
    out = carve_certification(corpus, "inner_train", fraction=0.2, seed=3)
    assert out[CERTIFY_SPLIT]["id"] == corpus["dev"]["id"]
    inner, rest = set(out["dev"]["id"]), set(out["train"]["id"])
    assert inner | rest == set(corpus["train"]["id"]) and not inner & rest and 30 <= len(inner) <= 50
    assert out["test"]["id"] == corpus["test"]["id"]


def test_all_labels_carves_like_inner_train_but_keeps_dev_for_the_refit_alone(corpus) -> None:
    inner = carve_certification(corpus, "inner_train", fraction=0.2, seed=3)
    out = carve_certification(corpus, "all_labels", fraction=0.2, seed=3)
    assert CERTIFY_SPLIT not in out and out[REFIT_ONLY_SPLIT]["id"] == corpus["dev"]["id"]
    assert out["train"]["id"] == inner["train"]["id"] and out["dev"]["id"] == inner["dev"]["id"]
    assert refit_splits(out) == ("train", "dev", REFIT_ONLY_SPLIT) and refit_splits(inner) == ("train", "dev")


def test_calibrate_refuses_a_run_fitted_on_every_label() -> None:
    from medcoder.workflows.calibrate import refuse_all_labels

    with pytest.raises(ConfigError, match=r"^run r1 was trained with certification.design=all_labels: every") as info:
        refuse_all_labels("r1", {"design": "all_labels", "fraction": 0.2, "seed": 0, "refit": True})
    assert "\n" not in str(info.value)
    refuse_all_labels("r2", {"design": "inner_train", "fraction": 0.2, "seed": 0, "refit": True})
    refuse_all_labels("r3", None)  # a run from before the certification group


def test_the_carve_is_a_function_of_the_seed(corpus) -> None:
    a = carve_certification(corpus, "dev_halves", fraction=0.5, seed=1)
    b = carve_certification(corpus, "dev_halves", fraction=0.5, seed=1)
    c = carve_certification(corpus, "dev_halves", fraction=0.5, seed=2)
    assert a[CERTIFY_SPLIT]["id"] == b[CERTIFY_SPLIT]["id"] != c[CERTIFY_SPLIT]["id"]


def test_groups_never_straddle_tune_and_certify() -> None:
    rng = random.Random(1)
    corpus = {"train": _split("train", 30, rng), "dev": _split("dev", 90, rng, groups=True)}
    out = carve_certification(corpus, "dev_halves", fraction=0.5, seed=0)
    assert not set(out["dev"]["group"]) & set(out[CERTIFY_SPLIT]["group"])


def test_none_changes_nothing_and_bad_settings_are_one_line_errors(corpus) -> None:
    assert carve_certification(corpus, "none", fraction=0.5, seed=0) == corpus
    with pytest.raises(ConfigError, match="certification.design='halves'"):
        carve_certification(corpus, "halves", fraction=0.5, seed=0)
    with pytest.raises(ConfigError, match=r"certification.fraction=1.0 is not in \(0, 1\)"):
        carve_certification(corpus, "dev_halves", fraction=1.0, seed=0)
    with pytest.raises(ConfigError, match="already has a 'certify' split"):
        carve_certification({**corpus, CERTIFY_SPLIT: corpus["dev"]}, "dev_halves", fraction=0.5, seed=0)


def test_calibrate_certifies_on_certify_and_warns_when_a_run_has_none(corpus, caplog) -> None:
    from datasets import DatasetDict

    from medcoder.workflows.calibrate import certification_split

    carved = DatasetDict(carve_certification(corpus, "dev_halves", fraction=0.5, seed=0))
    assert certification_split(carved, "dev", "test") == CERTIFY_SPLIT
    with caplog.at_level("WARNING"):
        assert certification_split(DatasetDict(corpus), "dev", "test") == "dev"
    assert "guarantee is weaker than stated" in caplog.text
