"""Parameter walks (issue 18): which functions a config value reaches, and how often it climbs back up.

    python benchmarks/param_walk.py --walk calibrate-target --walk train-views \\
        --walk calibrate-cfg --walk train-cfg \\
        --out benchmarks/results/<date>-param-walk-<commit>
    python benchmarks/param_walk.py --src /tmp/walk-before/src ...   # measure another checkout

"Before" (issue 18's review was at 4afd90c) from a throw-away clone, never a worktree of the
shared repository: ``git clone -q . /tmp/walk-before && git -C /tmp/walk-before checkout -q
4afd90c``, then ``--src /tmp/walk-before/src`` (its ``tests/helpers`` and ``configs/`` are used).
"After": no ``--src`` (this checkout; the output name gets ``+dirty`` while ``src/`` has
uncommitted changes). About a minute on two CPU cores; nothing is written outside ``--out`` and
a temporary folder (``--workdir`` keeps it).

A *dynamic* trace, run by hand (never by the test suite): one tiny training and one tiny
calibration, built with the test helpers of the checkout measured (``tests/helpers``: the tiny
corpus, ``tiny_overrides``, the tiny random BERT of ``tests/conftest.py``), each run under
``sys.settrace`` (and ``threading.settrace``), recording every call into a function defined in a
file under ``<src>/medcoder/``. Outputs (MLflow store, ``outputs/``) go to a temporary folder.

Definitions (what the numbers count)
------------------------------------
*Walk*: a tracked value followed from a workflow entry function, e.g. ``calibrate-target``:
``routing.target_precision`` from ``medcoder.workflows.calibrate:calibrate``.

*Call*: one start of a Python function whose code lives under ``<src>/medcoder/``, or that a
dataclass defined there generated (``AcceptThresholdResult.__init__``: a value handed to a
dataclass lands in that class's module, as it would with a hand-written ``__init__``). A generator
or coroutine counts when it starts, not when it resumes; comprehension and module frames are not
calls; lambdas and nested functions are. Its *arguments* are its parameters as bound at entry,
``self`` included; each item of ``*args`` and each value of ``**kwargs`` counts as an argument.

*Carries*: a call carries the value when one of its arguments *holds* it at depth <= D (headline
D = 1; D = 2 is reported too). An object holds a value at depth 0 if it *is* the value; at depth
k + 1 if one of its children holds it at depth k. Children: the items of a list/tuple/set and
the values of a dict (first 256 of each), the fields of a dataclass, the instance attributes
(``__dict__`` / ``__slots__``) of any other object (not of classes, modules, functions). An
OmegaConf ``DictConfig``/``ListConfig`` met at depth k holds the value at depth k if it sits
anywhere in its tree (the config tree is the vehicle a config value travels in: ``cfg`` holds
``routing.target_precision`` at depth 0).

The values:

* ``cfg`` walks: any ``DictConfig``/``ListConfig`` (the whole config, any sub-node, or one made
  by the code, e.g. ``recalibration_settings``). A plain dict made from a config
  (``OmegaConf.to_container``) is not a config.
* ``target``: the calibration runs with ``routing.target_precision`` set to a sentinel
  (``--target-sentinel``, default 0.60731: lax enough for the tiny run to certify a tau, so the
  feasible path runs); the value is a ``float``/``numpy.floating`` equal to it (a float32 equal to
  the sentinel's float32 too). Derived numbers (``1 - target``) are not the value.
* ``views``: the training runs with ``fusion=stacked`` and ``fusion.views`` in a sentinel order
  (``--views``, default ``[tfidf,neural,dictionary]``: neither the configured order nor sorted,
  so no constant in the code can equal it); the value is a list/tuple/ListConfig whose items are
  exactly those names in that order, or a mapping (not a config) whose keys are, in that order
  (``{v: ... for v in views}``: the views list turned into per-view objects).

*Scope*: the walk's carrying calls inside one function's dynamic extent (that function's call and
every call made while it runs), in time order (one global counter over all threads):
``calibrate-target`` from ``fit_calibration`` (headline) and from the entry; the other walks from
their entry.

*Room*: a distinct function (``module:qualname``) among the scope's carrying calls. Its *floor* is
the layer of its module (``pyproject.toml`` ``[tool.importlinter]``): workflows 8 > tracking 7 >
training|inference 6 > routing 5 > calibration 4 > evaluation|modeling 3 > codesets 2 > data 1;
top-level modules (``medcoder.atomic``, ``errors``, ``registry``, ...) and any package not in
the layers 0.

Over the scope's carrying calls in time order, each call after the first is compared with the
previous carrying call:

* *stay*: the callee's module is the previous callee's module;
* *climb*: the callee's floor is higher than the previous callee's floor (the value went back up
  a floor, to be handed down again).

Also reported: carrying calls, rooms below ``workflows`` (floor < 8: what the ``cfg`` walks must
bring to zero) and, for each room, its floor, calls, the smallest depth and the path by which it
held the value (``settings.routing.target_precision``).

Writes ``<out>.json`` (every number, each scope's sequence of carrying calls) and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "medcoder"
LAYERS: dict[str, int] = {
    "workflows": 8, "tracking": 7, "training": 6, "inference": 6, "routing": 5, "calibration": 4,
    "evaluation": 3, "modeling": 3, "codesets": 2, "data": 1,
}
FLOOR_NAMES = {8: "workflows", 7: "tracking", 6: "training|inference", 5: "routing", 4: "calibration",
               3: "evaluation|modeling", 2: "codesets", 1: "data", 0: "top-level"}
WORKFLOWS_FLOOR = 8
MAX_ITEMS = 256  # children looked at per container
DEPTHS = (1, 2)  # headline depth first
TRACE_DEPTH = max(DEPTHS)
_NOT_CALLS = frozenset({"<module>", "<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})
_GENERATOR_FLAGS = 0x20 | 0x80 | 0x200  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR
_RESUME = __import__("opcode").opmap.get("RESUME")
_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), np.ndarray, np.generic, range)
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType,
           types.CodeType, types.FrameType)


# -- floors ------------------------------------------------------------------------------------


def floor_of(module: str, package: str = PACKAGE) -> int:
    """The layer of ``module`` (``medcoder.routing.policy`` -> 5); 0 for top-level modules
    (``medcoder.atomic``) and packages outside the layers."""
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if parts[0] == package and len(parts) > 1 else 0


# -- holding a value ---------------------------------------------------------------------------


def _is_config(obj: Any) -> bool:
    return isinstance(obj, (DictConfig, ListConfig))


def _children(obj: Any) -> list[tuple[str, Any]]:
    """(path step, child) of one object, as the module docstring defines them."""
    if isinstance(obj, _LEAVES) or _is_config(obj) or isinstance(obj, _OPAQUE):
        return []
    if isinstance(obj, Mapping):
        return [(f"[{k!r}]", v) for k, v in itertools.islice(obj.items(), MAX_ITEMS)]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{i}]", v) for i, v in enumerate(itertools.islice(obj, MAX_ITEMS))]
    out: list[tuple[str, Any]] = []
    with contextlib.suppress(Exception):
        attrs = object.__getattribute__(obj, "__dict__")
        out += [(f".{k}", v) for k, v in itertools.islice(attrs.items(), MAX_ITEMS)]
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            with contextlib.suppress(Exception):
                out.append((f".{slot}", object.__getattribute__(obj, slot)))
    return out


def _search_config(node: Any, match: Callable[[Any], bool]) -> str | None:
    """Path of ``match`` anywhere in a config tree (interpolations unresolved), or None."""
    try:
        tree = OmegaConf.to_container(node, resolve=False)
    except Exception:
        return None
    stack: list[tuple[str, Any]] = [("", node), ("", tree)]
    while stack:
        path, obj = stack.pop()
        if match(obj):
            return path
        if _is_config(obj):
            continue
        if isinstance(obj, dict):
            stack += [(f"{path}.{k}", v) for k, v in obj.items()]
        elif isinstance(obj, list):
            stack += [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
    return None


def holding(value: Any, match: Callable[[Any], bool], max_depth: int = TRACE_DEPTH) -> tuple[int, str] | None:
    """(smallest depth, path) at which ``value`` holds what ``match`` accepts, or None."""
    frontier: list[tuple[str, Any]] = [("", value)]
    seen: set[int] = set()
    for depth in range(max_depth + 1):
        nxt: list[tuple[str, Any]] = []
        for path, obj in frontier:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            try:
                if match(obj):
                    return depth, path
                if _is_config(obj):
                    hit = _search_config(obj, match)
                    if hit is not None:
                        return depth, path + hit
                    continue
                if depth < max_depth:
                    nxt += [(path + step, child) for step, child in _children(obj)]
            except Exception:  # an object that cannot be looked at holds nothing we can see
                continue
        frontier = nxt
    return None


def is_config_value(obj: Any) -> bool:
    return _is_config(obj)


def float_equal_to(sentinel: float) -> Callable[[Any], bool]:
    s32 = np.float32(sentinel)

    def match(obj: Any) -> bool:
        if isinstance(obj, bool) or not isinstance(obj, (float, np.floating)):
            return False
        return bool(obj == s32) if isinstance(obj, np.float32) else float(obj) == sentinel

    return match


def names_in_order(names: list[str]) -> Callable[[Any], bool]:
    target = tuple(names)

    def match(obj: Any) -> bool:
        if isinstance(obj, (list, tuple, ListConfig)):
            return len(obj) == len(target) and all(isinstance(x, str) and x == t for x, t in zip(obj, target, strict=True))
        if isinstance(obj, Mapping) and not _is_config(obj):
            return len(obj) == len(target) and tuple(obj.keys()) == target
        return False

    return match


# -- the tracer --------------------------------------------------------------------------------


@dataclasses.dataclass
class Call:
    seq: int
    module: str
    qualname: str
    floor: int
    hits: dict[str, tuple[int, str]]  # value name -> (depth, path)
    ancestors: tuple[str, ...]        # keys of the traced functions below it on the stack
    thread: int

    @property
    def key(self) -> str:
        return f"{self.module}:{self.qualname}"


class Tracer:
    """Records every call into a function under ``root`` that carries one of ``values``.

    ``values``: name -> match function (the value's test, see :func:`holding`); ``package``: the
    top-level package whose sub-packages are the layers (``medcoder``)."""

    def __init__(self, root: str | Path, values: Mapping[str, Callable[[Any], bool]], *, package: str = PACKAGE,
                 max_depth: int = TRACE_DEPTH) -> None:
        self.root = str(Path(root).resolve()) + os.sep
        self.values = dict(values)
        self.package = package
        self.max_depth = max_depth
        self.calls: list[Call] = []
        self.n_calls = 0  # every traced call, carrying or not
        self._codes: dict[Any, tuple[str, str, int] | None] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def _info(self, frame: Any) -> tuple[str, str, int] | None:
        code = frame.f_code
        info = self._codes.get(code, False)
        if info is False:
            info = None
            module = frame.f_globals.get("__name__", "?")
            if code.co_filename.startswith(self.root) and code.co_name not in _NOT_CALLS:
                info = (module, getattr(code, "co_qualname", code.co_name), floor_of(module, self.package))
            elif (code.co_filename == "<string>" and code.co_name not in _NOT_CALLS
                  and code.co_name != "__create_fn__" and self._module_under_root(module)):
                info = (module, self._generated_qualname(frame), floor_of(module, self.package))
            self._codes[code] = info
        return info

    def _module_under_root(self, module: str) -> bool:
        path = getattr(sys.modules.get(module), "__file__", None)
        return bool(path) and str(Path(path).resolve()).startswith(self.root)

    @staticmethod
    def _generated_qualname(frame: Any) -> str:
        """``Class.__init__`` for a method a dataclass generated (its code is ``<string>``)."""
        code = frame.f_code
        if code.co_argcount:
            owner = frame.f_locals.get(code.co_varnames[0])
            for cls in type(owner).__mro__ if owner is not None else ():
                if any(getattr(v, "__code__", None) is code for v in vars(cls).values()):
                    return f"{cls.__qualname__}.{code.co_name}"
        return getattr(code, "co_qualname", code.co_name)

    @staticmethod
    def _starts(frame: Any) -> bool:
        """False for a generator/coroutine resuming (only its start is a call)."""
        code = frame.f_code
        if not code.co_flags & _GENERATOR_FLAGS:
            return True
        if _RESUME is None:  # before 3.11
            return frame.f_lasti < 0
        raw = code.co_code
        i = frame.f_lasti
        return not (0 <= i < len(raw) - 1 and raw[i] == _RESUME and raw[i + 1] != 0)

    @staticmethod
    def _arguments(frame: Any) -> list[tuple[str, Any]]:
        code = frame.f_code
        n = code.co_argcount + code.co_kwonlyargcount
        names = list(code.co_varnames[:n])
        local = frame.f_locals
        out = [(name, local[name]) for name in names if name in local]
        if code.co_flags & 0x04:  # *args
            star = code.co_varnames[n]
            n += 1
            out += [(f"{star}[{i}]", v) for i, v in enumerate(local.get(star, ()))]
        if code.co_flags & 0x08:  # **kwargs
            out += [(str(k), v) for k, v in dict(local.get(code.co_varnames[n], {})).items()]
        return out

    def _trace(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return None
        info = self._info(frame)
        if info is None or not self._starts(frame):
            return None
        self.n_calls += 1
        args = self._arguments(frame)
        hits: dict[str, tuple[int, str]] = {}
        for name, match in self.values.items():
            best: tuple[int, str] | None = None
            for arg_name, value in args:
                found = holding(value, match, self.max_depth)
                if found is not None and (best is None or found[0] < best[0]):
                    best = (found[0], arg_name + found[1])
                    if best[0] == 0:
                        break
            if best is not None:
                hits[name] = best
        if hits:
            ancestors = []
            up = frame.f_back
            while up is not None:
                up_info = self._codes.get(up.f_code)
                if up_info:
                    ancestors.append(f"{up_info[0]}:{up_info[1]}")
                up = up.f_back
            with self._lock:
                self._seq += 1
                self.calls.append(Call(self._seq, info[0], info[1], info[2], hits, tuple(ancestors),
                                       threading.get_ident()))
        return None

    @contextlib.contextmanager
    def active(self):
        threading.settrace(self._trace)
        sys.settrace(self._trace)
        try:
            yield self
        finally:
            sys.settrace(None)
            threading.settrace(None)  # type: ignore[arg-type]


# -- counting ----------------------------------------------------------------------------------


def in_scope(call: Call, scope: str | None) -> bool:
    return scope is None or call.key == scope or scope in call.ancestors


def summarise(calls: list[Call], value: str, *, scope: str | None = None, depth: int = DEPTHS[0]) -> dict[str, Any]:
    """Rooms, stays and climbs of ``value``'s carrying calls within ``scope`` (module docstring)."""
    seq = [c for c in sorted(calls, key=lambda c: c.seq)
           if value in c.hits and c.hits[value][0] <= depth and in_scope(c, scope)]
    rooms: dict[str, dict[str, Any]] = {}
    stays, climbs = 0, []
    for i, c in enumerate(seq):
        d, path = c.hits[value]
        room = rooms.setdefault(c.key, {"room": c.key, "floor": c.floor, "floor_name": FLOOR_NAMES[c.floor],
                                        "calls": 0, "depth": d, "via": path, "first": i})
        room["calls"] += 1
        if d < room["depth"]:
            room["depth"], room["via"] = d, path
        if i:
            prev = seq[i - 1]
            stays += c.module == prev.module
            if c.floor > prev.floor:
                climbs.append({"from": prev.key, "from_floor": prev.floor, "to": c.key, "to_floor": c.floor})
    return {
        "scope": scope,
        "depth": depth,
        "scope_seen": scope is None or any(in_scope(c, scope) for c in calls),
        "carrying_calls": len(seq),
        "threads": len({c.thread for c in seq}),
        "rooms": len(rooms),
        "stays": stays,
        "climbs": len(climbs),
        "rooms_below_workflows": sum(r["floor"] < WORKFLOWS_FLOOR for r in rooms.values()),
        "room_list": list(rooms.values()),
        "climb_list": climbs,
        "sequence": [f"{c.key}@{c.floor}" for c in seq],
    }


# -- the walks ---------------------------------------------------------------------------------

ENTRIES = {"calibrate": "medcoder.workflows.calibrate:calibrate", "train": "medcoder.workflows.train:train"}


@dataclasses.dataclass(frozen=True)
class Walk:
    name: str
    run: str                  # "train" or "calibrate": the traced entry
    value: str                # "cfg", "target" or "views"
    scopes: tuple[str, ...]   # first = headline


def walks(target_scope: str) -> dict[str, Walk]:
    return {
        "calibrate-target": Walk("calibrate-target", "calibrate", "target", (target_scope, ENTRIES["calibrate"])),
        "calibrate-cfg": Walk("calibrate-cfg", "calibrate", "cfg", (ENTRIES["calibrate"],)),
        "train-cfg": Walk("train-cfg", "train", "cfg", (ENTRIES["train"],)),
        "train-views": Walk("train-views", "train", "views", (ENTRIES["train"],)),
    }


# -- running the tiny runs ---------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def checkout_label(repo: Path) -> str:
    """Short commit of ``repo``, ``+dirty`` when its ``src/`` differs from it."""
    sha = _git(repo, "rev-parse", "--short", "HEAD") or "unknown"
    return sha + ("+dirty" if _git(repo, "status", "--porcelain", "--", "src") else "")


def _import_checkout(src: Path) -> Path:
    """Put ``src`` and its repository root (for ``tests.helpers``) first on sys.path; returns the root."""
    repo = src.resolve().parent
    for p in (str(repo), str(src.resolve())):
        while p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
    import medcoder
    import tests.helpers.configs

    assert Path(medcoder.__file__).resolve().is_relative_to(src.resolve()), (medcoder.__file__, src)
    assert Path(tests.helpers.configs.__file__).resolve().is_relative_to(repo), tests.helpers.configs.__file__
    return repo


class _TmpFactory:
    """What the conftest fixtures need of pytest's ``tmp_path_factory``."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def mktemp(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.base))
        return path


def _fixture_function(fixture: Any) -> Callable[..., Any]:
    if hasattr(fixture, "_get_wrapped_function"):
        return fixture._get_wrapped_function()
    return fixture.__pytest_wrapped__.obj


def _env(work: Path) -> None:
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("MLFLOW_DISABLE_TELEMETRY", "true"),
                       ("HF_HUB_DISABLE_TELEMETRY", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                       ("HF_HOME", str(work / "cache")), ("MPLCONFIGDIR", str(work / "cache")),
                       ("MEDCODER_CACHE_DIR", str(work / "cache")), ("MEDCODER_HOME", str(work / "root"))):
        os.environ[key] = value
    (work / "cache").mkdir(parents=True, exist_ok=True)


def run_walks(selected: list[Walk], src: Path, work: Path, *, target_sentinel: float, views: list[str],
              train_extra: list[str], calibrate_extra: list[str], target_key: str) -> dict[str, Any]:
    _env(work)
    repo = _import_checkout(src)
    import tests.conftest as conftest
    from medcoder.workflows.calibrate import calibrate
    from medcoder.workflows.train import train
    from tests.helpers.configs import compose_cfg, tiny_overrides
    from tests.helpers.corpus import write_corpus

    try:
        from tests.helpers.configs import compose_named
    except ImportError:  # older helpers
        compose_named = None  # type: ignore[assignment]

    factory = _TmpFactory(work)
    encoder = _fixture_function(conftest.tiny_encoder)(factory)
    root = work / "root"
    corpus = write_corpus(root / "corpus", n_train=60, n_dev=80, n_test=16, seed=3)
    matchers = {"cfg": is_config_value, "target": float_equal_to(target_sentinel), "views": names_in_order(views)}
    pkg_root = src.resolve() / PACKAGE
    train_overrides = tiny_overrides(root, corpus, encoder, "trainer=cached_head", "fusion=stacked",
                                     f"fusion.views=[{','.join(views)}]", "trainer.num_train_epochs=6",
                                     "trainer.learning_rate=0.05", "model.max_chunks=8", *train_extra)
    calibrate_overrides = [f"paths.root_dir={root}", "routing.min_train_count=1", "routing.check_validity=false",
                           f"{target_key}={target_sentinel}", *calibrate_extra]
    traces: dict[str, Tracer] = {}
    seconds: dict[str, float] = {}
    calibration_message = None

    def traced(run: str, fn: Callable[[Any], Any], cfg: Any) -> Any:
        wanted = {w.value for w in selected if w.run == run}
        if not wanted:
            return fn(cfg)
        tracer = Tracer(pkg_root, {v: matchers[v] for v in sorted(wanted)})
        started = time.time()
        with tracer.active():
            out = fn(cfg)
        seconds[run] = round(time.time() - started, 1)
        traces[run] = tracer
        return out

    run = traced("train", train, compose_cfg(train_overrides))
    if any(w.run == "calibrate" for w in selected):
        if compose_named is not None:
            cal_cfg = compose_named("calibrate", [f"run_id={run.run_id}", *calibrate_overrides])
        else:
            from hydra import compose, initialize_config_dir

            with initialize_config_dir(config_dir=str(repo / "configs"), version_base="1.3"):
                cal_cfg = compose(config_name="calibrate", overrides=[f"run_id={run.run_id}", *calibrate_overrides])
        if OmegaConf.select(cal_cfg, target_key) != target_sentinel:
            raise SystemExit(f"{target_key} did not take the sentinel {target_sentinel}")
        calibration_message = traced("calibrate", calibrate, cal_cfg).message

    results: dict[str, Any] = {}
    for w in selected:
        tracer = traces[w.run]
        results[w.name] = {
            "entry": ENTRIES[w.run], "value": w.value,
            "traced_calls": tracer.n_calls, "traced_seconds": seconds[w.run],
            "scopes": [{**summarise(tracer.calls, w.value, scope=scope, depth=d)} for scope in w.scopes for d in DEPTHS],
        }
    return {
        "src": str(src.resolve()), "repo": str(repo), "commit": checkout_label(repo),
        "train_overrides": [o for o in train_overrides if not o.startswith(("data.", "paths.", "model.encoder="))],
        "calibrate_overrides": [o for o in calibrate_overrides if not o.startswith("paths.")],
        "target_sentinel": target_sentinel, "views_sentinel": views, "calibration_message": calibration_message,
        "walks": results,
    }


# -- report ------------------------------------------------------------------------------------


def _short(key: str) -> str:
    return key.removeprefix(f"{PACKAGE}.")


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Parameter walks (issue 18) at `{report['commit']}`",
        "",
        f"{report['date']}; `{report['command']}`; src `{report['src']}`; Python {report['python']}.",
        "Method: `benchmarks/param_walk.py` docstring (dynamic trace; room = distinct function carrying the "
        "value; stay = same module as the previous carrying call; climb = higher floor than the previous "
        "carrying call). Headline depth 1; depth 2 for comparison.",
        f"Sentinels: `routing.target_precision={report['target_sentinel']}`, "
        f"`fusion.views=[{','.join(report['views_sentinel'])}]`.",
        f"Train overrides: `{' '.join(report['train_overrides'])}`; calibrate overrides: "
        f"`{' '.join(report['calibrate_overrides'])}`.",
        f"Calibration: {report['calibration_message']}",
        "",
        "| walk | from | depth | rooms | stays | climbs | rooms below workflows | carrying calls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, w in report["walks"].items():
        for s in w["scopes"]:
            scope = _short(s["scope"]) if s["scope_seen"] else f"{_short(s['scope'])} (never called)"
            lines.append(f"| {name} | `{scope}` | {s['depth']} | {s['rooms']} | {s['stays']} | {s['climbs']} | "
                         f"{s['rooms_below_workflows']} | {s['carrying_calls']} |")
    for name, w in report["walks"].items():
        for s in w["scopes"]:
            if s["depth"] != DEPTHS[0]:
                continue
            lines += ["", f"## {name} from `{_short(s['scope'])}` (depth {s['depth']})", "",
                      f"{s['rooms']} rooms, {s['stays']} stays, {s['climbs']} climbs "
                      f"({w['traced_calls']} traced calls in {w['traced_seconds']} s).", "",
                      "| # | room | floor | calls | depth | via |", "|---|---|---|---|---|---|"]
            for i, r in enumerate(s["room_list"], 1):
                lines.append(f"| {i} | `{_short(r['room'])}` | {r['floor']} {r['floor_name']} | {r['calls']} | "
                             f"{r['depth']} | `{r['via']}` |")
            if s["climb_list"]:
                lines += ["", "Climbs:", ""]
                lines += [f"- `{_short(c['from'])}` ({c['from_floor']}) -> `{_short(c['to'])}` ({c['to_floor']})"
                          for c in s["climb_list"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--walk", action="append", choices=["calibrate-target", "train-views", "calibrate-cfg",
                                                            "train-cfg"], help="repeatable; default: all four")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the checkout's src/ to measure")
    parser.add_argument("--out", help="output prefix (default benchmarks/results/<date>-param-walk-<commit>)")
    parser.add_argument("--workdir", type=Path, help="where the tiny runs write (default: a temp dir, removed)")
    parser.add_argument("--target-sentinel", type=float, default=0.60731)
    parser.add_argument("--target-key", default="routing.target_precision")
    parser.add_argument("--target-scope", default="medcoder.workflows.calibrate:fit_calibration",
                        help="module:qualname the calibrate-target headline is measured from")
    parser.add_argument("--views", default="tfidf,neural,dictionary", help="fusion.views in a sentinel order")
    parser.add_argument("--train-override", action="append", default=[])
    parser.add_argument("--calibrate-override", action="append", default=[])
    args = parser.parse_args(argv)

    all_walks = walks(args.target_scope)
    selected = [all_walks[n] for n in dict.fromkeys(args.walk or list(all_walks))]
    src = args.src.resolve()
    date = dt.date.today().isoformat()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{date}-param-walk-{checkout_label(src.parent)}"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="param-walk-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = run_walks(selected, src, work, target_sentinel=args.target_sentinel, views=args.views.split(","),
                           train_extra=args.train_override, calibrate_extra=args.calibrate_override,
                           target_key=args.target_key)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {"date": date, "command": " ".join(["python", *sys.argv]) if argv is None else " ".join(argv),
              "python": platform.python_version(), **report}
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = Path(f"{out}.json"), Path(f"{out}.md")
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    for name, w in report["walks"].items():
        for s in w["scopes"]:
            print(f"{name} from {s['scope']} depth {s['depth']}: rooms={s['rooms']} stays={s['stays']} "
                  f"climbs={s['climbs']} below_workflows={s['rooms_below_workflows']}")
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
