"""MLflow store checks on a real SQLite store."""

from __future__ import annotations


def test_copied_store_pointing_at_another_checkouts_artifacts_warns(tmp_path, caplog) -> None:
    """A copied checkout's mlflow.db keeps the original's absolute artifact path (MLflow stores it
    absolute even when given a relative one): setup_experiment names both paths in one warning."""
    import shutil

    from medcoder.tracking import TrackingSettings, setup_experiment

    original, copy = tmp_path / "original", tmp_path / "copy"
    setup_experiment(TrackingSettings(original, artifact_dir=original / "mlartifacts"))
    copy.mkdir()
    shutil.copyfile(original / "mlflow.db", copy / "mlflow.db")
    def ours() -> list:
        return [r for r in caplog.records if r.name == "medcoder.tracking.mlflow_utils"]

    with caplog.at_level("WARNING", logger="medcoder.tracking.mlflow_utils"):
        setup_experiment(TrackingSettings(original))
        assert not ours()
        setup_experiment(TrackingSettings(copy, artifact_dir=copy / "mlartifacts"))
    [record] = ours()
    assert str(original / "mlartifacts") in record.getMessage() and str(copy) in record.getMessage()
