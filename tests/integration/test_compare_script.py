"""scripts/compare.py end to end on a temp SQLite MLflow store with fake FINISHED training runs.

Runs are made with the MLflow client (no training): each logs ``note_predictions_test.json.gz``
(or, as an old run, only ``codiesp_run_test.trec`` + labels.json + config.yaml). Checks the
workflow (files, CIs, p-values, the comparison run) and the script (exit codes, one-line errors).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from medcoder.data import LabelSpace
from medcoder.errors import ConfigError
from medcoder.evaluation.codiesp_run import write_codiesp_run
from medcoder.evaluation.note_predictions import (
    build_note_predictions,
    note_predictions_filename,
    write_note_predictions,
)
from medcoder.tracking import setup_experiment
from medcoder.workflows.factories import build_tracking

from ..helpers.configs import compose_named
from ..helpers.paths import REPO_ROOT

CODES = [f"C{j:02d}" for j in range(25)]
N_NOTES = 40
FAST = ["bootstrap.n_resamples=499", "permutation.n_resamples=499"]


def _gold(n: int, seed: int = 0) -> tuple[list[str], list[list[str]], np.ndarray]:
    rng = np.random.default_rng(seed)
    gold = [list(rng.choice(CODES, rng.integers(1, 4), replace=False)) + (["Z99"] if i % 5 == 0 else [])
            for i in range(n)]
    y = np.array([[c in g for c in CODES] for g in gold], dtype=float)
    return [f"doc-{i}" for i in range(n)], gold, y


def _log_run(client: MlflowClient, experiment_id: str, name: str, folder: Path, *, preds=None,
             tags: dict[str, str] | None = None, files: tuple[Path, ...] = (), metrics: dict[str, float] | None = None
             ) -> str:
    run = client.create_run(experiment_id, run_name=name, tags={"medcoder.model": "fake", **(tags or {})})
    rid = run.info.run_id
    if preds is not None:
        path = write_note_predictions(folder / name / "note_predictions_test.json.gz", preds)
        client.log_artifact(rid, str(path))
    for f in files:
        client.log_artifact(rid, str(f))
    for k, v in (metrics or {}).items():
        client.log_metric(rid, k, v)
    client.set_terminated(rid, "FINISHED")
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store with: a sweep parent and two children (good, weak), a twin of weak, a run on fewer
    notes, a run without any per-note artifact, and an old run with only its TREC ranking."""
    root = tmp_path_factory.mktemp("compare_root")
    folder = tmp_path_factory.mktemp("compare_artifacts")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = compose_named("compare", [f"paths.root_dir={root}", f"tracking.uri={uri}", "baseline=x"])
    experiment_id = setup_experiment(build_tracking(cfg))
    client = MlflowClient()
    ids, gold, y = _gold(N_NOTES)
    rng = np.random.default_rng(1)
    good_logits = rng.normal(size=y.shape) + 3.0 * y - 1.5
    good_probs = 1 / (1 + np.exp(-good_logits))
    weak_probs = np.clip(rng.random(y.shape) * 0.9 + 0.1 * y, 0, 1)
    good = build_note_predictions(ids, good_probs, CODES, gold, threshold=0.5)
    weak = build_note_predictions(ids, weak_probs, CODES, gold, threshold=0.5)
    fewer = build_note_predictions(ids[:-3], weak_probs[:-3], CODES, gold[:-3], threshold=0.5)

    parent = client.create_run(experiment_id, run_name="sweep", tags={"medcoder.kind": "train_sweep",
                                                                      "medcoder.sweep_parent": "true"})
    client.set_terminated(parent.info.run_id, "FINISHED")
    child = {"mlflow.parentRunId": parent.info.run_id}
    runs = {
        "good": _log_run(client, experiment_id, "good", folder, preds=good, tags={**child, "lr": "high"}),
        "weak": _log_run(client, experiment_id, "weak", folder, preds=weak, tags={**child, "lr": "low"}),
        "weak_twin": _log_run(client, experiment_id, "weak_twin", folder, preds=weak, tags={"lr": "low"}),
        "fewer": _log_run(client, experiment_id, "fewer", folder, preds=fewer),
        "empty": _log_run(client, experiment_id, "empty", folder),
    }
    # an "old" run: the same scores as `good`, stored only as the TREC ranking (+ corpus in config)
    corpus = folder / "test.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": i, "text": "x", "codes": g}) for i, g in zip(ids, gold, strict=True)))
    old = folder / "old"
    old.mkdir()
    _, trec = write_codiesp_run(old / "codiesp_run_test.tsv", ids, CODES, good_logits)
    LabelSpace(CODES, {c: 1 for c in CODES}).to_json(old / "labels.json")
    OmegaConf.save(OmegaConf.create({"data": {"name": "jsonl", "format": "jsonl", "train": str(corpus),
                                              "dev": str(corpus), "test": str(corpus), "id_column": "id",
                                              "text_column": "text", "codes_column": "codes", "on_error": "skip"}}),
                   old / "config.yaml")
    runs["old"] = _log_run(client, experiment_id, "old", folder, files=(trec, old / "labels.json", old / "config.yaml"),
                           metrics={"decision_threshold": 0.5})
    runs["parent"] = parent.info.run_id
    # a fused run: its own predictions plus each view alone (note_predictions_test_<view>.json.gz)
    fused = folder / "fused"
    fused.mkdir()
    views = [write_note_predictions(fused / note_predictions_filename("test", v), p)
             for v, p in (("neural", weak), ("dictionary", good))]
    runs["fused"] = _log_run(client, experiment_id, "fused", folder, preds=good, files=tuple(views))
    return {"root": root, "uri": uri, "runs": runs}


def _cfg(store: dict, *overrides: str, out: Path | None = None):
    extra = [f"output_dir={out}"] if out else []
    return compose_named("compare", [f"paths.root_dir={store['root']}", f"tracking.uri={store['uri']}",
                                     *FAST, *extra, *overrides])


def test_compare_sweep_children_and_twin(store, tmp_path) -> None:
    from medcoder.workflows.compare import compare

    r = store["runs"]
    out = tmp_path / "cmp"
    result = compare(_cfg(store, f"parent={r['parent']}", f"run_ids=[{r['weak_twin']}]", f"baseline={r['weak']}",
                          out=out))
    comp = result.comparison
    assert set(comp.systems) == {r["good"], r["weak"], r["weak_twin"]}
    assert comp.n_notes == N_NOTES
    for name in comp.systems:
        for m in ("map", "micro_f1", "p_at_8"):
            e = comp.results[name][m].estimate
            assert e.low <= e.value <= e.high, (name, m, e)
    # a run against an identical one: nothing to tell apart
    assert all(comp.results[r["weak_twin"]][m].p_value == 1.0 for m in comp.metrics)
    # a clearly better system
    assert all(comp.results[r["good"]][m].p_value < 0.01 for m in comp.metrics)

    # files, written under output_dir and logged to the comparison run
    assert sorted(p.name for p in out.iterdir()) == sorted(result.files)
    md = (out / "leaderboard.md").read_text()
    assert "good (" in md and "**(baseline)**" in md
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert rows[0]["run_id"] == r["good"] and len(rows) == 3
    report = json.loads((out / "comparison.json").read_text())
    assert report["baseline"] == r["weak"] and report["settings"]["random_state"] == 0
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    client = MlflowClient(store["uri"])
    run = client.get_run(result.run_id)
    assert run.data.tags["medcoder.kind"] == "comparison"
    assert run.data.tags["medcoder.baseline_run"] == r["weak"]
    assert set(run.data.tags["medcoder.compared_runs"].split(",")) == set(comp.systems)
    assert run.info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"leaderboard.md", "leaderboard.csv", "comparison.json", "comparison.png", "config.yaml"} <= logged

    # fixed seeds: the same comparison gives the same numbers
    again = compare(_cfg(store, f"parent={r['parent']}", f"run_ids=[{r['weak_twin']}]", f"baseline={r['weak']}",
                         out=tmp_path / "again"))
    assert again.run_id != result.run_id  # a comparison run of its own each time
    assert (tmp_path / "again" / "leaderboard.csv").read_text() == (out / "leaderboard.csv").read_text()


def test_views_of_a_fused_run_are_systems_on_the_same_notes(store, tmp_path) -> None:
    from medcoder.workflows.compare import compare

    fused = store["runs"]["fused"]
    result = compare(_cfg(store, f"run_ids=[{fused}]", f"baseline={fused}:neural", "views=true", out=tmp_path / "v"))
    comp = result.comparison
    assert set(comp.systems) == {fused, f"{fused}:neural", f"{fused}:dictionary"}
    for m in comp.metrics:  # the dictionary view was logged with the fused run's own scores
        assert comp.results[f"{fused}:dictionary"][m].estimate.value == comp.results[fused][m].estimate.value
        assert comp.results[fused][m].p_value < 0.01  # both clearly better than the neural baseline
    assert "fused (" in (tmp_path / "v" / "leaderboard.md").read_text()
    assert "/ neural alone" in (tmp_path / "v" / "leaderboard.md").read_text()
    with pytest.raises(ConfigError, match="is not among the compared runs"):
        compare(_cfg(store, f"run_ids=[{fused}]", f"baseline={fused}:tfidf", "views=true", out=tmp_path / "w"))


def test_tag_filter_refuses_other_notes_and_old_run_falls_back(store, tmp_path) -> None:
    from medcoder.workflows.compare import compare

    r = store["runs"]
    # tags select good + weak + weak_twin + fewer + empty + old (all "fake"); the comparison
    # itself and the sweep parent are not training runs. `fewer` is on other notes: refused.
    with pytest.raises(ConfigError, match=f"runs {r['weak']} and {r['fewer']} do not cover the same test notes"):
        compare(_cfg(store, "tags={medcoder.model:fake}", f"baseline={r['weak']}", out=tmp_path / "a"))
    result = compare(_cfg(store, f"run_ids=[{r['good']},{r['old']},{r['weak']}]", f"baseline={r['weak']}",
                          out=tmp_path / "b"))
    comp = result.comparison
    # the old run has the good run's scores: same metrics through the TREC fallback
    for m in comp.metrics:
        assert comp.results[r["old"]][m].estimate.value == pytest.approx(comp.results[r["good"]][m].estimate.value)
    report = json.loads((tmp_path / "b" / "comparison.json").read_text())
    assert report["sources"][r["old"]] == "trec"


@pytest.mark.parametrize(("overrides", "message"), [
    (["run_ids=[nope123]", "baseline=nope123"], "run_ids='nope123': no such run"),
    (["tags={{medcoder.model:nothing}}", "baseline=abc"], "no FINISHED training runs match"),
    (["run_ids=[{good},{weak}]", "baseline={weak_twin}"], "is not among the 2 selected runs"),
    (["run_ids=[{good},{empty}]", "baseline={good}"], "has no artifact 'note_predictions_test.json.gz'"),
    (["run_ids=[{good},{fewer}]", "baseline={good}"], "do not cover the same test notes"),
])
def test_bad_input_is_one_config_error(store, tmp_path, overrides, message) -> None:
    from medcoder.workflows.compare import compare

    filled = [o.format(**store["runs"]) for o in overrides]
    with pytest.raises(ConfigError, match=message) as exc:
        compare(_cfg(store, *filled, out=tmp_path / "x"))
    assert "\n" not in str(exc.value)


def test_filter_selected_run_without_predictions_is_left_out(store, tmp_path) -> None:
    from medcoder.workflows.compare import compare

    r = store["runs"]
    client = MlflowClient(store["uri"])
    client.set_tag(r["empty"], "lr", "low")  # now matched by the filter, but it has no predictions
    try:
        result = compare(_cfg(store, "tags={lr:low}", f"baseline={r['weak']}", out=tmp_path / "c"))
    finally:
        client.delete_tag(r["empty"], "lr")
    assert set(result.comparison.systems) == {r["weak"], r["weak_twin"]}
    assert set(result.skipped) == {r["empty"]}
    assert json.loads((tmp_path / "c" / "comparison.json").read_text())["skipped"][r["empty"]]


def _script(store: dict, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "compare.py"), f"paths.root_dir={store['root']}",
         f"tracking.uri={store['uri']}", *FAST, *args],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )


def test_script_runs_and_fails_in_one_line(store, tmp_path) -> None:
    r = store["runs"]
    proc = _script(store, tmp_path, f"run_ids=[{r['good']},{r['weak']}]", f"baseline={r['weak']}",
                   f"output_dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = proc.stdout.strip().splitlines()[-1].removeprefix("comparison_run_id=")
    assert MlflowClient(store["uri"]).get_run(run_id).data.tags["medcoder.kind"] == "comparison"
    assert (tmp_path / "out" / "leaderboard.md").is_file()

    proc = _script(store, tmp_path, f"run_ids=[{r['good']},{r['fewer']}]", f"baseline={r['good']}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and r["good"] in errors[0] and r["fewer"] in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_missing_baseline_is_one_line_before_any_store_access(tmp_path, capsys) -> None:
    from medcoder.cli import run_or_exit
    from medcoder.workflows.compare import compare

    cfg = compose_named("compare", [f"paths.root_dir={tmp_path}", "run_ids=[abc]"])
    with pytest.raises(SystemExit) as exc:
        run_or_exit(lambda: compare(cfg))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "baseline" in err[0]
    assert not (tmp_path / "mlflow.db").exists()
