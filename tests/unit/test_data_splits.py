"""The general train/dev/test splitter and split-file reader (medcoder.data.splits)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcoder.data.splits import (
    multilabel_shuffle_split,
    read_split_files,
    split_file_paths,
    stratified_group_split,
)
from medcoder.errors import ConfigError, DataError


def test_stratified_split_keeps_label_shares() -> None:
    rng = random.Random(0)
    groups, codes = [], []
    for s in range(600):
        for _ in range(rng.randint(1, 2)):
            groups.append(s)
            codes.append(rng.sample(["a", "b", "c", "d", "e"], k=rng.randint(1, 2)) + [f"r{rng.randint(0, 60)}"])
    names = stratified_group_split(groups, codes, test_size=0.15, val_size=0.10, seed=10)
    for label in "abcde":
        rows = [n for n, cs in zip(names, codes, strict=True) if label in cs]
        assert abs(rows.count("test") / len(rows) - 0.15) < 0.05
        assert abs(rows.count("dev") / len(rows) - 0.10) < 0.05
    split_of_group: dict[int, str] = {}
    for g, n in zip(groups, names, strict=True):
        assert split_of_group.setdefault(g, n) == n  # a group never spans two splits


def test_stratified_split_rejects_bad_fractions_and_tiny_corpora() -> None:
    with pytest.raises(ConfigError, match="not valid fractions"):
        stratified_group_split([1, 2], [["a"], ["b"]], test_size=0.6, val_size=0.5, seed=0)
    with pytest.raises(DataError, match="cannot split 1 samples"):
        multilabel_shuffle_split([[0]], 1, test_size=0.5, seed=0)


def test_split_equals_iterative_stratification_package() -> None:
    """Same splits as iterative-stratification's MultilabelStratifiedShuffleSplit (seed, ties)."""
    ml = pytest.importorskip("iterstrat.ml_stratifiers")
    rng = np.random.RandomState(1)
    for trial in range(25):
        n, k = int(rng.randint(8, 120)), int(rng.randint(2, 12))
        y = (rng.rand(n, k) < rng.uniform(0.05, 0.5)).astype(int)
        y[rng.rand(n) < 0.1] = 0  # some samples without labels
        if y.sum() == 0:
            y[0, 0] = 1
        label_sets = [list(np.flatnonzero(row)) for row in y]
        for test_size in (0.15, 0.10 / 0.85, 0.5):
            msss = ml.MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=10 + trial)
            _, test = next(msss.split(np.zeros((n, 1)), y))
            ours = np.flatnonzero(multilabel_shuffle_split(label_sets, k, test_size=test_size, seed=10 + trial))
            assert ours.tolist() == sorted(test.tolist()), (trial, test_size)


def test_read_split_files_table_and_lists(tmp_path: Path) -> None:
    table = tmp_path / "splits.csv"
    pd.DataFrame({"_id": ["1", "2", "3"], "split": ["train", "val", "test"]}).to_csv(table, index=False)
    assert read_split_files(table) == {1: "train", 2: "dev", 3: "test"}
    lists = {}
    for split, ids in (("train", "10\n11\n"), ("val", "12\n"), ("test", "13\n")):
        lists[split] = tmp_path / f"{split}_ids.csv"
        lists[split].write_text(ids)
    assert read_split_files(lists) == {10: "train", 11: "train", 12: "dev", 13: "test"}
    assert split_file_paths(None) == [] and split_file_paths(table) == [table]
    assert split_file_paths(lists) == [lists["test"], lists["train"], lists["val"]]


def test_read_split_files_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_split_files(tmp_path / "nope.feather")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"_id": ["1"], "split": ["holdout"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="unknown value 'holdout'"):
        read_split_files(bad)
    pd.DataFrame({"_id": ["x"], "split": ["train"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match="'x' is not an integer"):
        read_split_files(bad)
    with pytest.raises(ConfigError, match="data.split_files.holdout: unknown split"):
        read_split_files({"holdout": bad})
