"""medcoder.tracking."""
