"""DVC from Python: commands serialised by a file lock (DVC refuses concurrent commands
in one workspace), and the data version a run read."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


class DvcError(RuntimeError):
    pass


def repo_lock(repo: str | Path):
    from components.storage.files import named_lock

    return named_lock(f"dvc-{Path(repo).resolve()}")


def dvc_executable() -> str:
    beside = Path(sys.executable).with_name("dvc")
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def run_dvc(*args: str, repo: str | Path = ".", check: bool = True) -> subprocess.CompletedProcess:
    """Run `dvc <args>` in `repo` with this interpreter's environment on PATH."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    cmd = [dvc_executable(), *args]
    log.info("running %s in %s", " ".join(cmd), repo)
    with repo_lock(repo):
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise DvcError(f"`dvc {' '.join(args)}` failed in {Path(repo).resolve()} "
                       f"(exit {proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    return proc


def _report_outputs() -> frozenset[str]:
    """Stage outputs that are reports about the data, not data: Great Expectations' Data Docs
    (`data_paths()["validation"]`) carry the time of the run, so validating the same data
    again gives other bytes."""
    from components.config import data_paths

    return frozenset({data_paths("data")["validation"].as_posix()})


def data_version(repo: str | Path = ".") -> str:
    """A short hash of the data a run read: the content hashes of every stage output in
    dvc.lock but the reports (`_report_outputs`). Only the data counts, not the params DVC
    also records there, so changing a method's settings in params.yaml does not make every
    cached model look stale, nor does validating the same data again."""
    import yaml

    lock = Path(repo) / "dvc.lock"
    if not lock.exists():
        return "unversioned"
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        reports = _report_outputs()
        outs = sorted((o["path"], o.get("md5", "")) for st in stages.values() for o in st.get("outs", [])
                      if o["path"] not in reports)
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        outs = None
    blob = repr(outs).encode() if outs is not None else lock.read_bytes()
    return hashlib.sha256(blob).hexdigest()[:12]


def default_remote(repo: str | Path = ".") -> str | None:
    out = run_dvc("remote", "default", repo=repo, check=False).stdout.strip()
    return out if out and "No default remote" not in out else None


def record_data_change(repo: str | Path = ".", push: bool = True) -> str:
    """After users were onboarded or forgotten in the data plane's outputs: validate the
    changed raw data again (the `validate` stage), record the files as the stages' outputs
    (`dvc commit`: a new dvc.lock, a new data version) and push them to the default remote.
    A workspace that is not a DVC repository keeps its files unversioned."""
    repo = Path(repo)
    if not (repo / ".dvc").is_dir() or not (repo / "dvc.lock").exists():
        log.info("%s is not a DVC pipeline workspace: the data change is not versioned", repo)
        return data_version(repo)
    run_dvc("commit", "-f", "acquire", repo=repo)
    run_dvc("repro", "-s", "validate", repo=repo)
    run_dvc("commit", "-f", "prepare", repo=repo)
    if push and default_remote(repo):
        run_dvc("push", repo=repo)
    return data_version(repo)
