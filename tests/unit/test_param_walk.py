"""benchmarks/param_walk.py counts rooms, stays and climbs as its docstring defines them: traced on
a toy package (workflows -> routing -> calibration, no training)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import param_walk  # noqa: E402

PKG = "pwtoy"
SENTINEL = 0.61237

TOY = {
    "__init__.py": "",
    "workflows/__init__.py": "",
    "routing/__init__.py": "",
    "calibration/__init__.py": "",
    "errors.py": "def fail(message):\n    return message\n",
    "calibration/fit.py": """
        from dataclasses import dataclass

        @dataclass
        class Result:
            target: float

            def report(self):                # self holds the target one level deep
                return self.target

        def fit(target):
            return Result(target)

        def check(target):
            return target > 0
    """,
    "routing/rules.py": """
        from pwtoy.calibration.fit import check, fit

        def route(target):
            check(target)                    # calibration: a descent
            return fit(target)               # calibration: a stay

        def steps(target):
            yield target
            yield target
    """,
    "workflows/flow.py": """
        from pwtoy.errors import fail
        from pwtoy.routing.rules import route, steps

        def entry(settings):
            target = settings["routing"]["target"]
            helper(target)                   # workflows: a stay
            result = route(target)           # routing: descent (then calibration twice)
            route(target)                    # routing: a climb (then calibration twice)
            result.report()                  # calibration: depth 1
            list(steps(target))              # a generator is one call, not three
            [x for x in [target]]            # a comprehension is not a call
            fail(settings)                   # top level, depth 2 (settings["routing"]["target"])
            unrelated(0.5)                   # carries nothing
            return result

        def helper(target):
            return target

        def unrelated(x):
            return x
    """,
}


@pytest.fixture()
def toy(tmp_path: Path):
    for name, text in TOY.items():
        path = tmp_path / PKG / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        from pwtoy.workflows.flow import entry

        tracer = param_walk.Tracer(tmp_path / PKG, {"target": param_walk.float_equal_to(SENTINEL)}, package=PKG)
        with tracer.active():
            entry({"routing": {"target": SENTINEL, "other": 0.5}})
        yield tracer
    finally:
        sys.path.remove(str(tmp_path))
        for mod in [m for m in sys.modules if m == PKG or m.startswith(f"{PKG}.")]:
            del sys.modules[mod]


def test_floors_follow_the_import_linter_layers() -> None:
    assert param_walk.floor_of("medcoder.workflows.calibrate") == 8
    assert param_walk.floor_of("medcoder.routing.policy") == 5
    assert param_walk.floor_of("medcoder.inference.coder") == param_walk.floor_of("medcoder.training.trainer") == 6
    assert param_walk.floor_of("medcoder.data") == 1
    assert param_walk.floor_of("medcoder.atomic") == param_walk.floor_of("medcoder.errors") == 0
    assert param_walk.floor_of("pwtoy.calibration.fit", PKG) == 4


def test_toy_walk_counts_rooms_stays_and_climbs(toy) -> None:
    seq = [c.key.removeprefix(f"{PKG}.") for c in toy.calls]
    # Time order of the carrying calls (depth <= 2); unrelated(), <listcomp> and the two
    # resumptions of steps() are absent; the dataclass's generated __init__ is a call of its module.
    assert seq == [
        "workflows.flow:entry", "workflows.flow:helper",
        "routing.rules:route", "calibration.fit:check", "calibration.fit:fit", "calibration.fit:Result.__init__",
        "routing.rules:route", "calibration.fit:check", "calibration.fit:fit", "calibration.fit:Result.__init__",
        "calibration.fit:Result.report", "routing.rules:steps", "errors:fail",
    ]
    assert toy.calls[0].hits["target"] == (2, "settings['routing']['target']")

    s = param_walk.summarise(toy.calls, "target", depth=1)
    # depth 1: entry (settings holds it 2 deep: a plain dict is no config) and fail() drop out.
    assert s["sequence"] == [
        "pwtoy.workflows.flow:helper@8", "pwtoy.routing.rules:route@5", "pwtoy.calibration.fit:check@4",
        "pwtoy.calibration.fit:fit@4", "pwtoy.calibration.fit:Result.__init__@4", "pwtoy.routing.rules:route@5",
        "pwtoy.calibration.fit:check@4", "pwtoy.calibration.fit:fit@4", "pwtoy.calibration.fit:Result.__init__@4",
        "pwtoy.calibration.fit:Result.report@4", "pwtoy.routing.rules:steps@5",
    ]
    assert s["rooms"] == 7  # helper, route, check, fit, Result.__init__, Result.report, steps
    # stays (same module as the previous carrying call): check->fit->__init__ twice, __init__->report
    assert s["stays"] == 5
    # climbs (higher floor than the previous carrying call): __init__(4)->route(5), report(4)->steps(5)
    assert s["climbs"] == 2
    assert [(c["from"], c["to"]) for c in s["climb_list"]] == [
        ("pwtoy.calibration.fit:Result.__init__", "pwtoy.routing.rules:route"),
        ("pwtoy.calibration.fit:Result.report", "pwtoy.routing.rules:steps"),
    ]
    assert s["rooms_below_workflows"] == 6
    report = {r["room"]: r for r in s["room_list"]}
    assert report["pwtoy.calibration.fit:Result.report"]["via"] == "self.target"
    assert report["pwtoy.calibration.fit:fit"]["calls"] == 2

    deep = param_walk.summarise(toy.calls, "target", depth=2)
    # + entry (entry->helper is a stay) and errors:fail (floor 0: no climb)
    assert deep["rooms"] == 9 and deep["stays"] == 6 and deep["climbs"] == 2

    # route's dynamic extent: route, check, fit, Result.__init__ twice (one climb: __init__ -> route)
    scoped = param_walk.summarise(toy.calls, "target", scope=f"{PKG}.routing.rules:route", depth=1)
    assert scoped["rooms"] == 4 and scoped["stays"] == 4 and scoped["climbs"] == 1


def test_config_nodes_are_searched_whole_and_views_keep_their_order() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"routing": {"target_precision": SENTINEL}, "fusion": {"views": ["tfidf", "neural"]}})
    assert param_walk.holding(cfg, param_walk.float_equal_to(SENTINEL)) == (0, ".routing.target_precision")
    views = param_walk.names_in_order(["tfidf", "neural"])
    assert param_walk.holding(cfg, views) == (0, ".fusion.views")
    assert param_walk.holding({"tfidf": 1, "neural": 2}, views) == (0, "")
    assert param_walk.holding(["neural", "tfidf"], views) is None
    assert param_walk.holding({"a": cfg}, param_walk.is_config_value) == (1, "['a']")
