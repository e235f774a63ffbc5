"""Warm-start retraining: begin a new training from an earlier model instead of from scratch.

Why: every October the ICD-10-CM code set changes (codes added, expanded into more specific
children, deleted), so the label space of next year's model differs from this year's. Almost all
codes persist, though, and their trained attention queries, output rows and biases are the most
expensive part of a model to learn. A warm start copies them:

* the encoder and every head parameter that is not per-code (the token projection) are copied as
  they are, after checking that the two architectures agree (hidden size, layers, attention_dim);
* for the per-code rows (:data:`PER_LABEL_PARAMS`: the label-attention query, the output row and
  the bias) the row of every code present in both label spaces is copied, matched by code string,
  so a code keeps its weights wherever its column moved;
* a code new to the label space (**added**) starts from its nearest ancestor's trained query and
  output rows when that ancestor was in the source label space (``E11.65`` -> ``E11.6`` ->
  ``E11``: the code with its last character removed, repeatedly, down to the 3-character
  category), because notes coded with the child this year were coded with the ancestor last year,
  so the ancestor's attention already looks at the right evidence. Its bias keeps the log-odds of
  its own training prevalence (a child is rarer than its parent). A new code without such an
  ancestor keeps the cold-start initialisation: its description's encoding (``label_init``) and
  its prevalence bias;
* codes of the source that the new label space lacks (**dropped**) are simply not copied.

The caller runs the cold initialisation first (descriptions + prevalence bias for every code);
the warm start overwrites the carried rows afterwards, so they are exactly the source's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from medcoder.data import LabelSpace
from medcoder.errors import BundleError, ConfigError
from medcoder.modeling import MedCoderForICDCoding, load_medcoder_model

log = logging.getLogger(__name__)

# Parameters with one row per code, in label-space column order (LabelAttentionHead).
PER_LABEL_PARAMS = ("head.label_queries.weight", "head.label_weights", "head.label_bias")
# Of those, the rows an added code inherits from its ancestor (the bias follows its own prevalence).
INHERITED_PARAMS = ("head.label_queries.weight", "head.label_weights")
# Encoder config fields that must agree for the encoder weights to mean the same thing.
ENCODER_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "vocab_size")


@dataclass
class WarmStartReport:
    """Which codes were carried over, added (and from which ancestor) and dropped; codes only."""

    source: str
    carried: list[str]
    added: list[str]
    dropped: list[str]
    added_from_ancestor: dict[str, str] = field(default_factory=dict)
    source_codeset_fy: int | None = None

    def metrics(self) -> dict[str, float]:
        return {
            "warm_start_carried": float(len(self.carried)),
            "warm_start_added": float(len(self.added)),
            "warm_start_dropped": float(len(self.dropped)),
            "warm_start_added_from_ancestor": float(len(self.added_from_ancestor)),
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"


def _local_source(ref: str) -> tuple[Path, Path] | None:
    """``(model_dir, labels_path)`` when ``ref`` is a directory, None when it may be a run id."""
    path = Path(ref).expanduser()
    if path.is_dir():
        model_dir, labels_path = path / "model", path / "labels.json"
        missing = [name for name, p in (("model/config.json", model_dir / "config.json"), ("labels.json", labels_path))
                   if not p.is_file()]
        if missing:
            raise BundleError(
                f"warm_start={ref}: the directory lacks {' and '.join(missing)}",
                hint="point it at a bundle (scripts/export.py output) or outputs/runs/<run_id>",
            )
        return model_dir, labels_path
    if any(sep in ref for sep in ("/", "\\")) or ref.startswith((".", "~")):
        raise ConfigError(f"warm_start={ref}: no such directory", hint="give a bundle directory or an MLflow run id")
    return None


def check_warm_start_ref(ref: str) -> None:
    """Fail on a mistyped directory before any data is read (run ids are checked when used)."""
    _local_source(str(ref))


FetchRun = Callable[[str, Path], tuple[Path, Path]]
"""``fetch_run(run_id, download_dir) -> (model_dir, labels_path)``: how a run id becomes files.
Handed in by the caller (the train workflow passes an MLflow download), so training never
imports MLflow or ``medcoder.tracking``."""


def resolve_warm_start_source(ref: str, download_dir: Path, fetch_run: FetchRun | None = None) -> tuple[Path, Path]:
    """``(model_dir, labels_path)`` of ``ref``: a bundle or run-output directory (``model/`` and
    ``labels.json`` inside), or a run id fetched by ``fetch_run`` into ``download_dir``."""
    local = _local_source(ref)
    if local is not None:
        return local
    if fetch_run is None:
        raise ConfigError(f"warm_start={ref}: not a directory, and no run store to look it up in",
                          hint="give a bundle directory or outputs/runs/<run_id>")
    try:
        return fetch_run(ref, download_dir)
    except ConfigError as exc:
        raise ConfigError(f"warm_start={ref}: neither a directory nor a usable run ({exc.message})",
                          hint=exc.hint) from exc


def load_warm_start_source(ref: str, download_dir: Path,
                           fetch_run: FetchRun | None = None) -> tuple[MedCoderForICDCoding, LabelSpace]:
    """The source model and its label space; their code lists must agree."""
    model_dir, labels_path = resolve_warm_start_source(ref, download_dir, fetch_run)
    labels = LabelSpace.from_json(labels_path)
    try:
        # By concrete class, trust_remote_code=False, safetensors only: a warm-start source is a
        # bundle or run artifact someone else may have written, so it must not run code.
        model = load_medcoder_model(model_dir)
    except (OSError, ValueError) as exc:
        raise BundleError(f"warm_start={ref}: cannot load {model_dir} ({exc})",
                          hint="is it a medcoder model saved with save_pretrained?") from exc
    model_codes = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if model_codes != labels.codes:
        raise BundleError(f"warm_start={ref}: labels.json and model/config.json list different codes",
                          hint="the source is inconsistent; re-export it")
    return model, labels


def _check_compatible(new: MedCoderForICDCoding, source: MedCoderForICDCoding) -> None:
    """Raise ``ConfigError`` naming the first difference that would make copied weights wrong."""
    for key in ENCODER_FIELDS:
        a, b = source.config.encoder.get(key), new.config.encoder.get(key)
        if a != b:
            raise ConfigError(
                f"warm_start: encoder {key} differs (source {a!r}, this run {b!r})",
                hint="warm start needs the same encoder architecture (model=...) as the source model",
            )
    src_state, new_state = source.state_dict(), new.state_dict()
    if set(src_state) != set(new_state):
        diff = sorted(set(src_state) ^ set(new_state))
        raise ConfigError(f"warm_start: parameter names differ, e.g. {diff[0]}",
                          hint="warm start needs the same model architecture as the source model")
    for name, tensor in new_state.items():
        expected = tensor.shape[1:] if name in PER_LABEL_PARAMS else tensor.shape
        got = src_state[name].shape[1:] if name in PER_LABEL_PARAMS else src_state[name].shape
        if expected != got:
            what = "attention_dim" if "projection" in name or "label_queries" in name else name
            raise ConfigError(
                f"warm_start: {what} differs ({name}: source {tuple(src_state[name].shape)}, "
                f"this run {tuple(tensor.shape)})",
                hint="use the source model's model.attention_dim and encoder",
            )
    if source.config.token_pool_stride != new.config.token_pool_stride:
        log.warning("warm start: token_pool_stride %s -> %s; the copied head saw other spans",
                    source.config.token_pool_stride, new.config.token_pool_stride)


def nearest_ancestor(code: str, known: set[str] | dict[str, int]) -> str | None:
    """The longest proper prefix of ``code`` in ``known`` (trailing ``.`` ignored), at least the
    3-character ICD-10 category: ``E11.65`` -> ``E11.6`` -> ``E11``."""
    prefix = code
    while len(prefix.rstrip(".")) > 3:
        prefix = prefix.rstrip(".")[:-1]
        for candidate in (prefix, prefix.rstrip(".")):
            if candidate in known and candidate != code:
                return candidate
    return None


@torch.no_grad()
def warm_start_model(
    new_model: MedCoderForICDCoding,
    source_model: MedCoderForICDCoding,
    source_codes: Sequence[str],
    new_codes: Sequence[str],
    *,
    source: str = "",
    inherit_from_ancestor: bool = True,
) -> WarmStartReport:
    """Copy the source's encoder, shared head weights and the rows of persisting codes into
    ``new_model`` (in place); added codes inherit their nearest ancestor's rows (see module doc).
    """
    if len(source_codes) != source_model.config.num_labels or len(new_codes) != new_model.config.num_labels:
        raise ConfigError("warm_start: code lists do not match the models' number of labels")
    _check_compatible(new_model, source_model)
    src_index = {c: i for i, c in enumerate(source_codes)}
    new_set = set(new_codes)
    carried = [c for c in new_codes if c in src_index]
    added = [c for c in new_codes if c not in src_index]
    dropped = [c for c in source_codes if c not in new_set]
    ancestors = {}
    if inherit_from_ancestor:
        ancestors = {c: a for c in added if (a := nearest_ancestor(c, src_index)) is not None}

    src_state = source_model.state_dict()
    new_state = new_model.state_dict()  # shares storage with the model: copy_ writes into it
    new_rows = torch.tensor([i for i, c in enumerate(new_codes) if c in src_index], dtype=torch.long)
    src_rows = torch.tensor([src_index[c] for c in carried], dtype=torch.long)
    heirs = torch.tensor([i for i, c in enumerate(new_codes) if c in ancestors], dtype=torch.long)
    heir_src = torch.tensor([src_index[ancestors[c]] for c in new_codes if c in ancestors], dtype=torch.long)
    for name, target in new_state.items():
        value = src_state[name].to(target.dtype)
        if name not in PER_LABEL_PARAMS:
            target.copy_(value)
            continue
        if len(carried):
            target[new_rows] = value[src_rows]
        if name in INHERITED_PARAMS and len(heirs):
            target[heirs] = value[heir_src]
    fy = getattr(source_model.config, "codeset_fy", None)
    report = WarmStartReport(source=source, carried=carried, added=added, dropped=dropped,
                             added_from_ancestor=ancestors, source_codeset_fy=fy)
    log.info("warm start from %s: %d codes carried, %d added (%d from an ancestor's rows), %d dropped",
             source or "source model", len(carried), len(added), len(ancestors), len(dropped))
    return report


def apply_warm_start(model: MedCoderForICDCoding, ref: str, new_codes: Sequence[str],
                     download_dir: Path, fetch_run: FetchRun | None = None) -> WarmStartReport:
    """Resolve ``ref``, load the source model and warm-start ``model`` from it (in place)."""
    source_model, source_labels = load_warm_start_source(ref, download_dir, fetch_run)
    report = warm_start_model(model, source_model, source_labels.codes, new_codes, source=str(ref))
    report.source_codeset_fy = source_labels.codeset_fy
    return report
