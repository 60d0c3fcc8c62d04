"""A population training killed with SIGKILL (no cleanup runs) during training, between
registering a version and marking it, or half-way through a promotion: the next run
completes (resuming a killed training from its checkpoint), and the registry holds no
version without its tags and alias, no pending registration and no temporaries of the dead
process. A SIGTERM stops a training at its next step and leaves no process behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.evaluation.test_run import tiny_repo

pytestmark = pytest.mark.slow

# Runs the training and promotion of every TAP-PER population, dying at `point`.
KILLED_RUN = """
import json, os, signal, sys
point, repo, backbone = sys.argv[1:4]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

import components.tracking.registry as registry
if point == "training":
    import torch
    step, calls = torch.optim.AdamW.step, []
    def dying_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            die()
        return step(self, *args, **kwargs)
    torch.optim.AdamW.step = dying_step
elif point == "registration":
    registry.mark_challenger = die
elif point == "promotion":                  # after the alias moved, or before the decision is written
    def half(name, version):
        registry._client().set_registered_model_alias(name, registry.CHAMPION, version)
        die()
    registry._set_champion = half
    client = registry._client
    def dying_client():
        c = client()
        tag = c.set_model_version_tag
        c.set_model_version_tag = lambda name, version, key, value: (
            die() if key == "promotion_decision" else tag(name, version, key, value))
        return c
    registry._client = dying_client

from components.methods.populations import validate_and_promote
from components.tracking.mlflow_tracking import configure
from flows.populations import train_limited

configure(repo)
for key, reg in train_limited("tap-per", {"LaMP-2": {"model_uri": backbone}}, repo=repo).items():
    validate_and_promote("tap-per", reg, *key.split("/"), repo)
"""


def _set_lr(repo, lr):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profiles"]["demo"]["tap_per"].update({"epochs": 1, "prefix_length": 2, "max_parallel": 1,
                                                  "max_examples": 40, "lr": lr})
    params["profiles"]["demo"]["backbone"]["checkpoint_every"] = 1            # every step resumable
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


def test_killed_population_training_leaves_no_debris(tmp_path, synth_root, prefect_api, monkeypatch):
    import mlflow

    from components.backbone.train import train_and_register
    from components.config import load_profile
    from components.methods.populations import validate_and_promote
    from components.storage.state import state_dir
    from components.tracking import registry
    from flows.populations import train_limited

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    repo = tiny_repo(tmp_path, synth_root)
    _set_lr(repo, 1e-3)
    backbone = train_and_register("LaMP-2", load_profile("demo", repo / "params.yaml"), repo, progress=False)
    client = mlflow.MlflowClient()
    from prefect.settings import get_current_settings

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri,
           "PREFECT_API_URL": str(get_current_settings().api.url)}     # the session's Prefect API
    for i, point in enumerate(("training", "registration", "promotion")):
        _set_lr(repo, 1e-3 * (i + 2))                   # new settings: every population trains again
        killed = subprocess.run([sys.executable, "-c", KILLED_RUN, point, str(repo), backbone["model_uri"]],
                                cwd=repo, env=env, capture_output=True, text=True)
        assert killed.returncode == -9, killed.stderr[-3000:]
        checkpoints = lambda: sorted((state_dir(repo) / "checkpoints").glob("tap-per-*.pt"))  # noqa: E731
        if point == "training":                                  # the next run resumes from it
            assert checkpoints()
        if point == "registration":       # a version exists, unmarked; the temporaries of the dead process
            assert list((state_dir(repo) / "tmp").iterdir())
            pending = [m for m in client.search_registered_models() if registry.PENDING in m.tags]
            assert pending
        out = train_limited("tap-per", {"LaMP-2": backbone}, repo=str(repo))
        decisions = {key: validate_and_promote("tap-per", reg, *key.split("/"), repo) for key, reg in out.items()}
        assert decisions
        assert not checkpoints()                                 # removed once registered
        tmp = state_dir(repo) / "tmp"
        assert not (tmp.exists() and list(tmp.iterdir())), list(tmp.iterdir())
        for model in client.search_registered_models(filter_string="name LIKE 'tap-per-%'"):
            assert registry.PENDING not in model.tags, (point, model.name)
            assert registry.CHAMPION in model.aliases and registry.CHALLENGER in model.aliases
            history = json.loads(model.tags["champion_history"])
            assert history[-1] == str(model.aliases[registry.CHAMPION]), (point, model.name, history)
            for v in client.search_model_versions(f"name='{model.name}'"):
                assert v.tags.get(registry.COMPLETE) and v.tags.get("kind") == "tap-per", (point, model.name, v.version)


def _process_group(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_sigterm_stops_a_training_at_its_next_step(tmp_path, synth_root, monkeypatch):
    """`persona train tap-per` on SIGTERM: the running training saves its checkpoint and stops
    (nothing is registered, where finishing would register every population), the queued ones
    never start, and the command's ephemeral Prefect server goes with it."""
    import mlflow

    from components.backbone.train import train_and_register
    from components.config import load_profile

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    repo = tiny_repo(tmp_path, synth_root)
    _set_lr(repo, 1e-3)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profiles"]["demo"]["tap_per"].update({"epochs": 200, "max_examples": 400})  # minutes to finish
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    train_and_register("LaMP-2", load_profile("demo", repo / "params.yaml"), repo, progress=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PERSONA_"))}
    env.update(PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=uri)         # its own Prefect server and state
    log = tmp_path / "train.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "train", "tap-per"], cwd=repo, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    checkpoints = repo / ".state" / "checkpoints"
    try:
        while not list(checkpoints.glob("tap-per-*.pt")):           # a training is under way
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        assert len(_process_group(proc.pid)) > 1                     # the command and its Prefect server
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not _process_group(proc.pid), log.read_text()[-3000:]     # no orphaned server
    assert "save a checkpoint and end at their next step" in log.read_text()
    assert len(list(checkpoints.glob("tap-per-*.pt"))) == 1          # the stopped one; the others never began
    assert not mlflow.MlflowClient().search_model_versions("name LIKE 'tap-per-%'")
    assert not list((repo / ".state" / "tmp").glob("*"))
