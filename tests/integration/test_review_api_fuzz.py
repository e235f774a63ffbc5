"""Schemathesis fuzzes the workbench's JSON API from its own OpenAPI spec: no 500s, and no note
text in any error body.

Bounded and deterministic: ``max_examples`` per operation, ``derandomize=True``. The schema is
loaded through the login (the spec is behind it like every route); cases run logged in with the
session's CSRF token, and every other case's path ``note_key`` is swapped for a real note so
the fuzzer reaches the store, not only the 404 path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from medcoder.web import WebSettings, create_app
from tests.integration.test_review_web import SECRET, build_workspace, login, open_store

MAX_EXAMPLES = 20
#: Phrases of the synthetic notes: none may appear in an error body.
PHRASES = ("hipertensión arterial", "dolor abdominal", "Mujer de 64", "colesterol elevado", "xss-script",
           "Exploración sin hallazgos")


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("review_fuzz")
    ws = build_workspace(root, n_filler=2)
    store = open_store(root, ws)
    app = create_app(store, WebSettings(secret_key=SECRET))
    client = TestClient(app)
    csrf = login(client, "alice")
    keys = [i.note_key for i in store.queue(limit=100).items]
    yield {"app": app, "store": store, "client": client, "csrf": csrf, "keys": keys,
           "cookie": client.cookies.get("medcoder_session"), "counter": itertools.count()}
    store.close()


def test_api_never_500s_nor_leaks_note_text(fuzz_env: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", fuzz_env["app"],
                                            headers={"Cookie": f"medcoder_session={fuzz_env['cookie']}"})
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    seen: list[tuple[str, str, int]] = []

    def check(case: Any) -> None:
        n = next(fuzz_env["counter"])
        if case.path_parameters and "note_key" in case.path_parameters and n % 2 == 0:
            case.path_parameters["note_key"] = fuzz_env["keys"][n % len(fuzz_env["keys"])]
        headers = dict(case.headers or {})
        if n % 5:  # mostly with the right token, sometimes with whatever the fuzzer made
            headers["X-CSRF-Token"] = fuzz_env["csrf"]
        response = case.call(headers=headers, cookies={"medcoder_session": fuzz_env["cookie"]})
        seen.append((case.method, case.path, response.status_code))
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:200])
        if response.status_code >= 400:
            for phrase in PHRASES:
                assert phrase not in response.text, (case.method, case.path, response.status_code)

    for operation in operations:
        run = settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck))(given(case=operation.as_strategy())(check))
        run()
    statuses = {s for _, _, s in seen}
    assert {200, 201} & statuses and 404 in statuses and (400 in statuses or 409 in statuses), statuses
    assert len(seen) >= 5 * len(operations)
