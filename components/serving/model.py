"""MLflow "models from code" definition of the serving model `serve-<method>`.

Input rows {user_id, task, input, profile (optional), date (optional)} -> a DataFrame of
{output, personalized, method, model_version}. The model holds no weights: `model_config`
names the method and the repository whose data, MLflow registry and caches it serves
(`PERSONA_REPO` overrides the path), and everything is loaded lazily per task on first use.
A malformed row is answered with HTTP 400 and a message naming the row and the field.
"""

import mlflow
from mlflow.pyfunc import PythonModel


class ServingModel(PythonModel):
    def load_context(self, context):
        import os

        from components.serving.service import PersonaService

        cfg = context.model_config
        repo = os.environ.get("PERSONA_REPO") or cfg["repo"]
        from components.storage.state import CACHE_VARIABLES, cache_dir

        for kind, variable in CACHE_VARIABLES.items():
            os.environ.setdefault(variable, str(cache_dir(kind, repo)))
        self.service = PersonaService(cfg["method"], repo, cfg.get("profile"), int(cfg.get("batch_size", 16)))

    def predict(self, context, model_input, params=None):
        import pandas as pd
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from components.serving.requests import RequestError

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        try:
            answers = self.service.answer(rows)
        except RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame(answers, columns=["output", "personalized", "method", "model_version"])


mlflow.models.set_model(ServingModel())
