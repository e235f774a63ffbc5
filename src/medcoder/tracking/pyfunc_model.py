"""The MLflow model's code (MLflow "models from code"): the file ``scripts/export.py`` logs as
``python_model``, so the registered model holds this source instead of a pickle.

Why: ``mlflow.pyfunc.log_model(python_model=MedCoderModel())`` wrote ``python_model.pkl``, a
CloudPickle that ``mlflow.pyfunc.load_model("models:/...")`` unpickled, so whoever could write to
the artifact store could run code on every machine that loaded the model, and the bundle's
promise ("bundle files hold no pickle") stopped at the MLflow model around it. With models from
code, MLflow copies this file into the model folder and, when loading, runs it (a readable,
reviewable file of three statements); it builds the model from the *installed* medcoder
(pinned in the model's requirements) and its ``load_context`` loads the bundle with
``Coder.load``, which verifies every file against the manifest.

Keep this file tiny and free of state: it is copied as is into every logged model.
"""

import mlflow

from medcoder.tracking.pyfunc import MedCoderModel

mlflow.models.set_model(MedCoderModel())
