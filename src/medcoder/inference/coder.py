"""``Coder``: the one inference path, ``Coder.load(bundle).predict(texts)``.

Batch prediction, the MLflow model, the HTTP endpoint and the notebooks all call this class, and it
calls the same pieces training and calibration use (chunking, :func:`score_notes`, the fitted
calibrator, :class:`RoutingPolicy`), so a probability and a decision mean the same everywhere.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from medcoder.calibration.calibrators import BaseCalibrator, calibrator_from_dict
from medcoder.data.labels import LabelSpace
from medcoder.errors import BundleError, ConfigError, DataError
from medcoder.inference.audit_status import (
    DEFAULT_AUDIT_STATUS_TTL_S,
    AuditState,
    FileStatusSource,
    StatusSource,
    registry_status_source,
)
from medcoder.inference.bundle import Manifest, read_manifest, verify_bundle
from medcoder.inference.prediction import CodePrediction, DocumentPrediction, text_sha256
from medcoder.modeling import MedCoderForICDCoding
from medcoder.modeling.hybrid import FusedScores, HybridScorer, note_flags
from medcoder.modeling.neural import NeuralScorer
from medcoder.modeling.scorer import Scorer
from medcoder.modeling.scoring import sigmoid
from medcoder.routing.policy import RoutingInputs, RoutingPolicy, document_decision

log = logging.getLogger(__name__)

#: Inputs larger than this show a progress bar by default.
PROGRESS_MIN_NOTES = 64

#: Notes longer than this many characters are cut to it and flagged ``truncated`` (their codes go
#: to review with reason ``truncated_note``). Why: one 20 MB note once took 3.4 GB of memory in
#: tokenization. The longest CodiEsp note (train/dev/test/background, Spanish and English) has
#: 32,520 characters (measured), so 100,000 leaves 3x headroom over real clinical notes.
DEFAULT_MAX_NOTE_CHARS = 100_000


def resolve_bundle(ref: str | Path, download_dir: str | Path | None = None) -> Path:
    """A bundle directory from a path or an MLflow model URI (``models:/name@alias``, ``runs:/``).

    The MLflow model written by ``scripts/export.py`` carries the bundle as its ``bundle``
    artifact, so both routes end at the same verified directory. MLflow bundles are kept in a
    local cache (one folder per registered version / run artifact, reused and re-verified on each
    load; see :func:`medcoder.inference.bundle.cached_bundle`) instead of a new temp folder per
    load; ``download_dir`` downloads into that folder instead (the caller owns it).
    """
    return _resolve_bundle(ref, download_dir)[0]


MLFLOW_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")
#: Entry-point group of bundle resolvers for URIs. Why a plugin point: inference must not import
#: MLflow or ``medcoder.tracking`` (layers, ../shared/DESIGN.md), yet ``Coder.load("models:/…")``
#: is the documented call. ``medcoder.tracking.bundles`` registers itself here (pyproject.toml),
#: like MLflow flavours and fsspec protocols do; another registry can plug in the same way.
RESOLVER_GROUP = "medcoder.bundle_resolvers"
BundleResolver = Callable[[str, "str | Path | None"], "tuple[Path, Manifest]"]


def _uri_resolver(uri: str) -> BundleResolver:
    """The registered resolver whose URI prefix ``uri`` starts with (longest prefix wins)."""
    found = sorted((ep for ep in entry_points(group=RESOLVER_GROUP) if uri.startswith(ep.name)),
                   key=lambda ep: len(ep.name), reverse=True)
    if not found:
        raise BundleError(f"bundle={uri}: no resolver is installed for this URI scheme",
                          hint="reinstall medcoder (pip install -e .) or pass a bundle folder")
    return found[0].load()


def _resolve_bundle(ref: str | Path, download_dir: str | Path | None = None) -> tuple[Path, Manifest | None]:
    """:func:`resolve_bundle` plus the verified manifest where resolving already verified it
    (MLflow downloads are verified, and for ``models:/`` checked against the version's
    ``medcoder.bundle_id`` tag), so ``Coder.load`` does not hash the files twice."""
    text = str(ref)
    if text.startswith(MLFLOW_PREFIXES):
        return _uri_resolver(text)(text, download_dir)
    path = Path(text).expanduser()
    if not path.exists():
        raise BundleError(f"bundle={path}: no such directory",
                          hint="pass a folder written by scripts/export.py or models:/<name>@<alias>")
    return path, None


@dataclass
class ScoredNotes:
    """Notes scored as the inference path scores them (:func:`score_for_routing`): the fused scores
    with every view's evidence, the texts that were scored (each note cut at ``max_note_chars``),
    and per note whether it was read in part (``truncated``) or is ``empty``."""

    fused: FusedScores
    texts: list[str]
    truncated: np.ndarray
    empty: np.ndarray


def score_for_routing(scorer: HybridScorer, notes: Sequence[str], *, evidence_top_k: int, batch_size: int = 8,
                      progress: bool = False, max_note_chars: int | None = DEFAULT_MAX_NOTE_CHARS) -> ScoredNotes:
    """Score ``notes`` the one way routing sees them: cut at ``max_note_chars``, every view with its
    evidence (``evidence_top_k`` attended positions for the neural view; none at all for 0).

    ``Coder.predict`` and calibration (``medcoder.workflows.calibrate.score_splits``) both call it,
    so the scores, the truncation facts and the evidence behind ``no_evidence`` are the same when τ is
    certified and when the bundle decides. (No frozen-encoder state cache here: its float16 states
    give other scores than the inference path, by up to ~2e-3 in a logit, enough to move a code
    across τ.)
    """
    notes = list(notes)
    texts = [t[:max_note_chars] if max_note_chars is not None else t for t in notes]
    fused = scorer.score(texts, evidence=evidence_top_k > 0, evidence_top_k=evidence_top_k, batch_size=batch_size,
                         progress=progress)
    cut = np.array([len(n) > len(t) for n, t in zip(notes, texts, strict=True)], dtype=bool)
    truncated = np.asarray(fused.truncated, dtype=bool) | cut
    return ScoredNotes(fused, texts, truncated, np.array([not t.strip() for t in texts], dtype=bool))


def routing_inputs(policy: RoutingPolicy, label_space: LabelSpace, scored: ScoredNotes,
                   probs: np.ndarray, *, hold: str | None = None) -> RoutingInputs:
    """What ``policy`` routes for scored notes with calibrated ``probs``: the one builder of
    :class:`RoutingInputs` for Learn-then-Test, calibration's test evaluation and ``Coder.predict``.

    The flags (:func:`~medcoder.modeling.hybrid.note_flags`: the views' own and ``no_evidence``) are
    computed for the policy's predicted codes (:meth:`RoutingPolicy.predicted_mask`). That set is
    fixed once the decision threshold is fitted, before τ is certified; every code the policy can
    accept is in it, so the flag is exact for the accepted set whatever τ certification picks.

    ``hold`` (``Coder.predict`` only, from the bundle's audit status) sends every predicted code to
    review with that reason; calibration never passes one.
    """
    flags = note_flags(scored.fused, policy.predicted_mask(probs, scored.empty))
    return RoutingInputs(probs, label_space.codes, label_space.frequency, scored.truncated, scored.empty, flags,
                         hold=hold)


class Coder:
    """A calibrated, routed ICD coder built from a bundle (or from in-memory parts, for tests).

    Attributes are the parts themselves (``model``, ``tokenizer``, ``label_space``,
    ``calibrator``, ``policy``) so an analyst can inspect them in a notebook.
    """

    #: Longer notes are cut and flagged ``truncated`` (None: no limit); set per instance to change.
    max_note_chars: int | None = DEFAULT_MAX_NOTE_CHARS
    #: How stale a registry (``models:/``) audit status may be, in seconds; a status file beside a
    #: bundle folder is checked on every call whatever this says. Set per instance or with
    #: ``Coder.load(..., audit_status_ttl_s=...)``.
    audit_status_ttl_s: float = DEFAULT_AUDIT_STATUS_TTL_S

    def __init__(
        self,
        scorer: HybridScorer | Scorer,
        label_space: LabelSpace,
        calibrator: BaseCalibrator,
        policy: RoutingPolicy,
        *,
        bundle_id: str = "unbundled",
        manifest: Manifest | None = None,
        bundle_dir: Path | None = None,
        status_source: StatusSource | None = None,
    ) -> None:
        if not isinstance(scorer, HybridScorer):
            scorer = HybridScorer({scorer.name: scorer}, None, label_space.frequency_array())
        if list(scorer.codes) != list(label_space.codes):
            raise BundleError("the model's labels and labels.json differ (order or content)",
                              hint="re-export the bundle from one training run")
        _check_calibration_fits(calibrator, policy, len(label_space), bundle_dir)
        self.scorer = scorer
        self.label_space = label_space
        self.calibrator = calibrator
        self.policy = policy
        self.bundle_id = bundle_id
        self.manifest = manifest
        self.bundle_dir = bundle_dir
        #: Where the bundle's audit status comes from (None: no status, e.g. an in-memory coder).
        self.status_source = status_source
        self._reported: set[tuple[str, str]] = set()  # problems / suspensions already logged once

    @classmethod
    def from_model(cls, model: MedCoderForICDCoding, tokenizer: PreTrainedTokenizerBase, label_space: LabelSpace,
                   calibrator: BaseCalibrator, policy: RoutingPolicy, **kwargs: Any) -> Coder:
        """A neural-only coder from in-memory parts (tests, notebooks)."""
        return cls(NeuralScorer(model, tokenizer), label_space, calibrator, policy, **kwargs)

    @property
    def model(self) -> MedCoderForICDCoding | None:
        """The neural view's model (None for a coder without one)."""
        view = self.scorer.neural
        return view.model if view is not None else None  # type: ignore[attr-defined]

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase | None:
        view = self.scorer.neural
        return view.tokenizer if view is not None else None  # type: ignore[attr-defined]

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, bundle: str | Path, *, device: str = "cpu", verify: bool = True,
             audit_status_ttl_s: float | None = None) -> Coder:
        """Load and verify a bundle (path or ``models:/name@alias``); see :mod:`.bundle`.

        The model and tokenizer are loaded by concrete class with ``trust_remote_code=False``
        (:mod:`medcoder.modeling.loading`): a bundle is data, and loading one must never run
        code it carries nor ask on stdin whether to. ``verify`` also refuses a bundle holding
        code; a bundle from the registry must be the one its version's ``medcoder.bundle_id``
        tag names. A manifest ``quantization`` (e.g. ``dynamic-int8``, written by ``scripts/export.py
        quantize=int8``) is applied to the stored fp32 weights here, and the bundle's calibration
        must say it was fitted for the same quantisation.

        The bundle's audit status source is attached here (see :meth:`audit_state`): the status
        file beside a bundle folder, or the registry tag of a ``models:/`` bundle's version (read
        through :data:`~medcoder.inference.audit_status.READER_GROUP`, at most every
        ``audit_status_ttl_s`` seconds, default :data:`~medcoder.inference.audit_status.
        DEFAULT_AUDIT_STATUS_TTL_S`). ``runs:/`` and other MLflow URIs have no status.
        """
        if audit_status_ttl_s is not None:
            _check_ttl(audit_status_ttl_s)
        root, manifest = _resolve_bundle(bundle)
        if verify and manifest is None:
            manifest = verify_bundle(root)
        # Unverified loads still parse the manifest with its checks (one-line errors, no hashing).
        parsed = manifest or read_manifest(root)
        try:
            label_space = LabelSpace.from_json(root / "labels.json")
        except OSError as exc:
            raise BundleError(f"{root}: labels.json unreadable ({exc})",
                              hint="re-export the bundle with scripts/export.py") from exc
        calibration, calibrator, policy = _read_calibration(root / "calibration.json")
        quantization = parsed.quantization
        if calibration.get("quantization") != quantization:
            # The calibration was fitted on the scores of one scorer (fp32 or quantised): never apply
            # it to the other's.
            raise BundleError(f"{root}: calibration.json was fitted for quantization="
                              f"{calibration.get('quantization')!r} but the manifest says {quantization!r}",
                              hint="re-export the bundle with scripts/export.py")
        try:
            scorer = HybridScorer.load(root, label_space.frequency_array(), device=device)
            if quantization is not None:
                if scorer.neural is None:
                    raise ValueError(f"quantization={quantization!r} needs a neural view and the bundle has none")
                scorer.neural.quantize(quantization)  # type: ignore[attr-defined]
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{root}: cannot load the model ({str(exc).splitlines()[0]})",
                              hint="re-export the bundle") from exc
        text = str(bundle)
        if text.startswith("models:/"):
            source: StatusSource | None = registry_status_source(text, parsed.bundle_id)
        elif text.startswith(MLFLOW_PREFIXES):
            source = None  # a run's artifact has no registry version to carry a status
        else:
            source = FileStatusSource(root, parsed.bundle_id)
        coder = cls(scorer, label_space, calibrator, policy, bundle_id=parsed.bundle_id, manifest=manifest,
                    bundle_dir=root, status_source=source)
        if audit_status_ttl_s is not None:
            coder.audit_status_ttl_s = float(audit_status_ttl_s)
        return coder

    @property
    def quantization(self) -> str | None:
        """The quantisation the neural view runs with (the bundle manifest's; None: fp32 weights)."""
        view = self.scorer.neural
        return getattr(view, "quantization", None) if view is not None else None

    @property
    def codeset_fy(self) -> int | None:
        return self.label_space.codeset_fy

    # -- audit status -----------------------------------------------------------------------------
    def audit_state(self) -> AuditState:
        """The bundle's audit status now, as ``predict`` sees it (asked on every call).

        A suspension (``audit_alarm``) and an untrustworthy status (``audit_status_unreadable``:
        fail closed) are each logged once per distinct status or problem, not once per call: a
        server answering thousands of requests must not bury its log, and one line says what to do.
        """
        if self.status_source is None:
            return AuditState()
        _check_ttl(self.audit_status_ttl_s)
        state = self.status_source.current(ttl_s=float(self.audit_status_ttl_s))
        if state.problem is not None:
            self._report(("problem", state.problem), "bundle %s: %s; every code goes to review "
                         "(audit_status_unreadable) until it can be read", self.bundle_id, state.problem)
        elif state.status is not None and state.status.suspended:
            self._report(("suspended", str(state.status.since)),
                         "bundle %s: auto-accept is suspended (%s, since %s): every code goes to review "
                         "(audit_alarm) until an admin lifts it", self.bundle_id, state.where, state.status.since)
        return state

    def _report(self, key: tuple[str, str], msg: str, *args: Any) -> None:
        if key not in self._reported:
            self._reported.add(key)
            log.warning(msg, *args)

    # -- prediction -------------------------------------------------------------------------------
    def predict(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        *,
        batch_size: int = 8,
        progress: bool | None = None,
        evidence_top_k: int | None = None,
        max_note_chars: int | None | str = "default",
    ) -> list[DocumentPrediction]:
        """Predict, calibrate and route every note; one :class:`DocumentPrediction` each.

        Notes are scored in length-sorted batches (little padding); results keep input order.
        An empty note is not an error: it is routed to review with reason ``empty_note``.
        A note longer than ``max_note_chars`` (default: the ``max_note_chars`` attribute,
        :data:`DEFAULT_MAX_NOTE_CHARS`) is cut to it and flagged ``truncated`` like one longer
        than the model's chunks; its ``input_sha256`` and evidence offsets refer to the text that
        was scored (a prefix of the note). A text that is not valid Unicode (an unpaired
        surrogate) is a ``DataError``: it cannot be tokenized nor written back as UTF-8.

        ``evidence_top_k`` (default: the policy's, i.e. what calibration certified τ with) is the
        number of attended positions per code turned into evidence. Every rule, ``no_evidence``
        included, is applied by the policy on inputs from :func:`routing_inputs`, the builder
        calibration certifies with; ``evidence_top_k=0`` computes no evidence, so nothing is
        auto-accepted.

        The bundle's audit status is asked on every call (:meth:`audit_state`): while it is
        suspended every predicted code goes to review with ``audit_alarm``; while it exists but
        cannot be trusted, with ``audit_status_unreadable`` (fail closed). Probabilities, evidence
        and the audit fields are unchanged.
        """
        if evidence_top_k is None:
            evidence_top_k = self.policy.evidence_top_k
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        ids = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        for name, value, low in (("batch_size", batch_size, 1), ("evidence_top_k", evidence_top_k, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}={value!r} is not valid", hint=f"an integer >= {low}")
        limit = self._note_limit(max_note_chars)
        if not texts:
            return []
        notes, texts = texts, [t[:limit] if limit is not None else t for t in texts]  # texts: what is scored
        for i, t in enumerate(texts):
            for what, value in (("id", ids[i]), ("text", t)):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise DataError(f"note {ascii(ids[i])}: {what} is not valid Unicode (unpaired surrogate "
                                    f"U+{ord(value[exc.start]):04X} at character {exc.start})",
                                    hint="decode the note from UTF-8 before sending it") from exc
        show = len(texts) >= PROGRESS_MIN_NOTES if progress is None else progress
        scored = score_for_routing(self.scorer, notes, evidence_top_k=evidence_top_k, batch_size=batch_size,
                                   progress=show, max_note_chars=limit)
        fused, truncated, empty = scored.fused, scored.truncated, scored.empty
        probs = self.calibrator.transform(fused.logits)
        hold = self.audit_state().hold  # asked after scoring: the freshest status decides
        routed = self.policy.route(routing_inputs(self.policy, self.label_space, scored, probs, hold=hold))
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        index = self.label_space.index
        out = []
        for i, decisions in enumerate(routed):
            codes = []
            for d in decisions:
                j = index[d.code]
                evidence = fused.evidence_for(i, j)  # what no_evidence was decided on (routing_inputs)
                codes.append(CodePrediction(d.code, self.label_space.descriptions.get(d.code, ""), d.probability,
                                            d.decision, list(d.reasons), evidence, fused.sources_for(i, j)))
            decision, reasons = document_decision(decisions, bool(empty[i]))
            out.append(DocumentPrediction(
                id=ids[i], codes=codes, document_decision=decision, document_reasons=reasons,
                bundle_id=self.bundle_id, codeset_fy=self.codeset_fy, policy_version=str(self.policy.policy_version),
                input_sha256=text_sha256(texts[i]), timestamp=stamp, truncated=bool(truncated[i]),
            ))
        return out

    def probabilities(self, texts: Sequence[str], *, batch_size: int = 8, calibrated: bool = True) -> np.ndarray:
        """Probabilities ``(n_notes, n_codes)`` for every code, for evaluation and plots.

        ``calibrated=False`` gives the fused score's own sigmoid (what the calibrator corrects),
        so a reliability diagram can compare both without a second scoring path.
        """
        limit = self._note_limit()
        texts = [t[:limit] if limit is not None else t for t in texts]
        logits = self.scorer.score(texts, batch_size=batch_size).logits
        return self.calibrator.transform(logits) if calibrated else sigmoid(logits)

    def _note_limit(self, max_note_chars: int | None | str = "default") -> int | None:
        """``max_note_chars`` checked; ``"default"`` means the instance's attribute."""
        limit = self.max_note_chars if max_note_chars == "default" else max_note_chars
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"max_note_chars={limit!r} is not valid", hint="a positive number of characters, or None")
        return limit

    def __repr__(self) -> str:
        return (f"Coder(bundle_id={self.bundle_id!r}, codes={len(self.label_space)}, "
                f"codeset_fy={self.codeset_fy}, policy_version={self.policy.policy_version!r}, "
                f"views={list(self.scorer.views)}, tau_accept={self.policy.threshold}"
                + (f", quantization={self.quantization!r})" if self.quantization else ")"))


def _read_calibration(path: Path) -> tuple[dict[str, Any], BaseCalibrator, RoutingPolicy]:
    """``calibration.json`` with its calibrator and policy, every stored value range-checked by
    their ``from_dict`` (a NaN τ or a shortened threshold list once loaded and auto-accepted more,
    or crashed at predict); any problem is one :class:`BundleError` line naming the file and field."""
    hint = "re-export the bundle with scripts/export.py"
    try:
        calibration = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(calibration, dict):
            raise TypeError(f"a JSON {type(calibration).__name__}, expected an object")
        return calibration, calibrator_from_dict(calibration["calibrator"]), RoutingPolicy.from_dict(calibration["policy"])
    except (BundleError, ConfigError) as exc:  # a stored value out of range, named by its field
        raise BundleError(f"{path}: {exc.message}", hint=exc.hint or hint) from exc
    except KeyError as exc:
        raise BundleError(f"{path}: field {exc} is missing", hint=hint) from exc
    except (OSError, ValueError, TypeError, RecursionError) as exc:  # ValueError: not UTF-8 / not JSON
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(f"{path}: unreadable ({type(exc).__name__}: {detail[:200]})", hint=hint) from exc


def _check_calibration_fits(calibrator: BaseCalibrator, policy: RoutingPolicy, n_codes: int,
                            bundle_dir: Path | None) -> None:
    """The calibrator and the decision thresholds are fitted, one value per code of the label
    space: a shortened ``thresholds`` list once loaded fine and crashed at the first predict.
    Checked here so every reader (``Coder.load``, the evidence evaluation's run coder) gets it."""
    where = f"{bundle_dir / 'calibration.json'}: " if bundle_dir is not None else "calibration: "
    hint = "calibrate and export the bundle from one training run (scripts/calibrate.py, scripts/export.py)"
    thresholds = getattr(policy.decision_threshold, "thresholds_", None)
    if thresholds is None:
        raise BundleError(f"{where}policy.decision_threshold has no fitted thresholds", hint=hint)
    if len(thresholds) != n_codes:
        raise BundleError(f"{where}policy.decision_threshold.state.thresholds has {len(thresholds)} entries, "
                          f"expected {n_codes} (one per code of labels.json)", hint=hint)
    fitted_codes = getattr(calibrator, "n_labels_", None)
    if fitted_codes is not None and fitted_codes != n_codes:
        raise BundleError(f"{where}calibrator.state has {fitted_codes} per-code parameters, expected {n_codes} "
                          f"(one per code of labels.json)", hint=hint)
    try:
        calibrator.transform(np.zeros((1, n_codes)))
    except RuntimeError as exc:  # not fitted (an empty ``state``)
        raise BundleError(f"{where}calibrator ({calibrator.name}) has no fitted state", hint=hint) from exc


def _check_ttl(value: Any) -> None:
    """``audit_status_ttl_s`` is a finite number of seconds >= 0 (0: ask the registry every call)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
        raise ConfigError(f"audit_status_ttl_s={value!r} is not valid",
                          hint="seconds >= 0 a registry audit status may be cached (default 60; 0: every call)")

