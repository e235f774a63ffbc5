"""A bundle id typed on scripts/review.py's command line survives Hydra's number parsing."""

from __future__ import annotations

import pytest

from medcoder.errors import ConfigError
from medcoder.workflows.review import _bundle_id_text

from ..helpers.configs import compose_named


@pytest.mark.parametrize("typed", ["0829402335608314", "8294023356083149", "a3f4c93d8294e3b1"])
def test_every_sixteen_digit_id_comes_back_as_typed(typed) -> None:
    cfg = compose_named("review", [f"bundle_id={typed}", f"export_bundle={typed}"])
    assert _bundle_id_text(cfg, "bundle_id") == typed
    assert _bundle_id_text(cfg, "export_bundle") == typed


def test_an_id_read_as_a_float_is_refused_with_how_to_quote_it() -> None:
    cfg = compose_named("review", ["bundle_id=82940233e5608314"])
    assert isinstance(cfg.bundle_id, float)  # what Hydra does with it
    with pytest.raises(ConfigError, match="quote it"):
        _bundle_id_text(cfg, "bundle_id")
    quoted = compose_named("review", ["bundle_id='82940233e5608314'"])
    assert _bundle_id_text(quoted, "bundle_id") == "82940233e5608314"
    assert _bundle_id_text(compose_named("review", []), "bundle_id") is None
