"""What every per-population method shares: the population's members and training
examples (from the prepared data), and registering a trained population model in MLflow
as `<kind>-<task>-<population>` (a pyfunc "models from code" with the population
directory as its artifact, the frozen backbone referenced by URI, not copied)."""

from __future__ import annotations

import hashlib
import logging
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from components.lamp.history import history_examples
from components.lamp.io import read_questions
from components.storage.state import make_temporary
from components.lamp.tasks import get_task
from components.methods.base import Method, Prediction

POPULATION_METHODS = ("tap-per", "pplug")

POPULATION_PIP_REQUIREMENTS = ["torch==2.13.0", "transformers>=5.23,<6", "peft>=0.21,<0.22", "safetensors"]


def population_members(task: str, population: str, repo: str | Path = ".") -> list[str]:
    pops = json.loads((Path(repo) / "data" / "prepared" / get_task(task).name / "populations.json").read_text())
    members = sorted(u for u, p in pops["populations"].items() if p == population)
    if not members:
        raise KeyError(f"no users in population {population!r} of {task}; known: {sorted(pops['sizes'])}")
    return members


def population_examples(task: str, members: list[str], repo: str | Path = ".", max_examples: int | None = None):
    """Each member's history items (from their time/train and time/dev questions) as examples;
    with `max_examples`, the most recent items of every member, cut evenly across members."""
    from components.lamp.splits import split_files

    spec = get_task(task)
    keep = set(members)
    questions = []
    for split in ("time/train", "time/dev"):
        questions += [q for q in read_questions(split_files(spec.name, split, Path(repo) / "data")[0], spec)
                      if q.user_key in keep]
    examples = list(history_examples(spec, questions))
    if max_examples is None or len(examples) <= max_examples:
        return examples
    by_user: dict[str, list] = {}
    for q, gold in examples:                     # each user's items come oldest first
        by_user.setdefault(q.user_key, []).append((q, gold))
    per_user = max(1, max_examples // max(1, len(by_user)))
    return [ex for user in sorted(by_user) for ex in by_user[user][-per_user:]][:max_examples]


def register_population_model(kind: str, task: str, population: str, save: Callable[[Path], object],
                              backbone_uri: str, params: dict, metrics: dict,
                              losses: list[float], params_hash: str, repo: str | Path = ".",
                              version_tags: dict[str, str] | None = None) -> dict:
    """Save the population model with `save(dir)`, log and register it, tag the version (the
    standard tags and `version_tags`) before it counts as complete."""
    import mlflow

    from components.tracking import mlflow_tracking, registry

    from components import distributed

    spec = get_task(task)
    name = f"{kind}-{spec.name}-{population}"
    if not distributed.init().is_main:           # data-parallel ranks trained the same model
        return {"name": name, "rank": distributed.init().rank}
    tags = mlflow_tracking.standard_tags(repo, backbone=backbone_uri, population=population, kind=kind,
                                         params_hash=params_hash)
    mlflow_tracking.experiment(spec.name, repo)
    work = make_temporary(name, repo)
    try:
        save(work / "population")
        with registry.registering(name), mlflow.start_run(run_name=f"train-{name}", tags=tags) as run:
            mlflow.log_params(params)
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            for step, value in enumerate(losses):
                mlflow.log_metric("train_loss", value, step=step)
            info = mlflow.pyfunc.log_model(
                name=kind.replace("-", "_"), python_model=str(Path(__file__).with_name("population_model.py")),
                artifacts={"population": str(work / "population")},
                code_paths=[str(Path(__file__).resolve().parents[1])],
                pip_requirements=POPULATION_PIP_REQUIREMENTS, registered_model_name=name,
                model_config={"backbone_uri": backbone_uri, "task": spec.name, "kind": kind})
            version = str(info.registered_model_version)
            client = mlflow.MlflowClient()
            for key, value in {**tags, **(version_tags or {})}.items():
                client.set_model_version_tag(name, version, key, value)
            registry.mark_challenger(name, version)
            registry.complete(name, version)
        return {"name": name, "version": version, "model_uri": f"models:/{name}/{version}",
                "run_id": run.info.run_id, "final_loss": losses[-1] if losses else None}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def population_fingerprint(task: str, population: str, repo: str | Path = ".") -> str:
    """A content hash of what a population model trains on: its members and their history
    items. Retraining keys on it, so only populations whose data changed are retrained."""
    members = population_members(task, population, repo)
    digest = hashlib.sha256("|".join(members).encode())
    for q, gold in population_examples(task, members, repo):
        digest.update(json.dumps([q.user_key, q.input, gold, [p.to_json() for p in q.profile][-1:]],
                                 sort_keys=True).encode())
    return digest.hexdigest()[:16]


def load_population_dir(kind: str, directory: str | Path, backbone):
    """A saved population model directory as a `Method` on `backbone`."""
    if kind == "tap-per":
        from components.methods.tap_per.method import TapPerMethod

        return TapPerMethod.load(directory, backbone)
    if kind == "pplug":
        from components.methods.pplug.method import PPlugMethod

        return PPlugMethod.load(directory, backbone)
    raise ValueError(f"unknown population method {kind!r}; known: {', '.join(POPULATION_METHODS)}")


def load_population_method(kind: str, model_uri: str, backbone):
    """A registered population model as a `Method` (its directory fetched from MLflow)."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri)) / "artifacts" / "population"
    return load_population_dir(kind, local, backbone)


def population_inputs(task: str, population: str, max_examples: int | None, backbone_uri: str,
                      repo: str | Path = "."):
    """What every per-population trainer starts from: (spec, members, examples, backbone, uri)."""
    from components.tracking import mlflow_tracking

    spec = get_task(task)
    mlflow_tracking.configure(repo)
    members = population_members(spec.name, population, repo)
    examples = population_examples(spec.name, members, repo, max_examples)
    backbone, uri = mlflow_tracking.resolve_backbone(spec.name, backbone_uri, repo)
    return spec, members, examples, backbone, uri


def population_checkpoints(kind: str, task: str, population: str, profile, section: str, backbone_uri: str,
                           repo: str | Path = "."):
    """Where a population's training keeps its resumable checkpoint: one per backbone, the
    population's data and the method's settings; every `backbone.checkpoint_every` steps."""
    from components import distributed
    from components.storage.checkpoints import Checkpoints, checkpoint_path

    path = checkpoint_path(repo, f"{kind}-{task}-{population}", backbone_uri,
                           population_fingerprint(task, population, repo), profile.section_hash(section))
    return Checkpoints(path, profile.backbone.checkpoint_every, distributed.init().is_main)


def validate_and_promote(kind: str, reg: dict, task: str, population: str, repo: str | Path = ".",
                         split: str = "time/dev") -> dict:
    """Score a registered version on the fixed validation split (the population's users'
    questions), record it on the version, then apply the promotion rule."""
    import mlflow

    from components.evaluation.harness import evaluate
    from components.lamp.io import read_golds
    from components.lamp.splits import split_files
    from components.tracking import mlflow_tracking, registry

    spec = get_task(task)
    version = mlflow.MlflowClient().get_model_version(reg["name"], reg["version"])
    if "validation_metrics" not in version.tags:
        members = set(population_members(spec.name, population, repo))
        qfile, ofile = split_files(spec.name, split, Path(repo) / "data")
        questions = [q for q in read_questions(qfile, spec) if q.user_key in members]
        backbone, _ = mlflow_tracking.resolve_backbone(spec.name, version.tags["backbone"], repo)
        method = load_population_method(kind, reg["model_uri"], backbone)
        result = evaluate(method, None, spec, questions, read_golds(ofile, spec), split=split, progress=False)
        registry.record_validation(reg["name"], reg["version"], spec.name, result.metrics, split)
    return registry.promote(reg["name"], reg["version"]).to_dict()


class PopulationRouter(Method):
    """One method per population behind the common interface: each question goes to the
    model of its user's population (from the data plane's `populations.json`)."""

    def __init__(self, name: str, methods: dict[str, Method], populations: dict[str, str],
                 versions: dict[str, str] | None = None):
        self.name, self.methods, self.populations = name, methods, populations
        self.versions = versions or {}      # population -> the registered model version it serves
        self.per_user_params = max((m.per_user_params for m in methods.values()), default=0)

    def predict(self, backbone, spec, questions) -> list[Prediction]:
        return self.predict_routed(backbone, spec, questions, [self.populations.get(q.user_key) for q in questions])

    def predict_routed(self, backbone, spec, questions, routes: list[str | None]) -> list[Prediction]:
        """Answer each question with the model of the population in `routes` (serving places
        users the data never assigned)."""
        groups: dict[str, list[int]] = {}
        for i, (q, pop) in enumerate(zip(questions, routes)):
            if pop not in self.methods:
                raise KeyError(f"user {q.user_key!r} (question {q.id}) has no population with a {self.name} "
                               f"model; known populations: {sorted(self.methods)}")
            groups.setdefault(pop, []).append(i)
        out: list[Prediction | None] = [None] * len(questions)
        for pop, idx in groups.items():
            for i, pred in zip(idx, self.methods[pop].predict(backbone, spec, [questions[i] for i in idx])):
                out[i] = pred
        return out


def serving_version(name: str) -> str:
    """The version that serves: the champion, else the newest version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise KeyError(f"no registered model {name}: train it first (persona train "
                           f"{name.split('-LaMP')[0]})") from None
        return str(max(int(v.version) for v in versions))


def load_router(kind: str, task: str, backbone, repo: str | Path = ".") -> PopulationRouter:
    """Every population's serving model of `kind` for `task`, behind one router."""
    import copy

    spec = get_task(task)
    pops = json.loads((Path(repo) / "data" / "prepared" / spec.name / "populations.json").read_text())
    methods, versions = {}, {}
    for pop in sorted(pops["sizes"]):
        name = f"{kind}-{spec.name}-{pop}"
        versions[pop] = f"{name}/{serving_version(name)}"
        # adapters attach to the backbone they are loaded on: one copy per population
        methods[pop] = load_population_method(kind, f"models:/{versions[pop]}", copy.deepcopy(backbone))
    return PopulationRouter(kind, methods, pops["populations"], versions)


def main(argv: list[str] | None = None) -> int:
    """`python -m components.methods.populations --method tap-per --task LaMP-2 --population p0`,
    or the same under `torchrun` (data parallel; rank 0 registers)."""
    import argparse
    import importlib

    from components.config import load_profile
    from components.tracking import mlflow_tracking

    ap = argparse.ArgumentParser(description="Train one population's model and register it as "
                                             "<method>-<task>-<population>; runs under torchrun too.")
    ap.add_argument("--method", required=True, choices=POPULATION_METHODS, help="which per-population method")
    ap.add_argument("--task", required=True, help="LaMP task, e.g. LaMP-2")
    ap.add_argument("--population", required=True, help="population id from populations.json, e.g. p0")
    ap.add_argument("--repo", default=".", help="repository root")
    ap.add_argument("--profile", help="params.yaml profile")
    ap.add_argument("--backbone", help="backbone model URI (default: the latest registered backbone)")
    ap.add_argument("--result-file", help="where rank 0 writes the registration as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    profile = load_profile(args.profile, Path(args.repo) / "params.yaml")
    mlflow_tracking.configure(args.repo)
    backbone = args.backbone or mlflow_tracking.latest_backbone_uri(args.task)
    module = importlib.import_module(f"components.methods.{args.method.replace('-', '_')}.population")
    out = module.train_and_register(args.task, args.population, profile, backbone, args.repo)
    if args.result_file and out.get("rank", 0) == 0:
        from components.storage.files import write_json_atomic

        write_json_atomic(args.result_file, out)
    print(json.dumps({k: out[k] for k in ("name", "version") if k in out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
