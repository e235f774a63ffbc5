"""medcoder.data."""
