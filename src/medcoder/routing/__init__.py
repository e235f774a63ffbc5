"""medcoder.routing."""
