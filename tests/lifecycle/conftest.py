"""One real workspace for the serving and user-lifecycle tests: git + DVC (local remote),
the data flow on 30 synthetic LaMP-2 users, a tiny backbone, TAP-PER and PPlug per
population, Attn-GS's marker and compressor, registered in a SQLite MLflow store. Built once per module."""

import os
import shutil

import pytest
import yaml

from tests.evaluation.test_run import use_tiny_backbone
from tests.flows.test_data_flow import _git, make_repo


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, prefect_api):
    import flows  # noqa: F401
    from components.backbone.train import train_and_register
    from components.config import load_profile
    from flows.data import data_flow
    from components.methods.attn_gs import registry as attn_gs
    from flows.populations import train_limited

    root = tmp_path_factory.mktemp("lifecycle")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "PERSONA_VECTOR_CACHE", "PERSONA_CONTEXT_CACHE")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["PERSONA_VECTOR_CACHE"] = str(root / "vectors")
    os.environ["PERSONA_CONTEXT_CACHE"] = str(root / "contexts")
    repo = make_repo(root / "repo", root / "remote")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    demo = params["profiles"]["demo"]
    demo["tasks"] = ["LaMP-2"]
    use_tiny_backbone(demo)
    demo["evaluation"]["methods"] = ["non-personalized", "bm25-2", "tap-per", "pplug", "attn-gs@6"]
    demo["evaluation"]["batch_size"] = 8
    demo["tap_per"].update({"epochs": 1, "prefix_length": 2, "max_examples": 60})
    demo["pplug"].update({"epochs": 1, "max_history": 8, "max_examples": 60})
    demo["attn_gs"].update({"marker_steps": 2, "compressor_steps": 2, "train_budgets": [6], "max_train_examples": 16,
                            "max_compressor_questions": 8})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(shutil.os.path.dirname(flows.__file__), repo / "flows",
                    ignore=shutil.ignore_patterns("__pycache__"))
    data_flow(repo=str(repo), push=True)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "data")
    backbone = train_and_register("LaMP-2", load_profile("demo", repo / "params.yaml"), repo, progress=False)
    for method in ("tap-per", "pplug"):
        train_limited(method, {"LaMP-2": backbone}, repo=str(repo))
    attn_gs.train_and_register("LaMP-2", load_profile("demo", repo / "params.yaml"), backbone["model_uri"], repo,
                               progress=False)
    yield repo
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
