"""medcoder.inference."""
