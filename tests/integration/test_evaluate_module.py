"""The shipped ``evaluate`` module loads by path with the Hub unreachable and matches compute_all.

The load runs in a subprocess so the offline variables and a fresh HF_HOME under tmp_path are in
place before ``evaluate`` reads its config at import time, and nothing lands in ~/.cache.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from medcoder.evaluation import METRIC_KEYS, METRIC_SCRIPT, compute_all, tune_global_threshold

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from medcoder.evaluation import load_metric

    data = json.load(open(sys.argv[1]))
    metric = load_metric()
    tuned = metric.compute(predictions=data["probs"], references=data["y"])
    fixed = metric.compute(
        predictions=data["probs"],
        references=data["y"],
        threshold=0.4,
        gold_codes=data["gold"],
        label_codes=data["codes"],
    )
    json.dump({"tuned": tuned, "fixed": fixed, "module": type(metric).__module__}, sys.stdout)
    """
)


def _assert_same(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_evaluate_load_by_path_offline_matches_compute_all(tmp_path):
    rng = np.random.default_rng(3)
    y = (rng.random((12, 9)) < 0.25).astype(int)
    probs = np.clip(0.4 * y + 0.6 * rng.random(y.shape), 0, 1)
    codes = [f"K{j}" for j in range(y.shape[1])]
    gold = [
        [codes[j] for j in np.flatnonzero(row)] + (["Z99"] if i % 3 == 0 else [])
        for i, row in enumerate(y)
    ]
    data_file = tmp_path / "data.json"
    data_file.write_text(
        json.dumps({"probs": probs.tolist(), "y": y.tolist(), "gold": gold, "codes": codes})
    )
    script = tmp_path / "run_metric.py"
    script.write_text(_SCRIPT)

    env = dict(os.environ)
    env.update(
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_EVALUATE_OFFLINE="1",
    )
    for var in ("HF_MODULES_CACHE", "HF_METRICS_CACHE", "HF_DATASETS_CACHE"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, str(script), str(data_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)

    # the module was imported from evaluate's copy inside the temporary HF_HOME
    assert (tmp_path / "hf_home" / "modules").is_dir()
    assert "medcoder_metric" in out["module"]

    # the Arrow round trip stores predictions as float32; compare on the same values
    probs32 = probs.astype(np.float32).astype(np.float64)
    threshold = tune_global_threshold(probs32, y)
    expected_tuned = compute_all(probs32, y, threshold=threshold) | {"threshold": threshold}
    _assert_same(out["tuned"], expected_tuned)

    expected_fixed = compute_all(probs32, y, threshold=0.4, gold_codes=gold, label_codes=codes)
    _assert_same(out["fixed"], expected_fixed | {"threshold": 0.4})
    assert list(out["fixed"]) == [*METRIC_KEYS, "threshold"]


def test_metric_script_ships_inside_the_package():
    assert METRIC_SCRIPT.is_file()
    assert METRIC_SCRIPT.parent.name == METRIC_SCRIPT.stem  # evaluate.load(folder) also works
    source = METRIC_SCRIPT.read_text()
    assert "from ." not in source  # evaluate copies the script; relative imports would break
