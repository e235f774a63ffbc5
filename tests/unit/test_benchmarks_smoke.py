"""The benchmark harness's plumbing (no model, no corpus): child measurement, result parsing,
data subsampling/round trip and the Markdown report."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import _common  # noqa: E402
import run_all  # noqa: E402


def _splits(n: int = 5) -> datasets.DatasetDict:
    return datasets.DatasetDict({
        name: datasets.Dataset.from_dict({
            "id": [f"{name}{i}" for i in range(n)],
            "text": [f"note {i} about diabetes" for i in range(n)],
            "codes": [["E11.9", "I10"][: 1 + i % 2] for i in range(n)],
        })
        for name in ("train", "dev", "test")
    })


def test_last_json_result_takes_last_line_with_system():
    lines = ["log line", '{"system": "a", "test_map": 0.1}', "{not json", '{"other": 1}', "done"]
    assert run_all.last_json_result(lines) == {"system": "a", "test_map": 0.1}
    assert run_all.last_json_result(["nothing"]) is None


def test_limit_and_jsonl_round_trip(tmp_path):
    from medcoder.data import load_tabular

    small = _common.limit_splits(_splits(5), 3)
    assert {n: len(d) for n, d in small.items()} == {"train": 3, "dev": 3, "test": 3}
    assert _common.limit_splits(small, None) is small
    files = _common.write_jsonl_splits(small, tmp_path / "data")
    back = load_tabular(files["train"], files["dev"], files["test"], format="jsonl")
    assert back["train"]["codes"] == small["train"]["codes"]
    assert back["test"]["id"] == small["test"]["id"]


def test_run_child_measures_its_own_peak_rss(tmp_path):
    code = "x = bytearray(150 * 2**20); x[::4096] = b'1' * len(x[::4096]); print('{\"system\": \"probe\"}')"
    child = run_all.run_child("probe", [sys.executable, "-c", code], tmp_path / "probe.log")
    assert child["returncode"] == 0
    assert child["peak_rss_mib"] > 140
    assert run_all.last_json_result(child["stdout_lines"]) == {"system": "probe"}
    small = run_all.run_child("small", [sys.executable, "-c", "pass"], tmp_path / "small.log")
    assert small["peak_rss_mib"] < 100  # not the running max over earlier children
    failed = run_all.run_child("fail", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "f.log")
    assert failed["returncode"] == 3


def test_markdown_report(tmp_path):
    report = {
        "date": "2026-01-01 00:00", "command": "python benchmarks/run_all.py --limit-docs 3",
        "git_commit": "abc", "limit_docs": 3, "n_notes": {"train": 3, "dev": 3, "test": 3},
        "machine": _common.machine_info(),
        "results": [
            {"system": "tfidf-logreg (train)", "test_map": 0.2, "test_micro_f1": 0.3, "test_p_at_8": 0.25,
             "train_wall_seconds": 12.0, "train_notes_per_second": 41.7, "peak_rss_mib": 300.0, "returncode": 0},
            {"system": "medcoder quickstart", "returncode": 1},
        ],
    }
    text = run_all.markdown(report)
    assert "| tfidf-logreg (train) | 0.2000 | 0.3000 | 0.2500 | 12 | 41.70 | 300 |" in text
    assert "FAILED rc=1" in text
    assert "smoke check, not comparable" in text
    md, js = run_all.result_paths(tmp_path, "2026-01-01", "host", 3)
    assert md.name == "2026-01-01-host-limit3.md" and js.suffix == ".json"


def test_hybrid_table_header_names_the_cpu_torch_and_commit():
    """The header once printed '?' for all three: it read keys machine_info() does not return."""
    import hybrid_table

    info = {**_common.machine_info(), "git_commit": "abc1234"}
    header = hybrid_table.markdown([], "python benchmarks/hybrid_table.py", info).splitlines()[2]
    assert info["cpu_model"] in header and f"torch {info['torch']}" in header and "`abc1234`" in header
    assert "?" not in header


def test_hybrid_table_reports_mean_and_sd_over_seeds_and_counts_certifying_seeds():
    import hybrid_table

    def run(seed, test_map, tau, n):
        return {"corpus": "es-D", "seed": seed, "run_id": f"r{seed}" * 4,
                "metrics": {"test_map": test_map, "dev_map": 0.7, "test_micro_f1": 0.5, "test_p_at_8": 0.6,
                            "test_map_dictionary": 0.6},
                "frontier": [{"target_precision": 0.95, "tau": tau, "test_n_auto_accepted": n,
                              "test_auto_accept_precision": 0.96 if tau else None},
                             {"target_precision": 0.9, "tau": 0.5, "test_n_auto_accepted": 100,
                              "test_auto_accept_precision": 0.92}],
                "evaluation": {"n_predicted": 200}, "seconds": {"train": 10.0, "calibrate": 2.0}, "predict": {}}

    text = hybrid_table.markdown([run(42, 0.66, 0.9, 40), run(43, 0.68, None, 0)], "cmd",
                                 {"cpu_model": "cpu", "torch": "t", "git_commit": "c"})
    assert "| es-D | **fused (stacker)** | **0.670 ± 0.014** |" in text
    assert "| es-D | dictionary alone | 0.600 ± 0.000 |" in text
    # 0.95: one seed certifies (share 0.20), the other accepts nothing (share 0, counted, not skipped)
    assert "| es-D | 0.95 | 1 of 2 | 0.900 | 0.100 ± 0.141 | 0.960 |" in text
    assert "| es-D | 0.90 | 2 of 2 | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.920 ± 0.000 |" in text


def test_hybrid_table_keeps_all_labels_runs_out_of_the_certified_rows():
    import hybrid_table

    def run(seed, test_map, protocol):
        row = {"corpus": "es-D", "seed": seed, "run_id": f"r{seed}" * 4, "protocol": protocol,
               "metrics": {"test_map": test_map, "dev_map": 0.7, "test_micro_f1": 0.5, "test_p_at_8": 0.6},
               "seconds": {"train": 10.0}}
        if protocol == "certified":
            row.update(frontier=[], evaluation={"n_predicted": 10}, predict={},
                       seconds={"train": 10.0, "calibrate": 2.0})
        return row

    text = hybrid_table.markdown([run(42, 0.65, "certified"), run(42, 0.69, "all_labels"),
                                  run(43, 0.71, "all_labels")], "cmd", {"cpu_model": "c", "torch": "t", "git_commit": "g"})
    assert "| es-D | **fused (stacker)** | **0.650** |" in text  # the certified run alone
    assert "| es-D | **0.700 ± 0.014** | 0.500 ± 0.000 | 0.600 ± 0.000 | 0.6900 / 0.7100 | 10 |" in text
    assert "`certification.design=all_labels`" in text
