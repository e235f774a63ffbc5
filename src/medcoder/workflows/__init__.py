"""medcoder.workflows: one module per script (train, calibrate, export, predict, promote, codesets).

The top layer, and the only one that reads a Hydra ``DictConfig``, opens MLflow runs, or lays out
run folders. Each workflow composes the domain packages below it; ``scripts/*.py`` only compose
the config and call one function here. Modules are imported on use (``medcoder.workflows.train``)
so one script does not pay for the others' imports.
"""
