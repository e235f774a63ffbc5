"""Load a saved medcoder model folder (a bundle's ``model/`` or a run's artifact) without running code.

Why this module: a bundle is data that ops teams copy between machines and registries, so anyone
who can write one must not be able to run code where it is loaded. transformers' ``Auto*`` classes
resolve ``auto_map`` entries of ``config.json`` / ``tokenizer_config.json`` to ``.py`` files
beside them, and with ``trust_remote_code`` unset they *ask on stdin* whether to run them (a
service whose stdin answers "y", or a person who presses y, runs the file). So every load here

* names a concrete class: :class:`MedCoderForICDCoding` for the model, and for the tokenizer the
  class named by ``tokenizer_config.json`` *if* it is one of transformers' own tokenizer classes
  (an allow-list: a subclass of ``PreTrainedTokenizerBase`` defined in a ``transformers.`` module),
  else refused; ``auto_map`` is never read;
* passes ``trust_remote_code=False`` (belt and braces: no code path may prompt);
* reads weights from ``model.safetensors`` only (``use_safetensors=True``), never a pickle.

The tokenizer class is the one ``AutoTokenizer`` would pick for the same folder (transformers 5:
the named class, its ``...Fast`` spelling being an alias of it), so the token ids are identical
(tested on the tiny fixture and on the shipped MiniLM tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from medcoder.errors import BundleError
from medcoder.modeling.model import MedCoderForICDCoding

TOKENIZER_CONFIG = "tokenizer_config.json"


def load_medcoder_model(model_dir: str | Path, *, device: str | torch.device | None = None) -> MedCoderForICDCoding:
    """``MedCoderForICDCoding.from_pretrained`` with no remote code and safetensors weights only.

    Loading by the concrete class never looks at ``auto_map``; the encoder inside is rebuilt from
    the stored encoder config by :meth:`MedCoderForICDCoding.__init__`, which also passes
    ``trust_remote_code=False``.
    """
    model = MedCoderForICDCoding.from_pretrained(Path(model_dir), trust_remote_code=False, use_safetensors=True)
    return model.to(device) if device is not None else model


def _transformers_tokenizer_class(name: str) -> type[PreTrainedTokenizerBase] | None:
    """transformers' own tokenizer class called ``name`` (``...Fast`` spellings included), else None.

    Looked up as transformers' ``AutoTokenizer`` does (``tokenizer_class_from_name``), then
    checked: only a class defined inside the ``transformers`` package qualifies. Classes loaded
    from a repository's code live in ``transformers_modules.*`` and classes a program registered
    itself elsewhere, so neither passes.
    """
    if not name.isidentifier():
        return None
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    base = name.removesuffix("Fast")  # AutoTokenizer (v5) strips it too: "XFast" is an alias of "X"
    for candidate in (base, base + "Fast"):
        try:
            cls = tokenizer_class_from_name(candidate)
        except (ImportError, AttributeError, ValueError):
            cls = None
        if (isinstance(cls, type) and issubclass(cls, PreTrainedTokenizerBase)
                and cls.__module__.startswith("transformers.")):
            if cls.__name__ == "PythonBackend":  # as AutoTokenizer: the Rust-backed class instead
                from transformers import TokenizersBackend

                return TokenizersBackend
            return cls
    return None


def tokenizer_class_for(model_dir: str | Path) -> type[PreTrainedTokenizerBase]:
    """The concrete tokenizer class for ``model_dir`` (see the module docstring); BundleError if none.

    ``tokenizer_class`` in ``tokenizer_config.json`` names it; without one, a folder with a
    ``tokenizer.json`` (the complete Rust tokenizer: normaliser, pre-tokeniser, vocabulary,
    post-processor) loads as ``PreTrainedTokenizerFast``.
    """
    root = Path(model_dir)
    config_path = root / TOKENIZER_CONFIG
    config: dict = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{config_path}: unreadable ({exc})", hint="re-export the bundle") from exc
        if not isinstance(config, dict):
            raise BundleError(f"{config_path}: not a JSON object", hint="re-export the bundle")
    name = config.get("tokenizer_class")
    if name is None:
        if (root / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast
        raise BundleError(f"{config_path}: no tokenizer_class and no tokenizer.json, so no tokenizer can be loaded",
                          hint="re-export the bundle (save_pretrained writes both)")
    cls = _transformers_tokenizer_class(name) if isinstance(name, str) else None
    if cls is None:
        raise BundleError(
            f"{config_path}: tokenizer_class={name!r} is not one of transformers' own tokenizer classes",
            hint="medcoder loads tokenizers only by a class built into transformers; re-export the bundle",
        )
    return cls


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    """The folder's tokenizer, by its concrete class, ``trust_remote_code=False``; never ``auto_map``."""
    cls = tokenizer_class_for(model_dir)
    return cls.from_pretrained(Path(model_dir), trust_remote_code=False, local_files_only=True)


__all__ = ["load_medcoder_model", "load_tokenizer", "tokenizer_class_for"]
