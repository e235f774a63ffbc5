"""scripts/retrain.py end to end on the tiny corpus: reviewed notes split by note, a candidate
trained on train + the training part (warm-started from @champion), certified on the held-out
slice only, registered as @candidate (champion untouched), compared on the held-out notes with
CIs; bad exports fail in one line with nothing written."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from medcoder.data._common import build_dataset
from medcoder.data.loaders import load_reviewed
from medcoder.data.splits import CERTIFY_SPLIT, certify_on_reviewed, split_reviewed, text_sha256
from medcoder.errors import BundleError, DataError
from medcoder.workflows.calibrate import calibrate
from medcoder.workflows.export import export_run
from medcoder.workflows.factories import build_corpus
from medcoder.workflows.train import train

from ..helpers.configs import compose_cfg, compose_named, tiny_overrides
from ..helpers.corpus import write_corpus
from ..helpers.paths import REPO_ROOT

NAME = "medcoder-retrain-test"
NEW_CODE = "Z99.89"  # a code coders added: not in the serving model's label space
NEW_WORDS = "ventilator dependence respirator"
# The tiny recipe: design none (24-ish notes cannot spare a tuning fifth); a lax routing target so the
# tiny model auto-accepts something; a few thousand resamples keep the comparison to seconds.
RECIPE = ("trainer=cached_head", "trainer.num_train_epochs=4", "trainer.learning_rate=0.05",
          "trainer.early_stopping_patience=4", "certification.design=none")
ROUTING = ("routing.min_train_count=1", "routing.target_precision=0.6", "routing.check_validity=false")
HOLDOUT = ("holdout.fraction=0.3", "holdout.min_notes=5", "holdout.seed=0")
FAST_COMPARE = ("compare.bootstrap.n_resamples=999", "compare.permutation.n_resamples=999")


def _reviewed_rows(folder: Path, n: int, seed: int = 11) -> list[dict]:
    """Notes the corpus does not hold (another generator seed, ids ``rev-*``) with gold codes, as
    the review export writes them; every fourth carries a code the coders added, and every fifth is
    not ``verified`` (an auto-accepted code of it nobody checked: it may train, never certify)."""
    paths = write_corpus(folder, n_train=n, n_dev=1, n_test=1, seed=seed)
    rows = [json.loads(line) for line in Path(paths["train"]).read_text().splitlines()]
    out = []
    for i, row in enumerate(rows):
        codes, text = list(row["codes"]), row["text"]
        if i % 4 == 0:
            codes.append(NEW_CODE)
            text = f"{NEW_WORDS} {text}"
        out.append({"id": f"rev-{i}", "text": text, "codes": codes, "verified": i % 5 != 1})
    return out


def _split_of(rows: list[dict]):
    """The split retrain makes of an export (HOLDOUT's settings, the rows' verified flags)."""
    return split_reviewed([r["id"] for r in rows], fraction=0.3, min_notes=5, seed=0,
                          verified=[r["verified"] for r in rows])


def _write_export(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: str) -> dict:
    """A corpus, a served model (trained, calibrated, exported, @champion) in a store of its own."""
    root = tmp_path_factory.mktemp("retrain_root")
    corpus = write_corpus(root / "corpus", n_train=40, n_dev=30, n_test=16, seed=5)
    run = train(compose_cfg(tiny_overrides(root, corpus, tiny_encoder, *RECIPE)))
    calibrate(compose_named("calibrate", [f"run_id={run.run_id}", f"paths.root_dir={root}", *ROUTING]))
    export_run(compose_named("export", [f"run_id={run.run_id}", f"paths.root_dir={root}",
                                        f"mlflow_model.registered_model_name={NAME}", "mlflow_model.promote=true"]))
    return {"root": root, "corpus": corpus, "encoder": tiny_encoder, "run_id": run.run_id,
            "uri": f"sqlite:///{root / 'mlflow.db'}"}


def _retrain(serving: dict, reviewed: Path | str, *extra: str) -> subprocess.CompletedProcess:
    root = serving["root"]
    args = [f"reviewed={reviewed}", f"serving=models:/{NAME}@champion",
            *tiny_overrides(root, serving["corpus"], serving["encoder"], *RECIPE), *ROUTING, *HOLDOUT, *FAST_COMPARE,
            *extra]
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "retrain.py"), *args], capture_output=True,
                          text=True, timeout=600, cwd=root)


@pytest.fixture(scope="module")
def retrained(serving: dict) -> dict:
    rows = _reviewed_rows(serving["root"] / "reviewed-src", 40)
    export = _write_export(serving["root"] / "export", rows)
    before = export.read_bytes()
    proc = _retrain(serving, export)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert export.read_bytes() == before  # the user's export is read, never written
    lines = [line for line in proc.stdout.splitlines() if line.startswith("run_id=")]  # the rest: Hydra's log
    assert len(lines) == 1, proc.stdout[-3000:]
    run_id = lines[0].split()[0].removeprefix("run_id=")
    mlflow.set_tracking_uri(serving["uri"])
    return {"rows": rows, "export": export, "line": lines[0], "run_id": run_id, "client": MlflowClient()}


def _snapshot(root: Path, uri: str) -> tuple:
    """What a failed retrain must leave as it was: runs, registered versions, output folders."""
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    runs = sorted(r.info.run_id for e in client.search_experiments() for r in client.search_runs([e.experiment_id]))
    versions = sorted(v.version for v in client.search_model_versions(f"name='{NAME}'"))
    outputs = sorted(str(p.relative_to(root)) for p in (root / "outputs").rglob("*")
                     if "hydra" not in p.parts and "cache" not in p.parts)
    return runs, versions, outputs


# -- the split -------------------------------------------------------------------------------


def test_split_is_disjoint_and_stable_under_the_seed() -> None:
    ids = [f"rev-{i}" for i in range(200)]
    split = split_reviewed(ids, fraction=0.3, min_notes=5, seed=0)
    assert not set(split.held_out) & set(split.train)
    assert set(split.held_out) | set(split.train) == set(ids)
    assert 0.2 < len(split.held_out) / len(ids) < 0.4
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert split_reviewed(shuffled, fraction=0.3, min_notes=5, seed=0) == split  # order does not matter
    assert split_reviewed(ids, fraction=0.3, min_notes=5, seed=1).held_out != split.held_out
    # A note keeps its side when the export grows: a note trained on once is never held out later.
    grown = split_reviewed([*ids, *(f"new-{i}" for i in range(100))], fraction=0.3, min_notes=5, seed=0)
    assert set(split.held_out) <= set(grown.held_out) and set(split.train) <= set(grown.train)


def test_held_out_notes_that_train_or_tune_are_refused(tiny_corpus: dict[str, str]) -> None:
    corpus = build_corpus({"name": "jsonl", "format": "jsonl", **tiny_corpus})
    train_rows = corpus["train"]
    # The corpus's own train notes under new ids (same text): the same notes, found by text.
    ids = [f"copy-{i}" for i in range(len(train_rows))]
    reviewed = build_dataset(ids, list(train_rows["text"]), [list(c) for c in train_rows["codes"]])
    split = split_reviewed(ids, fraction=0.3, min_notes=1, seed=0)
    with pytest.raises(DataError, match=r"held-out reviewed notes are also train notes"):
        certify_on_reviewed(corpus, reviewed, split, tuning="none", fraction=0.2, seed=0)
    # Test notes may not train the candidate either.
    test_rows = corpus["test"]
    ids = [f"t-{i}" for i in range(len(test_rows))]
    reviewed = build_dataset(ids, list(test_rows["text"]), [list(c) for c in test_rows["codes"]])
    split = split_reviewed(ids, fraction=0.3, min_notes=1, seed=0)
    with pytest.raises(DataError, match=r"reviewed training notes are also test notes"):
        certify_on_reviewed(corpus, reviewed, split, tuning="none", fraction=0.2, seed=0)


def test_an_unverified_note_is_never_held_out(tmp_path: Path) -> None:
    """Issue 21 review: a reviewed note whose auto-accepted codes nobody checked carries the serving
    model's own auto-accepts as gold; held out, it would certify a candidate warm-started from that
    model on its own answers. It may train, never certify: in the split, in certify_on_reviewed
    (whatever split it is given), and an export without the field reads as unverified."""
    ids = [f"rev-{i}" for i in range(200)]
    plain = split_reviewed(ids, fraction=0.3, min_notes=5, seed=0)
    unverified = set(plain.held_out[::2])
    split = split_reviewed(ids, fraction=0.3, min_notes=5, seed=0, verified=[i not in unverified for i in ids])
    assert not set(split.held_out) & unverified and unverified <= set(split.train)
    assert set(split.held_out) == set(plain.held_out) - unverified  # verified notes keep their side
    assert set(split.held_out) | set(split.train) == set(ids)
    with pytest.raises(DataError, match="verified"):
        split_reviewed(ids, fraction=0.3, min_notes=5, seed=0, verified=[False] * len(ids))

    rows = _reviewed_rows(tmp_path / "src", 30)
    notes, _, _ = load_reviewed(_write_export(tmp_path / "with", rows))
    assert list(notes["verified"]) == [r["verified"] for r in rows]
    bare, _, _ = load_reviewed(_write_export(tmp_path / "without", [{k: v for k, v in r.items() if k != "verified"}
                                                                    for r in rows]))
    assert not any(bare["verified"])  # absent: false
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "labels.jsonl").write_text(json.dumps({**rows[0], "verified": "yes"}) + "\n")
    with pytest.raises(DataError, match="'verified' must be true or false"):
        load_reviewed(tmp_path / "bad")

    corpus = write_corpus(tmp_path / "corpus", n_train=12, n_dev=6, n_test=6, seed=5)
    base = build_corpus({"name": "jsonl", "format": "jsonl", **corpus})
    every = split_reviewed(list(notes["id"]), fraction=0.5, min_notes=1, seed=0)  # made without the flags
    out = certify_on_reviewed(base, notes, every, tuning="none", fraction=0.2, seed=0)
    flags = dict(zip(notes["id"], notes["verified"], strict=True))
    assert out[CERTIFY_SPLIT]["id"] and all(flags[i] for i in out[CERTIFY_SPLIT]["id"])
    moved = {i for i in every.held_out if not flags[i]}
    assert moved and moved <= set(out["train"]["id"])


def test_an_unreadable_training_list_of_the_serving_model_is_an_error(tmp_path: Path) -> None:
    """The serving model's run cannot be read (another store, or the store down): a one-line error,
    not an empty list (which would let a note it trained on certify the candidate)."""
    from medcoder.workflows.retrain import ServingModel, _serving_training_ids

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        serving = ServingModel("models:/x/1", tmp_path, "b" * 16, "0" * 32, "x", "1")
        with pytest.raises(BundleError, match="cannot read the reviewed notes it trained on") as info:
            _serving_training_ids(serving)
        assert "\n" not in str(info.value)
    finally:
        mlflow.set_tracking_uri(previous)


# -- end to end --------------------------------------------------------------------------------


def test_candidate_is_certified_on_the_held_out_slice_only(serving: dict, retrained: dict) -> None:
    client, run_id, rows = retrained["client"], retrained["run_id"], retrained["rows"]
    split = _split_of(rows)
    assert set(split.held_out) <= {r["id"] for r in rows if r["verified"]}  # never an unverified note
    params = client.get_run(run_id).data.params
    assert params["reviewed.n_held_out"] == str(len(split.held_out))
    assert params["reviewed.n_train"] == str(len(split.train))
    assert params["reviewed.held_out_sha256"] == split.held_out_sha256
    assert params["reviewed.train_sha256"] == split.train_sha256
    assert params["certification.design"] == "reviewed" and params["certification.tuning"] == "none"
    # No note text in params or tags.
    data = client.get_run(run_id).data
    values = [*data.params.values(), *data.tags.values()]
    assert not any(r["text"][:40] in v for r in rows for v in values)

    # The partition calibrate and export rebuilt from the run's config: certify == held-out, disjoint.
    cfg_path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml",
                                                   dst_path=str(serving["root"] / "dl"))
    run_cfg = OmegaConf.load(cfg_path)
    corpus = build_corpus(run_cfg.data, run_cfg.certification)
    certify = set(corpus[CERTIFY_SPLIT]["id"])
    assert certify == set(split.held_out)
    for name in ("train", "dev"):
        assert not certify & set(corpus[name]["id"])
        assert not {text_sha256(t) for t in corpus[CERTIFY_SPLIT]["text"]} & {text_sha256(t) for t in corpus[name]["text"]}
    assert set(split.train) <= set(corpus["train"]["id"])

    bundle = serving["root"] / "outputs" / "bundles" / run_id
    calibration = json.loads((bundle / "calibration.json").read_text())
    assert calibration["certification_split"] == CERTIFY_SPLIT
    assert calibration["calibration_split"] == "dev"
    # The code coders added is in the candidate's label space (from the combined train).
    assert NEW_CODE in json.loads((bundle / "labels.json").read_text())["codes"]
    warm = client.get_run(run_id).data.params.get("warm_start.source", "")
    assert warm  # warm-started from the serving bundle


def test_candidate_alias_set_and_champion_unchanged(retrained: dict) -> None:
    client = retrained["client"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    candidate = client.get_model_version_by_alias(NAME, "candidate")
    assert str(candidate.version) == "2" and candidate.run_id == retrained["run_id"]
    line = retrained["line"]
    assert f"candidate={NAME} v2 @candidate" in line
    assert f"python scripts/promote.py registered_model_name={NAME} version=2" in line


def test_comparison_is_attached_with_cis(serving: dict, retrained: dict) -> None:
    run_id = retrained["run_id"]
    names = {a.path for a in retrained["client"].list_artifacts(run_id, "retrain")}
    assert {"retrain/comparison.json", "retrain/comparison.md", "retrain/reviewed_split.json"} <= names
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="retrain/comparison.json",
                                               dst_path=str(serving["root"] / "dl2"))
    report = json.loads(Path(path).read_text())
    split = _split_of(retrained["rows"])
    assert report["n_notes"] == len(split.held_out) and report["split"] == CERTIFY_SPLIT
    # the warm-start chain's reviewed training notes (serving v1 was no retrain: this run's own part)
    listed = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="retrain/reviewed_split.json", dst_path=str(serving["root"] / "dl3"))).read_text())
    assert listed["trained_cumulative"] == sorted(split.train) == sorted(listed["train"])
    assert report["baseline"] == "serving" and report["serving"]["pinned"] == f"models:/{NAME}/1"
    for metric in ("map", "micro_f1", "p_at_8"):
        est = report["results"]["candidate"][metric]["estimate"]
        assert est["low"] <= est["value"] <= est["high"]
        assert report["results"]["candidate"][metric]["delta"] is not None
        assert report["results"]["candidate"][metric]["p_value"] is not None
    assert "held_out=" in retrained["line"] and "map " in retrained["line"] and "Δ" in retrained["line"]


# -- bad input ---------------------------------------------------------------------------------


def _bad_export(folder: Path, case: str) -> Path:
    if case == "missing":
        return folder / "labels.jsonl"
    if case == "empty":
        return _write_export(folder, [])
    return _write_export(folder, _reviewed_rows(folder / "src", 4, seed=13))  # 4 notes <= holdout.min_notes=5


def test_a_missing_export_fails_in_one_line_with_nothing_written(serving: dict) -> None:
    """Through the script: exit code 2, one ``error:`` line naming the file, nothing written."""
    root = serving["root"]
    before = _snapshot(root, serving["uri"])
    proc = _retrain(serving, _bad_export(root / "bad-missing", "missing"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "file not found" in errors[0] and "reviewed=" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert _snapshot(root, serving["uri"]) == before


@pytest.mark.parametrize(("case", "expected"), [
    ("empty", "no reviewed notes in the export"),
    ("all_held_out", "all needed for the held-out minimum holdout.min_notes=5"),
])
def test_bad_exports_are_refused_before_anything_is_written(serving: dict, case: str, expected: str) -> None:
    """In process (the script turns the same ``DataError`` into one line and exit 2, as above)."""
    from medcoder.workflows.retrain import retrain

    root = serving["root"]
    reviewed = _bad_export(root / f"bad-{case}", case)
    cfg = compose_named("retrain", [f"reviewed={reviewed}", f"serving=models:/{NAME}@champion",
                                    *tiny_overrides(root, serving["corpus"], serving["encoder"], *RECIPE), *ROUTING,
                                    *HOLDOUT, *FAST_COMPARE])
    before = _snapshot(root, serving["uri"])
    with pytest.raises(DataError) as info:
        retrain(cfg)
    message = str(info.value)
    assert expected in message and f"reviewed={reviewed}" in message and "\n" not in message
    assert _snapshot(root, serving["uri"]) == before


def test_a_later_retrain_never_holds_out_notes_the_serving_model_trained_on(serving: dict, retrained: dict) -> None:
    """Serving the retrained version, another holdout.seed would hold out notes it trained on:
    refused (its run's retrain/reviewed_split.json lists them), before anything is written."""
    from medcoder.workflows.retrain import retrain

    root = serving["root"]
    cfg = compose_named("retrain", [f"reviewed={retrained['export']}", f"serving=models:/{NAME}/2",
                                    *tiny_overrides(root, serving["corpus"], serving["encoder"], *RECIPE), *ROUTING,
                                    "holdout.fraction=0.3", "holdout.min_notes=5", "holdout.seed=1", *FAST_COMPARE])
    before = _snapshot(root, serving["uri"])
    with pytest.raises(DataError, match=r"held-out notes trained the serving model"):
        retrain(cfg)
    assert _snapshot(root, serving["uri"]) == before
