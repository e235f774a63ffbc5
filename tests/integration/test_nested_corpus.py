"""``benchmarks/nested_corpus.py``: the CodiEsp copy one level down that choices.md section 9 read a
whole recipe on. Its train must be exactly the seed's four fifths and its test exactly the seed's
tuning fifth (else "never saw the tuning fifth" would be false), with every label row kept."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import DatasetDict

from medcoder.data import LabelSpace, load_codiesp
from medcoder.data.splits import carve_certification

from ..helpers.paths import CODIESP_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

pytestmark = pytest.mark.skipif(not CODIESP_DIR.exists(), reason="CodiEsp corpus not present next to the repository")


def test_the_copy_holds_the_seeds_carve_and_a_run_file_reads_back(tmp_path, monkeypatch) -> None:
    import nested_corpus

    monkeypatch.setenv("MEDCODER_CODIESP_DIR", str(CODIESP_DIR))
    out = tmp_path / "copy"
    counts = nested_corpus.build("es-P", 43, out)
    original = load_codiesp(CODIESP_DIR, language="es", code_type="P", splits=("train", "dev"))
    carved = carve_certification(DatasetDict(dict(original)), "inner_train", fraction=0.2, seed=43)
    copy = load_codiesp(out, language="es", code_type="P", splits=("train", "test"))
    assert counts == {"train_notes": len(carved["train"]), "test_notes": len(carved["dev"])}
    for mine, theirs in (("train", "train"), ("test", "dev")):
        assert list(copy[mine]["id"]) == sorted(carved[theirs]["id"])
        assert dict(zip(copy[mine]["id"], copy[mine]["codes"], strict=True)) == dict(
            zip(carved[theirs]["id"], carved[theirs]["codes"], strict=True))
    with pytest.raises(SystemExit, match="exists"):  # never writes into an existing folder
        nested_corpus.build("es-P", 43, out)
    # a run file that ranks every gold code first reads back as MAP 1
    run = tmp_path / "run"
    run.mkdir()
    lines = [f"{doc} Q0 {code} {r + 1} {10.0 - r} medcoder"
             for doc, codes in zip(copy["test"]["id"], copy["test"]["codes"], strict=True)
             for r, code in enumerate(codes)]
    (run / "codiesp_run_test.trec").write_text("\n".join(lines) + "\n")
    (run / "metrics.json").write_text('{"test_map": 1.0}')
    LabelSpace.from_codes(copy["test"]["codes"], min_count=1).to_json(run / "labels.json")
    read = nested_corpus.read_run(run, "es-P", out)
    assert read["tuning_map"] == pytest.approx(1.0) and np.isclose(read["tuning_top_precision"]["top10"], 1.0)
