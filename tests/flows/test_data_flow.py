"""The data plane for real: DVC stages in a fresh git repo, the Prefect `data` flow on an
ephemeral Prefect API, idempotent `dvc repro`, and a push/pull round trip from a clone."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.storage.dvc import run_dvc

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repo(path: Path, remote: Path, source: str = "synth") -> Path:
    path.mkdir()
    shutil.copy(ROOT / "dvc.yaml", path)
    (path / "data").mkdir()
    shutil.copy(ROOT / "data" / "forgotten.json", path / "data")
    shutil.copytree(ROOT / "components", path / "components", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    demo = params["profiles"]["demo"]
    demo["data"]["source"] = source
    demo["data"]["synth"]["users"] = 30
    demo["prepare"]["oppu_top_users"] = 5
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    _git(path, "init", "-q")
    _git(path, "config", "user.email", "t@example.com")
    _git(path, "config", "user.name", "t")
    run_dvc("init", "-q", repo=path)
    run_dvc("remote", "add", "-d", "store", str(remote), repo=path)
    return path


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_data_flow_repro_idempotent_and_push_pull_round_trip(tmp_path, prefect_api):
    from flows.data import data_flow

    repo = make_repo(tmp_path / "repo", tmp_path / "remote")
    result = data_flow(repo=str(repo), push=True)
    assert result["validation"]["success"]
    assert set(result["prepared"]) == {"LaMP-2", "LaMP-3"}
    assert (repo / "data/prepared/LaMP-2/time/test_questions.json").exists()
    assert (repo / "data/validation/LaMP-2/data_docs/train/index.html").exists()

    before = {p: p.stat().st_mtime_ns for p in (repo / "data").rglob("*") if p.is_file()}
    again = run_dvc("repro", repo=repo)
    assert "Data and pipelines are up to date" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (repo / "data").rglob("*") if p.is_file()} == before

    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "data")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert not (clone / "data/prepared").exists()
    run_dvc("pull", repo=clone)
    for sub in ("raw", "prepared", "validation"):
        assert _snapshot(clone / "data" / sub) == _snapshot(repo / "data" / sub), sub
    status = run_dvc("status", repo=clone)
    assert "up to date" in status.stdout


def test_failing_validation_stops_the_flow_before_prepare(tmp_path, synth_root, prefect_api):
    from flows.data import ValidationFailed, data_flow

    bad = tmp_path / "bad"
    for task in ("LaMP-2", "LaMP-3"):
        shutil.copytree(synth_root / task, bad / task)
    outputs = bad / "LaMP-2" / "dev_outputs.json"
    golds = json.loads(outputs.read_text())
    golds["golds"][0]["output"] = "cartoon"
    outputs.write_text(json.dumps(golds))
    repo = make_repo(tmp_path / "repo", tmp_path / "remote", source=str(bad))
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_in_set"):
        data_flow(repo=str(repo), push=False)
    assert not (repo / "data" / "prepared").exists()
    summary = json.loads((repo / "data" / "validation.json").read_text())
    assert not summary["tasks"]["LaMP-2"]["dev"]["success"]


def test_data_version_follows_the_data_not_the_params_nor_the_reports(tmp_path):
    from components.storage.dvc import data_version

    lock = {"schema": "2.0", "stages": {"prepare": {
        "cmd": "persona data prepare", "params": {"params.yaml": {"profiles": {"demo": {"tap_per": {"epochs": 1}}}}},
        "outs": [{"path": "data/prepared", "md5": "abc.dir", "size": 10, "nfiles": 2}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    before = data_version(tmp_path)
    lock["stages"]["prepare"]["params"]["params.yaml"]["profiles"]["demo"]["tap_per"]["epochs"] = 4
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert data_version(tmp_path) == before                 # a method setting changed, not the data
    lock["stages"]["validate"] = {"cmd": "persona data validate-all", "outs": [
        {"path": "data/validation", "md5": "docs-of-one-run.dir", "size": 7, "nfiles": 3}]}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert data_version(tmp_path) == before                 # Data Docs of a run: a report, not data
    lock["stages"]["validate"]["outs"][0]["md5"] = "docs-of-another-run.dir"
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert data_version(tmp_path) == before
    lock["stages"]["prepare"]["outs"][0]["md5"] = "def.dir"
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert data_version(tmp_path) != before
