"""medcoder.calibration."""
