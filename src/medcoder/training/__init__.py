"""medcoder.training: the HF ``Trainer`` wiring (fit loop, checkpoints and resume, early stopping,
warm start).

Free of MLflow and of the tracking package: metrics leave through the callbacks the caller hands
to the Trainer (``medcoder.workflows.train`` passes MLflow's).
"""
