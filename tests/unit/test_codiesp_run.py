"""The CodiEsp run file gives, under the official tool (trectools), the MAP the run logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medcoder.evaluation.codiesp_run import write_codiesp_run
from medcoder.evaluation.metrics import codiesp_map


def test_trectools_map_of_the_run_file_equals_codiesp_map(tmp_path) -> None:
    import trectools  # the official MAP implementation (a dev dependency)

    rng = np.random.default_rng(0)
    codes = [f"C{i:02d}" for i in range(40)]
    ids = [f"doc{i}" for i in range(30)]
    gold = [sorted(rng.choice(codes, size=rng.integers(1, 6), replace=False).tolist()) + ["OUTSIDE"] for _ in ids]
    scores = rng.random((30, 40))
    scores[:, :5] = 0.5  # ties: trectools would re-sort them if the written scores tied
    tsv, trec = write_codiesp_run(tmp_path / "run.tsv", ids, codes, scores)
    assert tsv.read_text().splitlines()[0].count("\t") == 1  # the official 2-column format
    qrels = tmp_path / "gold.qrel"
    qrels.write_text("".join(f"{d} 0 {c} 1\n" for d, cs in zip(ids, gold, strict=True) for c in cs))
    run = trectools.TrecRun(str(trec))
    ev = trectools.TrecEval(run, trectools.TrecQrel(str(qrels)))
    official = ev.get_map(depth=1000, trec_eval=False)
    assert official == pytest.approx(codiesp_map(scores, codes, gold), abs=1e-9)
    # the .trec order is the .tsv order, and scores strictly decrease within a note
    df = pd.read_csv(trec, sep=" ", header=None, names=["q", "q0", "doc", "rank", "score", "tag"])
    assert (df.groupby("q")["score"].diff().dropna() < 0).all()
    assert [ln.split("\t")[1] for ln in tsv.read_text().splitlines()[:40]] == df["doc"].tolist()[:40]
