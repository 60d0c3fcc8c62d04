"""MLflow "models from code" definition of a per-population model (TAP-PER or PPlug).

Input rows {user_id, input, profile (optional), date (optional)} -> outputs. The method
kind and the task come from `model_config`; the frozen backbone is resolved from the
registry (`model_config["backbone_uri"]`), not copied into every population model. This
model answers for its own population's users; serving any user of any task (guests,
batching, the `personalized` flag) is `serve-<method>` (`components/serving/`).
"""

import mlflow
from mlflow.pyfunc import PythonModel


class PopulationModel(PythonModel):
    def load_context(self, context):
        from components.lamp.tasks import get_task
        from components.methods.populations import load_population_dir
        from components.tracking.mlflow_tracking import resolve_backbone

        cfg = context.model_config
        self.spec = get_task(cfg["task"])
        backbone, _ = resolve_backbone(self.spec.name, cfg["backbone_uri"])
        self.method = load_population_dir(cfg["kind"], context.artifacts["population"], backbone)

    def predict(self, context, model_input, params=None):
        from components.lamp.io import parse_profile_item
        from components.lamp.records import Question

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        questions = [Question(id=str(i), input=r["input"], user_id=str(r["user_id"]), date=r.get("date"),
                              profile=[parse_profile_item("request", p, None, str(i), j)
                                       for j, p in enumerate(r.get("profile") or [])])
                     for i, r in enumerate(rows)]
        return [p.output for p in self.method.predict(None, self.spec, questions)]


mlflow.models.set_model(PopulationModel())
