"""``Coder``: the one inference path, ``Coder.load(bundle).predict(texts)``.

Batch prediction, the MLflow model, the HTTP endpoint and the notebooks all call this class, and it
calls the same pieces training and calibration use (chunking, :func:`score_notes`, the fitted
calibrator, :class:`RoutingPolicy`), so a probability and a decision mean the same everywhere.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from medcoder.calibration.calibrators import BaseCalibrator, calibrator_from_dict
from medcoder.data.chunking import chunk_texts
from medcoder.data.labels import LabelSpace
from medcoder.errors import BundleError
from medcoder.inference.bundle import Manifest, verify_bundle
from medcoder.inference.evidence import evidence_spans
from medcoder.inference.prediction import CodePrediction, DocumentPrediction, text_sha256
from medcoder.inference.scoring import score_notes, sigmoid
from medcoder.modeling import MedCoderForICDCoding
from medcoder.routing.policy import RoutingPolicy, document_decision

log = logging.getLogger(__name__)

#: Inputs larger than this show a progress bar by default.
PROGRESS_MIN_NOTES = 64


def resolve_bundle(ref: str | Path, download_dir: str | Path | None = None) -> Path:
    """A bundle directory from a path or an MLflow model URI (``models:/name@alias``, ``runs:/``).

    The MLflow model written by ``scripts/export.py`` carries the bundle as its ``bundle``
    artifact, so both routes end at the same verified directory.
    """
    text = str(ref)
    if text.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        import mlflow
        from mlflow.exceptions import MlflowException

        dst = Path(download_dir or tempfile.mkdtemp(prefix="medcoder-bundle-"))
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=str(dst)))
        except (MlflowException, OSError) as exc:
            raise BundleError(
                f"bundle={text}: cannot download it from {mlflow.get_tracking_uri()} ({str(exc).splitlines()[0]})",
                hint="check the model name and alias (scripts/promote.py) and the tracking URI",
            ) from exc
        # The pyfunc model keeps the bundle as artifacts/<bundle folder name>/ (one bundle per model).
        found = sorted(p.parent for p in (local / "artifacts").glob("*/manifest.json"))
        if (local / "manifest.json").is_file():
            found.append(local)
        if len(found) == 1:
            return found[0]
        raise BundleError(f"bundle={text}: the MLflow model holds no medcoder bundle",
                          hint="register models with scripts/export.py")
    path = Path(text).expanduser()
    if not path.exists():
        raise BundleError(f"bundle={path}: no such directory",
                          hint="pass a folder written by scripts/export.py or models:/<name>@<alias>")
    return path


class Coder:
    """A calibrated, routed ICD coder built from a bundle (or from in-memory parts, for tests).

    Attributes are the parts themselves (``model``, ``tokenizer``, ``label_space``,
    ``calibrator``, ``policy``) so an analyst can inspect them in a notebook.
    """

    def __init__(
        self,
        model: MedCoderForICDCoding,
        tokenizer: PreTrainedTokenizerBase,
        label_space: LabelSpace,
        calibrator: BaseCalibrator,
        policy: RoutingPolicy,
        *,
        bundle_id: str = "unbundled",
        manifest: Manifest | None = None,
        bundle_dir: Path | None = None,
    ) -> None:
        model_codes = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if model_codes != list(label_space.codes):
            raise BundleError("the model's labels and labels.json differ (order or content)",
                              hint="re-export the bundle from one training run")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.label_space = label_space
        self.calibrator = calibrator
        self.policy = policy
        self.bundle_id = bundle_id
        self.manifest = manifest
        self.bundle_dir = bundle_dir

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, bundle: str | Path, *, device: str = "cpu", verify: bool = True) -> Coder:
        """Load and verify a bundle (path or ``models:/name@alias``); see :mod:`.bundle`."""
        root = resolve_bundle(bundle)
        manifest = verify_bundle(root) if verify else None
        try:
            label_space = LabelSpace.from_json(root / "labels.json")
            calibration = json.loads((root / "calibration.json").read_text())
            calibrator = calibrator_from_dict(calibration["calibrator"])
            policy = RoutingPolicy.from_dict(calibration["policy"])
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise BundleError(f"{root}: labels.json/calibration.json unreadable ({exc})",
                              hint="re-export the bundle with scripts/export.py") from exc
        try:
            model = MedCoderForICDCoding.from_pretrained(root / "model").to(device)
            tokenizer = AutoTokenizer.from_pretrained(root / "model")
        except (OSError, ValueError) as exc:
            raise BundleError(f"{root / 'model'}: cannot load the model ({str(exc).splitlines()[0]})",
                              hint="re-export the bundle") from exc
        bundle_id = manifest.bundle_id if manifest else json.loads((root / "manifest.json").read_text())["bundle_id"]
        return cls(model, tokenizer, label_space, calibrator, policy,
                   bundle_id=bundle_id, manifest=manifest, bundle_dir=root)

    @property
    def codeset_fy(self) -> int | None:
        return self.label_space.codeset_fy

    # -- prediction -------------------------------------------------------------------------------
    def predict(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        *,
        batch_size: int = 8,
        progress: bool | None = None,
        evidence_top_k: int = 3,
    ) -> list[DocumentPrediction]:
        """Predict, calibrate and route every note; one :class:`DocumentPrediction` each.

        Notes are scored in length-sorted batches (little padding); results keep input order.
        An empty note is not an error: it is routed to review with reason ``empty_note``.
        """
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        ids = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        if not texts:
            return []
        cfg = self.model.config
        use_offsets = bool(getattr(self.tokenizer, "is_fast", False)) and evidence_top_k > 0
        features, offsets = self._features(texts, return_offsets=use_offsets)
        show = len(texts) >= PROGRESS_MIN_NOTES if progress is None else progress
        with torch.inference_mode():
            scores = score_notes(self.model, features, batch_size=batch_size, progress=show,
                                 evidence_top_k=evidence_top_k if use_offsets else 0)
        probs = self.calibrator.transform(scores.logits)
        truncated = np.asarray(features["truncated"], dtype=bool)
        empty = np.array([not t.strip() for t in texts], dtype=bool)
        routed = self.policy.route(probs, self.label_space.codes, self.label_space.frequency, truncated, empty)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        index = self.label_space.index
        out = []
        for i, decisions in enumerate(routed):
            codes = []
            for d in decisions:
                evidence: list[dict[str, Any]] = []
                if scores.top_positions is not None:
                    j = index[d.code]
                    evidence = evidence_spans(scores.top_positions[i, :, j], scores.top_weights[i, :, j], offsets[i],
                                              chunk_size=cfg.chunk_size, stride=max(1, cfg.token_pool_stride),
                                              text=texts[i])
                codes.append(CodePrediction(d.code, self.label_space.descriptions.get(d.code, ""), d.probability,
                                            d.decision, list(d.reasons), evidence))
            decision, reasons = document_decision(decisions, bool(empty[i]))
            out.append(DocumentPrediction(
                id=ids[i], codes=codes, document_decision=decision, document_reasons=reasons,
                bundle_id=self.bundle_id, codeset_fy=self.codeset_fy, policy_version=str(self.policy.policy_version),
                input_sha256=text_sha256(texts[i]), timestamp=stamp, truncated=bool(truncated[i]),
            ))
        return out

    def probabilities(self, texts: Sequence[str], *, batch_size: int = 8, calibrated: bool = True) -> np.ndarray:
        """Probabilities ``(n_notes, n_codes)`` for every code, for evaluation and plots.

        ``calibrated=False`` gives the model's own sigmoid (what the calibrator corrects), so a
        reliability diagram can compare both without a second scoring path.
        """
        features, _ = self._features(list(texts))
        logits = score_notes(self.model, features, batch_size=batch_size).logits
        return self.calibrator.transform(logits) if calibrated else sigmoid(logits)

    def _features(self, texts: list[str], *, return_offsets: bool = False) -> tuple[Dataset, list | None]:
        """Chunked token ids (the model's input) and, optionally, each token's character span."""
        cfg = self.model.config
        chunks = chunk_texts(texts, self.tokenizer, chunk_size=cfg.chunk_size, max_chunks=cfg.max_chunks,
                             return_offsets=return_offsets)
        offsets = chunks.pop("offsets", None)
        return Dataset.from_dict(chunks), offsets

    def __repr__(self) -> str:
        return (f"Coder(bundle_id={self.bundle_id!r}, codes={len(self.label_space)}, "
                f"codeset_fy={self.codeset_fy}, policy_version={self.policy.policy_version!r}, "
                f"tau_accept={self.policy.tau_accept})")
