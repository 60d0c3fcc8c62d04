"""Registry promotion: challenger/champion aliases, the rule, evidence, rollback, races."""

import json
import multiprocessing

import pytest

from components.tracking import registry


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("registry-tests")      # not an experiment id left over from another store
    return uri


def _version(name: str, task: str, metrics: dict | None) -> str:
    """A registered version whose artifact is a small text file (the rule never reads it)."""
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_text("weights", "model/weights.txt")
    mv = mlflow.MlflowClient().create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    registry.mark_challenger(name, mv.version)
    if metrics is not None:
        registry.record_validation(name, mv.version, task, metrics, "time/dev")
    return str(mv.version)


def _new_model(name):
    import mlflow

    mlflow.MlflowClient().create_registered_model(name)


def test_first_version_becomes_champion_and_a_worse_challenger_never_does(store):
    import mlflow

    _new_model("m")
    v1 = _version("m", "LaMP-2", {"accuracy": 0.40, "f1": 0.3})
    d1 = registry.promote("m")
    assert d1.promoted and d1.version == v1 and d1.reason == "no champion yet"
    v2 = _version("m", "LaMP-2", {"accuracy": 0.35, "f1": 0.5})       # worse on the primary metric
    d2 = registry.promote("m")
    assert not d2.promoted and d2.champion_version == v1
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("m", "champion").version) == v1
    assert str(client.get_model_version_by_alias("m", "challenger").version) == v2
    evidence = json.loads(client.get_model_version("m", v2).tags["promotion_evidence"])
    assert evidence["challenger_metrics"]["accuracy"] == 0.35 and evidence["champion_metrics"]["accuracy"] == 0.40
    assert client.get_model_version("m", v2).tags["promotion_decision"].startswith("rejected")
    v3 = _version("m", "LaMP-2", {"accuracy": 0.40, "f1": 0.1})       # as good: promoted
    assert registry.promote("m").promoted
    assert str(client.get_model_version_by_alias("m", "champion").version) == v3


def test_lower_is_better_for_rating_tasks_and_rollback(store):
    import mlflow

    _new_model("r")
    v1 = _version("r", "LaMP-3", {"MAE": 0.40, "RMSE": 0.7})
    registry.promote("r")
    assert not registry.promote("r", _version("r", "LaMP-3", {"MAE": 0.45, "RMSE": 0.6})).promoted
    v3 = _version("r", "LaMP-3", {"MAE": 0.30, "RMSE": 0.9})
    assert registry.promote("r").promoted
    assert registry.rollback("r") == v1
    assert str(mlflow.MlflowClient().get_model_version_by_alias("r", "champion").version) == v1
    shown = registry.show("r")
    assert shown["aliases"]["champion"] == v1 and shown["champion_history"] == [v1]
    assert [v["version"] for v in shown["versions"]] == [v1, "2", v3]
    with pytest.raises(registry.RegistryError, match="no earlier champion"):
        registry.rollback("r")


def test_unevaluated_or_unknown_versions_are_refused(store):
    _new_model("u")
    v = _version("u", "LaMP-2", None)
    with pytest.raises(registry.RegistryError, match="no validation metrics"):
        registry.promote("u", v)
    with pytest.raises(registry.RegistryError, match="no version 9"):
        registry.promote("u", "9")
    with pytest.raises(registry.RegistryError, match="no registered model"):
        registry.show("nope")


def _promote_in_process(uri: str, name: str, version: str, barrier) -> bool:
    import mlflow

    mlflow.set_tracking_uri(uri)
    barrier.wait()
    return registry.promote(name, version).promoted


def test_two_racing_promotions_end_with_one_consistent_champion(store):
    import mlflow

    _new_model("race")
    v1 = _version("race", "LaMP-2", {"accuracy": 0.30})
    registry.promote("race", v1)
    better = _version("race", "LaMP-2", {"accuracy": 0.50})
    good = _version("race", "LaMP-2", {"accuracy": 0.40})
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            results = pool.starmap(_promote_in_process, [(store, "race", good, barrier),
                                                         (store, "race", better, barrier)])
    champion = str(mlflow.MlflowClient().get_model_version_by_alias("race", "champion").version)
    # whatever the order, the better version ends as champion and the history agrees with the alias
    assert champion == better
    assert registry.show("race")["champion_history"][-1] == champion
    assert results[1] is True
