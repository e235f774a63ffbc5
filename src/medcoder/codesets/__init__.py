"""medcoder.codesets."""
