"""medcoder.modeling."""
