"""medcoder.calibration: calibrators, decision thresholds, the precision guarantee, reports.

Plot helpers live in :mod:`medcoder.calibration.plots` (imported on demand: matplotlib is not
needed on the inference path).
"""

from medcoder.calibration.calibrators import (
    CALIBRATOR_NAMES,
    BaseCalibrator,
    IdentityCalibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
    calibrator_from_dict,
    make_calibrator,
)
from medcoder.calibration.report import (
    brier_score,
    calibration_report,
    reliability_curve,
)
from medcoder.calibration.risk_control import (
    AcceptThresholdResult,
    RiskTargets,
    precision_lower_bound,
    select_accept_threshold,
)
from medcoder.calibration.thresholds import DecisionThreshold, f1_optimal_threshold

__all__ = [
    "CALIBRATOR_NAMES",
    "AcceptThresholdResult",
    "BaseCalibrator",
    "DecisionThreshold",
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "RiskTargets",
    "TemperatureCalibrator",
    "brier_score",
    "calibration_report",
    "calibrator_from_dict",
    "f1_optimal_threshold",
    "make_calibrator",
    "precision_lower_bound",
    "reliability_curve",
    "select_accept_threshold",
]
