"""Rewriting the current data files when users come and go, all or nothing.

Every changed file is first written in full beside the original (`DataTransaction.stage`);
only when every file is staged are they renamed over the originals. A failure while
staging leaves the data exactly as it was.

The files of a task directory (raw or prepared) and how a user owns a record in them:
* `*_questions.json`, OPPU `user_*.json`: a JSON array of records with `user_id` (or, in
  LaMP's user-based files without one, the user key `q<id>`);
* `*_outputs.json`: `{"task", "golds": [{id, output}]}`, owned through the question id;
* `relevance.json` (synthetic data's ground truth): keyed by question id;
* `populations.json`: `{"populations": {user: population}, "sizes": ...}`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from components.lamp.io import iter_json_array
from components.lamp.splits import population_sizes


class DataTransaction:
    def __init__(self):
        self.staged: list[tuple[Path, Path]] = []

    def stage(self, path: Path, write: Callable[[object], None]) -> None:
        """Write the new content of `path` (by `write(fh)`) to a temporary file beside it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".staged", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.staged.append((Path(tmp), path))

    def stage_json(self, path: Path, obj: object) -> None:
        self.stage(path, lambda fh: (json.dump(obj, fh, ensure_ascii=False, indent=1), fh.write("\n")))

    def stage_array(self, path: Path, records: Iterable[object]) -> None:
        def write(fh):
            fh.write("[")
            for i, rec in enumerate(records):
                fh.write(",\n" if i else "\n")
                fh.write(json.dumps(rec, ensure_ascii=False))
            fh.write("\n]\n")
        self.stage(path, write)

    def commit(self) -> list[Path]:
        for tmp, final in self.staged:
            os.replace(tmp, final)
        done = [final for _, final in self.staged]
        self.staged = []
        return done

    def abort(self) -> None:
        for tmp, _ in self.staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.staged = []

    def __enter__(self) -> "DataTransaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def record_user(rec: dict) -> str | None:
    if "user_id" in rec:
        return str(rec["user_id"])
    return f"q{rec['id']}" if "id" in rec and "input" in rec else None


@dataclass
class Removal:
    """What was taken out for the users: question ids, files changed, and the users' texts
    (inputs and history item fields) that no remaining record also holds."""

    question_ids: set[str] = field(default_factory=set)
    files: list[str] = field(default_factory=list)
    texts: set[str] = field(default_factory=set)
    records: int = 0


def _record_texts(rec: dict) -> Iterable[str]:
    if isinstance(rec.get("input"), str):
        yield rec["input"]
    for item in rec.get("profile") or []:
        if isinstance(item, dict):
            for k, v in item.items():
                if k not in ("id", "date") and isinstance(v, str) and len(v.split()) >= 3:
                    yield v            # free text (a label like "comedy" is not the user's)
    for q in rec.get("query") or []:
        if isinstance(q, dict) and isinstance(q.get("input"), str):
            yield q["input"]


def remove_users(dirs: Iterable[Path], users, tx: DataTransaction) -> Removal:
    """Stage every file of `dirs` without the records of `users` (anything with `in`)."""
    out = Removal()
    arrays, others = [], []
    for d in dirs:
        for path in sorted(Path(d).rglob("*.json")):
            with open(path, "rb") as fh:
                first = fh.read(64).lstrip()[:1]
            (arrays if first == b"[" else others).append(path)
    mine: set[str] = set()
    theirs_hit: set[str] = set()
    holding: list[Path] = []
    for path in arrays:                         # pass 1: the users' records, ids and texts
        for rec in iter_json_array(path):
            if isinstance(rec, dict) and record_user(rec) in users:
                if "id" in rec:
                    out.question_ids.add(str(rec["id"]))
                out.question_ids.update(str(q["id"]) for q in rec.get("query") or [] if isinstance(q, dict))
                mine.update(_record_texts(rec))
                if not holding or holding[-1] != path:
                    holding.append(path)
    for path in holding:                        # pass 2: rewrite; note texts other users share

        def kept(path=path):
            for rec in iter_json_array(path):
                if isinstance(rec, dict) and record_user(rec) in users:
                    out.records += 1
                    continue
                if isinstance(rec, dict):
                    theirs_hit.update(t for t in _record_texts(rec) if t in mine)
                yield rec
        tx.stage_array(path, kept())
        out.files.append(str(path))
    for path in others:
        obj = json.loads(path.read_text(encoding="utf-8"))
        new = _without(obj, users, out.question_ids)
        if new is not None:
            tx.stage_json(path, new)
            out.files.append(str(path))
    out.texts = mine - theirs_hit
    return out


def _without(obj: object, users: set[str], qids: set[str]) -> object | None:
    """The object without the users' entries, or None if it holds none."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("golds"), list):
        golds = [g for g in obj["golds"] if str(g.get("id")) not in qids]
        return {**obj, "golds": golds} if len(golds) != len(obj["golds"]) else None
    if isinstance(obj.get("populations"), dict):
        pops = {u: p for u, p in obj["populations"].items() if u not in users}
        if len(pops) == len(obj["populations"]):
            return None
        return {**obj, "populations": pops, "sizes": population_sizes(pops)}
    if qids & set(obj):
        return {k: v for k, v in obj.items() if k not in qids}
    return None


# --- tombstones: users forgotten for good --------------------------------------------------

def user_hash(user: str) -> str:
    return hashlib.sha256(f"persona-forgotten:{user}".encode("utf-8")).hexdigest()


class ForgottenUsers:
    """`data/forgotten.json`: salted SHA-256 hashes of forgotten user ids (never the ids).
    `acquire` drops their records whenever it re-synthesizes or re-ingests the data, so a
    forgotten user does not come back with the next full data refresh. Git-tracked."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.hashes: set[str] = set(json.loads(self.path.read_text())["sha256"]) if self.path.exists() else set()

    def __contains__(self, user: object) -> bool:
        return isinstance(user, str) and user_hash(user) in self.hashes

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def stage_add(self, users: Iterable[str], tx: DataTransaction) -> None:
        tx.stage_json(self.path, {"sha256": sorted(self.hashes | {user_hash(u) for u in users})})
