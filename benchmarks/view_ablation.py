"""Which views pay: refit the stacker on a fused run's saved out-of-fold scores without each view.

    python benchmarks/view_ablation.py --run-dir outputs/runs/<run_id> [--language es --code-type D]

A fused training run keeps ``oof_train.npz`` (each view's out-of-fold scores over train, numbers
only). For every subset of views that keeps at least one, this refits the stacker (same ``top_k``
and ``C`` as the run's ``stacker.json``) on those out-of-fold scores, exactly as training does,
then scores dev and test with the run's own fitted views. It reports test MAP / micro-F1 / P@8
(threshold tuned on dev) and what the auto-accept policy certifies on dev (temperature scaling
and the default routing rules fitted on dev, Learn-then-Test at 0.90 and 0.85, δ 0.1,
``routing.min_coverage`` 0.1) with the resulting test coverage and precision.

Why a benchmark and not a training run per subset: the views themselves do not change, only
the stacker does, so this isolates what a view adds to the fused ranking at a fraction of the
cost. Splits: the stacker sees train (out-of-fold) only, dev fits calibration and certifies τ,
test is scored only, as in the real chain.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from _common import machine_info, set_offline_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> None:
    set_offline_env()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--language", default="en")
    ap.add_argument("--code-type", default="D")
    ap.add_argument("--cache-dir", default=str(ROOT / "outputs" / "cache"))
    ap.add_argument("--out", type=Path, default=None, help="results .md (default benchmarks/results/<date>-ablation-<lang>-<type>.md)")
    args = ap.parse_args()

    from medcoder.calibration.calibrators import make_calibrator
    from medcoder.calibration.risk_control import RiskTargets
    from medcoder.calibration.thresholds import DecisionThreshold
    from medcoder.data import LabelSpace, load_codiesp, resolve_codiesp_root
    from medcoder.evaluation.metrics import compute_all, tune_global_threshold
    from medcoder.modeling import HybridScorer, Scores, Stacker
    from medcoder.modeling.hybrid import routing_flags
    from medcoder.routing.policy import RoutingInputs, RoutingPolicy

    run = args.run_dir.resolve()
    oof_file = run / "oof_train.npz"
    if not oof_file.is_file():
        sys.exit(f"error: {oof_file} not found: ablation needs a fused run trained with this version (oof_train.npz)")
    ls = LabelSpace.from_json(run / "labels.json")
    freq = np.array([ls.frequency.get(c, 0) for c in ls.codes], dtype=np.float32)
    hybrid = HybridScorer.load(run, freq)
    saved = json.loads((run / "stacker.json").read_text())["params"]
    oof = np.load(oof_file)
    views_all = list(saved["views"])
    oof_views = {v: Scores(oof[f"{v}_scores"], flags={k.split("_", 1)[1]: oof[k] for k in oof.files
                                                        if k.startswith(f"{v}_") and k != f"{v}_scores"})
                 for v in views_all}
    labels_train = oof["labels"].astype(np.float32)

    splits = load_codiesp(resolve_codiesp_root(download=False), language=args.language, code_type=args.code_type)
    data = {}
    for name in ("dev", "test"):
        y = np.zeros((len(splits[name]), len(ls.codes)), np.float32)
        for i, cs in enumerate(splits[name]["codes"]):
            for c in cs:
                if c in ls.index:
                    y[i, ls.index[c]] = 1
        views = hybrid.score_views(list(splits[name]["text"]), cache_dir=args.cache_dir, batch_size=16)
        data[name] = (views, y, list(splits[name]["codes"]))

    rows = []
    for k in range(len(views_all), 0, -1):
        for subset in itertools.combinations(views_all, k):
            stacker = Stacker(list(subset), top_k=saved["top_k"], C=saved["C"]).fit(
                {v: oof_views[v] for v in subset}, freq, labels_train)
            logits = {n: stacker.decision_function({v: data[n][0][v] for v in subset}, freq) for n in data}
            cal = make_calibrator("temperature").fit(logits["dev"], data["dev"][1])
            probs = {n: cal.transform(logits[n]) for n in data}
            t = tune_global_threshold(probs["dev"], data["dev"][1])
            m = compute_all(probs["test"], data["test"][1], threshold=t, gold_codes=data["test"][2],
                            label_codes=ls.codes)
            row = {"views": "+".join(subset), "test_map": m["map"], "test_micro_f1": m["micro_f1"],
                   "test_p_at_8": m["p_at_8"]}
            decision = DecisionThreshold().fit(probs["dev"], data["dev"][1])
            flags = {n: routing_flags({v: data[n][0][v] for v in subset}) for n in data}
            for target in (0.9, 0.85):
                policy = RoutingPolicy(tau_accept=None, decision_threshold=decision, min_train_count=10,
                                       check_excludes1=args.code_type == "D", check_validity=args.code_type == "D",
                                       codeset_fy=ls.codeset_fy, targets=RiskTargets(target, 0.1, 0.1))
                res = policy.fit_accept_threshold(
                    RoutingInputs(probs["dev"], ls.codes, ls.frequency, flags=flags["dev"]), data["dev"][1])
                pred, accept, _ = policy.route_arrays(
                    RoutingInputs(probs["test"], ls.codes, ls.frequency, flags=flags["test"]))
                n_acc = int(accept.sum())
                row[f"cov_{target}"] = n_acc / max(int(pred.sum()), 1) if res.tau is not None else 0.0
                row[f"prec_{target}"] = float(data["test"][1][accept].mean()) if n_acc else None
            rows.append(row)
            print(json.dumps(row), flush=True)

    date = dt.date.today().isoformat()
    out = args.out or HERE / "results" / f"{date}-ablation-{args.language}-{args.code_type}.md"
    lines = [f"# View ablation on {run.name} ({args.language}-{args.code_type}), {date}", "",
             f"`python benchmarks/{Path(__file__).name} --run-dir {args.run_dir} --language {args.language} "
             f"--code-type {args.code_type}`", "", f"machine: {machine_info().get('cpu_model', '')}", "",
             "| views (stacker refit on OOF train) | test MAP | micro-F1 | P@8 | 0.90: test coverage @ precision | 0.85: coverage @ precision |",
             "|---|---:|---:|---:|---|---|"]
    def cell(r, t):
        return "none certified" if r[f"cov_{t}"] == 0 else f"{r[f'cov_{t}']:.1%} @ {r[f'prec_{t}']:.3f}"
    for r in rows:
        lines.append(f"| {r['views']} | {r['test_map']:.4f} | {r['test_micro_f1']:.4f} | {r['test_p_at_8']:.4f} | "
                     f"{cell(r, 0.9)} | {cell(r, 0.85)} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"run": str(run), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
