"""``MODEL_CARD.md`` of a bundle, rendered from the numbers the bundle itself carries.

Why generated: a card written by hand drifts from the model; this one is made from the same
``metrics.json``/``calibration.json``/``labels.json`` that ship beside it (hashed in the manifest).
"""

from __future__ import annotations

import math
from typing import Any

from medcoder.modeling.views import NEURAL

_METRICS = ("map", "micro_f1", "macro_f1", "micro_precision", "micro_recall", "p_at_8", "r_at_15",
            "micro_auc", "ece", "label_coverage")
_ROUTING = ("auto_accept_precision", "auto_accept_precision_lower", "auto_accept_coverage",
            "gold_auto_accepted", "docs_fully_auto")


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render_model_card(*, run_id: str, train_config: dict[str, Any], labels: dict[str, Any],
                      calibration: dict[str, Any], metrics: dict[str, float],
                      stacker: dict[str, Any] | None = None) -> str:
    data = train_config.get("data", {})
    model = train_config.get("model", {})
    policy = calibration.get("policy", {})
    targets = calibration.get("targets", {})
    tau = policy.get("tau_accept")
    views = (stacker or {}).get("params", {}).get("views", [NEURAL])
    if NEURAL in views:
        name = model.get("name", "?")
        what = (f"- Multi-label ICD-10 coder: encoder `{model.get('encoder', '?')}` over "
                f"{model.get('chunk_size', '?')}-token chunks (up to {model.get('max_chunks', '?')}) with label-wise attention.")
    else:
        name = "+".join(views)
        what = "- Multi-label ICD-10 coder without a neural encoder (no `model/` folder): only the views below."
    lines = [
        f"# medcoder model card — {data.get('name', '?')} / {name}",
        "",
        "## What it is",
        what,
        *(_views(stacker, metrics)),
        f"- {len(labels.get('codes', []))} codes; code set: ICD-10-CM fiscal year {labels.get('codeset_fy')}.",
        f"- Trained in MLflow run `{run_id}` on `{data.get('name', '?')}` (code type {data.get('code_type', '?')}).",
        f"- Calibrator: `{calibration.get('calibrator', {}).get('method', '?')}` fitted on the "
        f"`{calibration.get('calibration_split', '?')}` split; the auto-accept threshold certified on the "
        f"`{calibration.get('certification_split', calibration.get('calibration_split', '?'))}` split.",
        "",
        "## Intended use",
        "An assistant to medical coders, not a replacement. Every predicted code is tagged `auto_accept` or",
        "`human_review` with reasons; only auto-accepted codes may be filed without a person looking at them,",
        "and only while the policy below holds on the data it is used on. Every prediction carries the",
        "bundle id, code-set year, policy version and the input's sha256 for the audit trail.",
        "",
        "## Routing policy",
        f"- Target: precision of auto-accepted codes ≥ {targets.get('target_precision')} with confidence "
        f"1 − {targets.get('delta')} (Learn-then-Test on the calibration split).",
        f"- τ_accept: {_fmt(tau) if tau is not None else 'none certified — nothing is auto-accepted'}; "
        f"policy version {policy.get('policy_version')}; rare-code bar {policy.get('min_train_count')} training notes.",
        "",
        "## Metrics of this bundle",
        "| metric | dev | test |",
        "|---|---|---|",
        *[f"| {m} | {_fmt(metrics.get(f'dev_{m}'))} | {_fmt(metrics.get(f'test_{m}'))} |" for m in _METRICS],
        "",
        "| routing on test | value |",
        "|---|---|",
        *[f"| {m} | {_fmt(metrics.get(f'test_{m}'))} |" for m in _ROUTING],
        "",
        "## Limits",
        "- Trained and evaluated on one public corpus; performance on another hospital's notes is unknown",
        "  until measured there (re-run calibration on local held-out data before enabling auto-accept).",
        "- Codes outside the label space are never predicted (see `label_coverage`); rare codes, codes",
        "  invalid in the code-set year, Excludes1 conflicts and truncated notes always go to review.",
        "- CodiEsp notes are Spanish case reports (and their machine translation), coded with CIE-10-ES;",
        "  ICD-10-CM validity rules are applied to them as an approximation.",
        "- Not a medical device; no clinical decision may rest on it.",
        "",
    ]
    return "\n".join(lines)


def _views(stacker: dict[str, Any] | None, metrics: dict[str, float]) -> list[str]:
    """The fused views and what each scores alone on test (no lines for a neural-only bundle)."""
    if not stacker:
        return []
    views = stacker.get("params", {}).get("views", [])
    alone = ", ".join(f"{v} {_fmt(metrics.get(f'test_map_{v}'))}" for v in views)
    weights = stacker.get("weights") or {}
    share = ", ".join(f"{n} {float(w):g}" for n, w in weights.items())
    combiner = (f"the mean logit of two logistic-regression stackers (weights: {share or 'equal'}), one fitted on "
                "out-of-fold training scores and one on the fitted views' scores of the tuning notes"
                if "blend" in stacker else "a logistic-regression stacker fitted on out-of-fold training scores")
    return [f"- Fused views: {', '.join(views)}, combined by {combiner}",
            f"  (test MAP alone: {alone}; fused: {_fmt(metrics.get('test_map'))})."]
