"""Note text is PHI: it never reaches a log line or an error message of the store."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from medcoder.errors import MedcoderError
from medcoder.review import ReviewError, ReviewStore, User

from .factory import CODES, NOTES, SECRET, key_of, prediction, write_predictions


def test_no_note_text_in_logs_or_errors(store: ReviewStore, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                        alice: User) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[MedcoderError] = []
    path = write_predictions(tmp_path / "p.jsonl")
    for notes in (dict(NOTES, n1=NOTES["n1"] + "!"), {"n1": SECRET}):
        with pytest.raises(MedcoderError) as err:
            store.import_predictions(path, notes)
        errors.append(err.value)
    row = prediction("n1", NOTES["n1"], CODES["n1"])
    row["codes"][0]["code"] = SECRET  # a note pasted where a code belongs
    with pytest.raises(MedcoderError) as err:
        store.import_predictions(write_predictions(tmp_path / "q.jsonl", lines=[json.dumps(row)]), NOTES)
    errors.append(err.value)
    store.import_predictions(path, NOTES)
    key = key_of(store, "n1")
    token = store.claim(key, alice).token
    for kwargs in ({"action": "accept", "code": SECRET[:20]}, {"action": "add", "code": "QUOKKA"},
                   {"action": "add", "code": "E78.5", "evidence": [{"start": 0, "end": 10**6}]}):
        with pytest.raises(ReviewError) as err:
            store.decide(key, alice, lease_token=token, expected_version=0, **kwargs)
        errors.append(err.value)
    store.decide(key, alice, action="query", code="E11.9", comment="which type?", lease_token=token,
                 expected_version=0)
    store.export_labels(tmp_path / "labels.jsonl")
    for e in errors:
        assert "QUOKKA" not in str(e) and "Jane Roe" not in str(e) and "\n" not in str(e), str(e)
    assert "QUOKKA" not in caplog.text and "Jane Roe" not in caplog.text
    assert "imported p.jsonl" in caplog.text  # the log does say what happened
