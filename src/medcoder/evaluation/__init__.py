"""medcoder.evaluation."""
