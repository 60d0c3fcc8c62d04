import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the tests' Prefect home and caches, apart from the checkout's own runs; every test
# repository keeps the rest of its state (MLflow, checkpoints) in its own .state/
TESTS_STATE = ROOT / ".state" / "tests"
os.environ.setdefault("PREFECT_HOME", str(TESTS_STATE / "prefect"))
os.environ.setdefault("PERSONA_VECTOR_CACHE", str(TESTS_STATE / "vectors"))
os.environ.setdefault("PERSONA_CONTEXT_CACHE", str(TESTS_STATE / "contexts"))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from components.lamp.synthetic import SynthConfig, generate_task  # noqa: E402


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """Small synthetic files for every synthetic task (generated once per session)."""
    root = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(users=60, queries_per_user=3, profile_min=8, profile_max=20)
    for task in ("LaMP-1", "LaMP-2", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-7"):
        generate_task(task, cfg, root / task)
    return root


@pytest.fixture
def persona_cmd():
    return [sys.executable, "-m", "flows.cli"]


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API (SQLite) for every flow test of the session."""
    import flows  # noqa: F401  (sets PREFECT_HOME and friends before prefect is imported)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session", params=["decoder", "seq2seq"])
def tiny(request, tmp_path_factory, synth_root):
    """A tiny backbone of each architecture whose vocabulary covers the synthetic data."""
    from components.lamp.io import read_questions
    from tests.tiny_models import tiny_backbone

    words = []
    for task in ("LaMP-2", "LaMP-3"):
        for q in read_questions(synth_root / task / "train_questions.json")[:40]:
            words.append(q.input)
            words += [v for p in q.profile for v in p.fields.values()]
    return tiny_backbone(request.param, words, tmp_path_factory.mktemp(request.param))
