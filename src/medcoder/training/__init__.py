"""medcoder.training."""
