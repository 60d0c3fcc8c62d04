"""MLflow "models from code" definition of a backbone: prompts in, generations out.

Logged by `components.tracking.mlflow_tracking.register_backbone`; the weights travel
as the `backbone` artifact (a `save_pretrained` directory with safetensors).
"""

import mlflow
from mlflow.pyfunc import PythonModel


class BackboneModel(PythonModel):
    def load_context(self, context):
        from components.backbone.model import load_backbone

        self.backbone = load_backbone(context.artifacts["backbone"])

    def predict(self, context, model_input, params=None):
        params = params or {}
        prompts = list(model_input["prompt"]) if hasattr(model_input, "columns") else list(model_input)
        return self.backbone.generate(prompts, int(params.get("max_new_tokens", 16)))


mlflow.models.set_model(BackboneModel())
