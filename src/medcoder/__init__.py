"""medcoder: multi-label ICD-10 coding with calibrated confidence and human-review routing.

The model is an assistant to medical coders: every predicted code is tagged ``auto_accept`` or
``human_review`` with a reason, and every decision carries an audit trail.
"""

__version__ = "0.1.0"
