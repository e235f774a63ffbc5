"""The ``data.format`` table (medcoder.data.loaders): unknown keys and formats are one-line
``ConfigError``s, and every shipped ``configs/data/*.yaml`` is accepted (composed, never loaded)."""

from __future__ import annotations

import inspect

import pytest
from omegaconf import OmegaConf

from medcoder.data import FORMATS, load_corpus
from medcoder.data.loaders import LOADERS, METADATA_KEYS, loader_call, valid_keys
from medcoder.errors import ConfigError

from ..helpers.configs import compose_cfg
from ..helpers.paths import REPO_ROOT

SHIPPED = sorted(p.stem for p in (REPO_ROOT / "configs" / "data").glob("*.yaml"))


def _one_line_error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_corpus(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_misspelt_key_is_one_line_error_naming_it_and_the_valid_keys() -> None:
    message = _one_line_error({"format": "codiesp", "root": "/nowhere", "lenguage": "es"})
    assert message.startswith("data.lenguage: unknown key for data.format=codiesp")
    assert "did you mean data.language?" in message
    _, _, valid = message.partition("valid keys of data for data.format=codiesp: ")
    assert valid.split(", ") == list(valid_keys("codiesp"))
    assert {"language", "root", "code_type", "name", "format"} <= set(valid.split(", "))


def test_key_of_another_format_is_refused() -> None:
    # codes_separator is a CSV key: in a JSONL group it would be silently meaningless
    message = _one_line_error({"format": "jsonl", "train": "t.jsonl", "codes_separator": "|", "varient": "x"})
    assert message.startswith("data.codes_separator, data.varient: unknown keys for data.format=jsonl")
    assert "codes_separator" not in message.partition(" — ")[2]


def test_unknown_format_names_the_valid_ones() -> None:
    message = _one_line_error({"format": "parquet", "lenguage": "es"})  # the format is checked first
    assert message == "data.format='parquet' is not known — use one of: codiesp, jsonl, csv, mimic"
    assert "data.format=None" in _one_line_error({})


def test_table_is_the_registry_of_every_format() -> None:
    assert tuple(LOADERS) == FORMATS == ("codiesp", "jsonl", "csv", "mimic")
    for fmt in FORMATS:
        params = inspect.signature(LOADERS[fmt]).parameters.values()
        assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in params), fmt


def test_metadata_keys_are_accepted_but_passed_only_to_entries_that_take_them() -> None:
    meta = {"name": "n", "language": "es", "code_type": "P"}
    entry, kwargs = loader_call({"format": "jsonl", "train": "t.jsonl", **meta})
    assert entry is LOADERS["jsonl"] and kwargs == {"train": "t.jsonl"}
    _, kwargs = loader_call({"format": "codiesp", "root": None, **meta})  # null = the default
    assert kwargs == {"language": "es", "code_type": "P"}
    _, kwargs = loader_call({"format": "mimic", "root": "r", "variant": "mimiciii_50", **meta})
    assert kwargs == {"root": "r", "variant": "mimiciii_50"}
    assert set(METADATA_KEYS) == {"name", "format", "code_type", "language"}


def test_required_values_are_config_errors() -> None:
    assert _one_line_error({"format": "csv", "train": None}).startswith("data.train is required for data.format=csv")
    assert _one_line_error({"format": "mimic"}).startswith("data.root is required for data.format=mimic")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_data_config_is_accepted(name: str) -> None:
    data = compose_cfg([f"data={name}"]).data
    values = OmegaConf.to_container(data, resolve=False)  # ??? and ${paths...} stay as text
    entry, kwargs = loader_call(values)
    assert entry is LOADERS[values["format"]]
    assert set(kwargs) <= set(inspect.signature(entry).parameters)
    assert "name" not in kwargs and "format" not in kwargs


def test_shipped_configs_cover_every_format() -> None:
    assert len(SHIPPED) >= 10
    formats = {OmegaConf.load(REPO_ROOT / "configs" / "data" / f"{n}.yaml").format for n in SHIPPED}
    assert formats == set(FORMATS)
