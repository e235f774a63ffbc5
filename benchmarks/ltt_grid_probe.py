"""Which τ grid the Learn-then-Test fixed sequence should walk, judged on train held out fifth by fifth.

    python benchmarks/stacker_probe.py --corpus en-D ... --fifths --dump-pairs pairs-en-D.npz
    python benchmarks/ltt_grid_probe.py --pairs pairs-en-D.npz --pairing lr_ship --steps 0 0.025 0.05 0.1

Why: the shipped sequence (:func:`medcoder.calibration.risk_control.select_accept_threshold`) tests
every distinct eligible score from its start down and stops at its first non-rejection. A fixed
sequence is valid for any grid fixed before the labels are read (LTT §4), but the grid sets its
power: the finer it is, the more places a local run of errors can end it, even where a coarser
step below would still be certified with room to spare. A grid in steps of ``s`` of the eligible
codes (``s`` = 0: every score, the shipped one) is label-free, so the choice between grids is a
choice of power only; what it costs is the coverage between two steps.

The judge: ``stacker_probe.py --fifths --dump-pairs`` saves, per seed, the predicted (note, code)
pairs of all of CodiEsp train held out fifth by fifth (500 notes no fit of theirs saw; scores,
gold, the ``rare_code`` eligibility, the note). Here each draw splits those notes at random into a
certification half (250 notes, the size of CodiEsp dev) and a deployment half. The grid's
sequence certifies τ on the first half; the second half reads what that τ accepts (its share of
the predicted pairs and its precision). Per step and target: the mean share certified, how often
something is certified, and how often the deployment half's precision falls below the target
(for every grid this should stay near or under δ; it is a check, the guarantee is the theorem).
CodiEsp dev and test are never read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_result, git_commit, machine_info  # noqa: E402

from medcoder.calibration.risk_control import (  # noqa: E402
    DEFAULT_MIN_COVERAGE,  # noqa: E402
    coverage_grid,
    select_accept_threshold,
)
from medcoder.modeling.scoring import sigmoid  # noqa: E402


def one_draw(probs, y, eligible, cal, *, step, target, delta):
    """Certify on the pairs ``cal`` (the draw's certification notes) with a grid of ``step``; read
    the rest at that τ."""
    dep = ~cal
    grid = coverage_grid(probs[cal & eligible], step) if step > 0 else None
    r = select_accept_threshold(probs[cal], y[cal], eligible[cal], target_precision=target, delta=delta,
                                candidates=grid, min_coverage=DEFAULT_MIN_COVERAGE)
    if r.tau is None:
        return 0.0, 0.0, None
    accepted = dep & eligible & (probs >= r.tau)
    dep_precision = float(y[accepted].mean()) if accepted.any() else None
    return r.n_calibration_accepted / max(1, int(cal.sum())), float(accepted.sum()) / max(1, int(dep.sum())), dep_precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=Path, required=True, help="an npz written by stacker_probe.py --dump-pairs")
    ap.add_argument("--pairing", required=True, help="e.g. lr_ship, lr+top3+inter_blend, lr_blend_w0.25")
    ap.add_argument("--steps", type=float, nargs="+", default=[0.0, 0.025, 0.05, 0.1],
                    help="grid steps as shares of the eligible codes; 0 = every distinct score (shipped)")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.95, 0.90, 0.85])
    ap.add_argument("--draws", type=int, default=200, help="random certification halves per seed")
    ap.add_argument("--delta", type=float, default=0.1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    started = time.time()
    data = np.load(args.pairs)
    seeds = sorted({k.split("/")[0] for k in data.files if k.split("/")[1] == args.pairing})
    if not seeds:
        sys.exit(f"{args.pairs}: no pairing {args.pairing!r}; it has "
                 f"{sorted({k.split('/')[1] for k in data.files})}")
    rows: dict[str, dict[str, list]] = {}
    for seed in seeds:
        get = lambda name, s=seed: data[f"{s}/{args.pairing}/{name}"]  # noqa: E731
        probs, y, eligible, note = sigmoid(get("z").astype(np.float64)), get("y").astype(bool), get("eligible").astype(bool), get("note")
        notes = np.unique(note)
        rng = np.random.default_rng(int(seed))
        for _ in range(args.draws):
            cal = np.isin(note, rng.permutation(notes)[: len(notes) // 2])  # once per draw
            for step in args.steps:
                for t in args.targets:
                    share, dep_share, dep_prec = one_draw(probs, y, eligible, cal, step=step, target=t,
                                                          delta=args.delta)
                    acc = rows.setdefault(f"step {step:g} @ {t:.2f}", {"share": [], "dep_share": [], "miss": [], "seed": []})
                    acc["share"].append(share)
                    acc["dep_share"].append(dep_share)
                    acc["miss"].append(None if dep_prec is None else bool(dep_prec < t))
                    acc["seed"].append(int(seed))
        print(args.pairs.name, seed, "done", flush=True)
    summary = {}
    for key, acc in rows.items():
        share, seed_of = np.array(acc["share"]), np.array(acc["seed"])
        misses = [m for m in acc["miss"] if m is not None]
        summary[key] = {"mean_share": round(float(share.mean()), 4),
                        "mean_share_per_seed": [round(float(share[seed_of == int(s)].mean()), 4) for s in seeds],
                        "certified_rate": round(float((share > 0).mean()), 3),
                        "mean_deploy_share": round(float(np.mean(acc["dep_share"])), 4),
                        "deploy_below_target_rate": round(float(np.mean(misses)), 3) if misses else None}
        print(key, json.dumps(summary[key]), flush=True)
    emit_result({"system": "ltt_grid_probe", "commit": git_commit(), "command": " ".join(sys.argv),
                 "pairs": str(args.pairs), "pairing": args.pairing, "draws_per_seed": args.draws,
                 "summary": summary, "wall_s": round(time.time() - started, 1),
                 "machine": machine_info(with_torch=False)}, args.json)


if __name__ == "__main__":
    main()
