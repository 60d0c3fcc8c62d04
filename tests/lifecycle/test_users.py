"""The user lifecycle on a real workspace: onboarding (TAP-PER's online P_u fit leaves every
other user's answers unchanged), forgetting with the audit (current state clean; history
clean only with --purge-history, on a local DVC remote and on S3 on loopback), bad input."""

import json
import os
import subprocess
import sys

import pytest

from tests.storage.test_s3_roundtrip import s3_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def _persona(repo, *args):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=repo, capture_output=True, text=True)


def _questions(repo, split="time/test"):
    from components.lamp.io import read_questions
    from components.lamp.splits import split_files

    return read_questions(split_files("LaMP-2", split, repo / "data")[0], "LaMP-2")


def _rows(questions):
    return [{"user_id": q.user_id, "task": "LaMP-2", "input": q.input, "date": q.date} for q in questions]


def _new_user_files(repo, tmp_path, source_user, new_user):
    """A new user's history: a copy of an existing user's records under new ids."""
    from components.lamp.io import read_golds

    qs, golds = [], {}
    for split in ("train", "dev", "test"):
        for q in _questions(repo, f"time/{split}"):
            if q.user_id == source_user:
                rec = q.to_json()
                rec.update(id=f"{new_user}-{q.id}", user_id=new_user)
                qs.append(rec)
                golds[rec["id"]] = read_golds(repo / f"data/prepared/LaMP-2/time/{split}_outputs.json")[q.id]
    qfile, ofile = tmp_path / "new_questions.json", tmp_path / "new_outputs.json"
    qfile.write_text(json.dumps(qs))
    ofile.write_text(json.dumps({"task": "LaMP_2", "golds": [{"id": k, "output": v} for k, v in golds.items()]}))
    return qfile, ofile


def test_onboarding_a_user_is_quick_and_changes_no_one_else(workspace, tmp_path):
    from components.lifecycle.onboard import onboard_users
    from components.serving.service import PersonaService

    others = _questions(workspace)[:12]
    before = PersonaService("tap-per", workspace).answer(_rows(others))
    lock_before = (workspace / "dvc.lock").read_text()
    qfile, ofile = _new_user_files(workspace, tmp_path, others[0].user_id, "newbie-1")

    out = onboard_users("LaMP-2", qfile, ofile, workspace)
    tap = out["servable"]["tap-per"]
    assert tap["users"]["newbie-1"]["seconds"] < 30 and tap["users"]["newbie-1"]["examples"] > 0
    assert out["servable"]["pplug"]["items_encoded"] >= 0 and "attn-gs@6" in out["servable"]["attn-gs"]["compressed"]
    assert (workspace / "dvc.lock").read_text() != lock_before                 # a new data version
    pops = json.loads((workspace / "data/prepared/LaMP-2/populations.json").read_text())["populations"]
    population = out["populations"]["newbie-1"]
    assert pops["newbie-1"] == population
    assert any(q.user_id == "newbie-1" for q in _questions(workspace))

    service = PersonaService("tap-per", workspace)
    after = service.answer(_rows(others))
    assert [a["output"] for a in after] == [a["output"] for a in before]       # nobody else changed
    new = service.answer([{"user_id": "newbie-1", "task": "LaMP-2", "input": others[0].input}])[0]
    assert new["personalized"] and new["model_version"] == tap["versions"][population]

    # the same users again, and a malformed file: refused, nothing changed
    lock = (workspace / "dvc.lock").read_text()
    again = _persona(workspace, "users", "add", "--task", "LaMP-2", str(qfile), "--outputs", str(ofile))
    assert again.returncode == 2 and "'newbie-1' is already in the data" in again.stderr
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"id": "b1", "user_id": "newbie-2", "profile": []}]))
    bad = _persona(workspace, "users", "add", "--task", "LaMP-2", str(broken))
    assert bad.returncode != 0 and "b1" in bad.stderr and "input" in bad.stderr
    assert (workspace / "dvc.lock").read_text() == lock


def _own_texts(repo, user) -> set[str]:
    """The texts (questions and history items) of `user` that no other user has."""
    mine, others = set(), set()
    for split in ("train", "dev", "test"):
        for q in _questions(repo, f"time/{split}"):
            texts = {q.input} | {p.fields["description"] for p in q.profile}
            (mine if q.user_id == user else others).update(texts)
    return mine - others


def _files_holding(root, user, texts) -> list[str]:
    """Every file under `root` (but git's packed objects) whose bytes hold the user id as a
    token or one of the texts: the independent check the audit must agree with."""
    import re

    token = re.compile(rb"(?<![A-Za-z0-9_])" + re.escape(user.encode()) + rb"(?![A-Za-z0-9_])")
    needles = [t.encode() for t in texts] + [json.dumps(t)[1:-1].encode() for t in texts]
    return [str(p) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts
            and (token.search(blob := p.read_bytes()) or any(n in blob for n in needles))]


def _a_user(repo, skip=()):
    return next(q.user_id for q in _questions(repo) if q.user_id not in skip and not q.user_id.startswith("newbie"))


def test_forget_then_audit_and_purge_history(workspace):
    from components.serving.service import PersonaService

    user = _a_user(workspace)
    q = next(q for q in _questions(workspace) if q.user_id == user)
    PersonaService("attn-gs@6", workspace).answer(_rows([q]))          # the user's compressed context is cached
    PersonaService("pplug", workspace).answer(_rows([q]))
    lock = (workspace / "dvc.lock").read_text()

    missing = _persona(workspace, "users", "forget", "no-such-user")
    assert missing.returncode == 2 and "'no-such-user' is not in the current data" in missing.stderr
    invalid = _persona(workspace, "users", "forget", "../etc/passwd")
    assert invalid.returncode == 2 and "not a valid user id" in invalid.stderr
    assert (workspace / "dvc.lock").read_text() == lock                        # nothing changed

    from components.lifecycle.models import population_models
    from components.methods.populations import serving_version, validate_and_promote

    for name in population_models("tap-per", "LaMP-2"):       # validated champions, as the pipeline leaves them
        version = serving_version(name)
        validate_and_promote("tap-per", {"name": name, "version": version, "model_uri": f"models:/{name}/{version}"},
                             "LaMP-2", name.rsplit("-", 1)[1], workspace)
    done = _persona(workspace, "users", "forget", user)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["audit"]["clean"] and not any(out["audit"]["current"].values())
    assert out["records_removed"] > 0 and out["models"]                       # new P_u versions
    assert out["caches"]["contexts_removed"] > 0 and out["caches"]["vectors_removed"] > 0
    assert out["audit"]["history"]["model_versions"] and out["audit"]["history"]["dvc_cache"]
    assert user not in (workspace / "data/prepared/LaMP-2/populations.json").read_text()
    answer = PersonaService("tap-per", workspace).answer([{"user_id": user, "task": "LaMP-2", "input": q.input}])[0]
    assert not answer["personalized"]                                         # a stranger now
    for model in out["models"]:          # versions that hold the user never serve again
        name, old, new = model["name"], model["derived_from"], model["version"]
        back = _persona(workspace, "registry", "rollback", name)
        assert back.returncode == 2 and "forgotten user" in back.stderr and "Traceback" not in back.stderr
        again = _persona(workspace, "registry", "promote", name, "--version", old)
        assert again.returncode == 2 and f"version {old} cannot be promoted" in again.stderr
        kept = _persona(workspace, "registry", "promote", name, "--version", new)      # it has what promotion reads
        assert kept.returncode == 0 and "already the champion" in kept.stdout, kept.stderr[-2000:]
        assert json.loads(_persona(workspace, "registry", "show", name).stdout)["champion_history"][-1] == new

    second = _a_user(workspace, skip={user})
    texts = _own_texts(workspace, second)
    assert _files_holding(workspace.parent, second, texts)      # in data, MLflow's artifacts and the DVC store
    purged = _persona(workspace, "users", "forget", second, "--purge-history")
    assert purged.returncode == 0, purged.stderr[-3000:]
    report = json.loads(purged.stdout)
    assert report["audit"]["clean"] and not any(report["audit"]["history"].values()), report["audit"]
    # an independent scan of every file of the workspace, its MLflow store and DVC remote agrees
    assert not _files_holding(workspace.parent, second, texts)
    history = subprocess.run(["git", "log", "--all", "-p"], cwd=workspace, capture_output=True, text=True).stdout
    assert second not in history and not any(t in history for t in texts)
    assert report["purged"]["model_versions_deleted"]
    for model in report["models"]:
        back = _persona(workspace, "registry", "rollback", model["name"])
        assert back.returncode == 2 and "Traceback" not in back.stderr
        assert "was deleted" in back.stderr or "forgotten user" in back.stderr or "no earlier" in back.stderr
    # the first user's history went with the purge too (every earlier data version is collected)
    from components.lifecycle.audit import Needles, scan_dvc_remote, scan_tree

    assert not scan_tree(workspace / ".dvc" / "cache", Needles(user, []))
    assert not scan_dvc_remote(workspace, Needles(user, []))


def test_forget_from_another_checkout_cleans_this_workspaces_caches(workspace, monkeypatch):
    """The package imported from one checkout (here the project's), the command run in
    another: the caches cleaned and audited are those of the repository the command runs on."""
    from components.serving.service import PersonaService
    from tests.conftest import ROOT

    state = workspace / ".state"
    monkeypatch.setenv("PERSONA_CONTEXT_CACHE", str(state / "contexts"))
    monkeypatch.setenv("PERSONA_VECTOR_CACHE", str(state / "vectors"))
    user = _a_user(workspace)
    q = next(q for q in _questions(workspace) if q.user_id == user)
    PersonaService("attn-gs@6", workspace).answer(_rows([q]))           # cached in this workspace's state
    assert _files_holding(state / "contexts", user, [])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERSONA_", "PREFECT_HOME"))}
    done = subprocess.run([sys.executable, "-P", "-m", "flows.cli", "users", "forget", user], cwd=workspace,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["caches"]["contexts_removed"] > 0 and out["audit"]["clean"]
    assert not _files_holding(state / "contexts", user, [])


def test_purge_history_cleans_an_s3_remote(workspace, s3_server):  # noqa: F811
    from components.lifecycle.audit import Needles, scan_dvc_remote
    from components.storage.dvc import run_dvc
    from components.storage.s3 import S3Location, configure_dvc_remote

    configure_dvc_remote(workspace, S3Location("dvc-remote", "lamp", s3_server))
    run_dvc("push", repo=workspace)
    user = _a_user(workspace)
    assert scan_dvc_remote(workspace, Needles(user, []))                      # the user's data is on S3
    done = _persona(workspace, "users", "forget", user, "--purge-history")
    assert done.returncode == 0, done.stderr[-3000:]
    audit = json.loads(done.stdout)["audit"]
    assert audit["clean"] and not audit["history"]["dvc_remote"]
    assert not scan_dvc_remote(workspace, Needles(user, []))
