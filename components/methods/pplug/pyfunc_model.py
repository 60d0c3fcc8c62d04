"""MLflow "models from code" definition of a PPlug population model.

Input rows {user_id, input, profile, date (optional)} -> outputs. PPlug keeps no per-user
state, so any user with a profile is personalized, seen in training or not; the item
vectors come from the on-disk cache (`$PERSONA_VECTOR_CACHE`) or are encoded on the fly.
The frozen backbone is resolved from the registry (`model_config["backbone_uri"]`).
Full serving (batching, flags, unknown users without a profile) is issue 8.
"""

import mlflow
from mlflow.pyfunc import PythonModel


class PPlugModel(PythonModel):
    def load_context(self, context):
        from components.lamp.tasks import get_task
        from components.methods.pplug.method import PPlugMethod
        from components.tracking.mlflow_tracking import resolve_backbone

        cfg = context.model_config
        self.spec = get_task(cfg["task"])
        backbone, _ = resolve_backbone(self.spec.name, cfg["backbone_uri"])
        self.method = PPlugMethod.load(context.artifacts["population"], backbone)

    def predict(self, context, model_input, params=None):
        from components.lamp.io import parse_profile_item
        from components.lamp.records import Question

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        questions = [Question(id=str(i), input=r["input"], user_id=str(r["user_id"]), date=r.get("date"),
                              profile=[parse_profile_item("request", p, None, str(i), j)
                                       for j, p in enumerate(r.get("profile") or [])])
                     for i, r in enumerate(rows)]
        return [p.output for p in self.method.predict(None, self.spec, questions)]


mlflow.models.set_model(PPlugModel())
