import functools
import http.server
import shutil
import threading

import pytest

from components.lamp.ingest import ingest_task, official_relative_paths
from components.lamp.records import DataError
from components.lamp.tasks import get_task


@pytest.fixture
def official_server(tmp_path, synth_root):
    """A local HTTP server in the official LaMP URL layout, serving fixture files."""
    site = tmp_path / "site"
    spec = get_task("LaMP-2")
    for split in ("train", "dev"):
        q_rel, o_rel = official_relative_paths(spec, split)
        (site / q_rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synth_root / "LaMP-2" / f"{split}_questions.json", site / q_rel)
        shutil.copy(synth_root / "LaMP-2" / f"{split}_outputs.json", site / o_rel)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", site
    server.shutdown()


def test_ingest_from_url_in_official_layout(tmp_path, official_server):
    url, site = official_server
    assert official_relative_paths(get_task("LaMP-2"), "dev")[0] == "LaMP_2/new/dev/dev_questions.json"
    counts = ingest_task("LaMP-2", url, tmp_path / "raw")
    assert set(counts) == {"train", "dev"}
    assert (tmp_path / "raw" / "dev_outputs.json").read_bytes() == \
        (site / "LaMP_2/new/dev/dev_outputs.json").read_bytes()


def test_ingest_from_directory(tmp_path, synth_root):
    counts = ingest_task("LaMP-3", str(synth_root / "LaMP-3"), tmp_path / "raw")
    assert set(counts) == {"train", "dev", "test"}


def test_bad_download_leaves_existing_data_untouched(tmp_path, official_server):
    url, site = official_server
    ingest_task("LaMP-2", url, tmp_path / "raw")
    before = {p.name: p.read_bytes() for p in (tmp_path / "raw").iterdir()}
    (site / "LaMP_2/new/dev/dev_questions.json").write_text('[{"id": "1", "input": "x", "profile": [')
    with pytest.raises(DataError, match="dev_questions.json"):
        ingest_task("LaMP-2", url, tmp_path / "raw")
    assert {p.name: p.read_bytes() for p in (tmp_path / "raw").iterdir()} == before


def test_unreachable_url_is_a_clear_error(tmp_path):
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        ingest_task("LaMP-2", "http://127.0.0.1:9", tmp_path / "raw", timeout=2)
