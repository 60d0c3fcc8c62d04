"""Bring real LaMP files into `data/raw/<task>/` from a directory or the official URLs.

Every file is checked by the streaming reader before it replaces anything, and lands
by atomic rename: a bad or interrupted download never touches existing data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from components.lamp.io import iter_questions, read_outputs
from components.lamp.tasks import TaskSpec, get_task

OFFICIAL_BASE_URL = "https://ciir.cs.umass.edu/downloads/LaMP"
_DIRS = {"LaMP-2": "LaMP_2/new", "LaMP-2N": "LaMP_2"}
SPLITS = ("train", "dev", "test")


def official_relative_paths(spec: TaskSpec, split: str, time_based: bool = False) -> tuple[str, str]:
    """Paths of a split's questions/outputs files below the official base URL."""
    folder = _DIRS.get(spec.name, spec.official)
    if time_based:
        folder = f"time/{folder}"
    return (f"{folder}/{split}/{split}_questions.json", f"{folder}/{split}/{split}_outputs.json")


def _candidates(spec: TaskSpec, split: str, time_based: bool) -> list[tuple[str, str]]:
    flat = (f"{split}_questions.json", f"{split}_outputs.json")
    nested = (f"{split}/{flat[0]}", f"{split}/{flat[1]}")
    return [flat, nested, official_relative_paths(spec, split, time_based)]


def _fetch(source: str, rel: str, dest: Path, timeout: float) -> bool:
    """Copy or download `source/rel` to `dest`; False if it does not exist there."""
    if source.startswith(("http://", "https://")):
        url = source.rstrip("/") + "/" + rel
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as fh:
                shutil.copyfileobj(resp, fh, length=1 << 20)
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise ConnectionError(f"downloading {url} failed: HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise ConnectionError(f"cannot reach {url}: {exc.reason}") from None
    path = Path(source) / rel
    if not path.is_file():
        return False
    shutil.copyfile(path, dest)
    return True


def ingest_task(task: str, source: str, out_dir: str | Path, time_based: bool = False,
                timeout: float = 60.0) -> dict:
    """Fetch every available split, check it, then move it into `out_dir` atomically."""
    spec = get_task(task)   # LaMP-6 too, once its Avocado text has been reconstructed locally
    if source == "official":
        source = OFFICIAL_BASE_URL
    if not source.startswith(("http://", "https://")) and not Path(source).is_dir():
        raise FileNotFoundError(f"source {source!r} is neither a directory nor an http(s) URL")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".ingest-") as tmp:
        for split in SPLITS:
            for q_rel, o_rel in _candidates(spec, split, time_based):
                q_tmp = Path(tmp) / f"{split}_questions.json"
                if not _fetch(source, q_rel, q_tmp, timeout):
                    continue
                counts[split] = sum(1 for _ in iter_questions(q_tmp, spec))
                staged.append((q_tmp, out_dir / q_tmp.name))
                o_tmp = Path(tmp) / f"{split}_outputs.json"
                if _fetch(source, o_rel, o_tmp, timeout):
                    read_outputs(o_tmp, spec)
                    staged.append((o_tmp, out_dir / o_tmp.name))
                break
        if not counts:
            raise FileNotFoundError(f"no {spec.name} questions files found at {source}")
        for src, dst in staged:       # everything checked: only now replace existing files
            os.replace(src, dst)
    return counts
