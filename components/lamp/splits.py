"""`prepare`: from raw official files to the splits the methods need, and populations.

Output layout under `out_dir` (all official LaMP formats):

    user/{train,dev,test}_{questions,outputs}.json   user-based: disjoint users (as raw)
    time/{train,dev,test}_{questions,outputs}.json   time-based: per user, in date order, the
                                                     last question -> test, the one before -> dev
    oppu/user_others.json, user_top_{N}_history.json, user_top_{N}_history_label.json
                                                     OPPU-style: the N users with the longest
                                                     history; their last question is the query
    populations.json                                 user -> population, and how it was decided

Raw files are streamed twice (index, then routing), so real-scale files fit in memory.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from components.lamp.io import QuestionWriter, iter_questions, read_golds, write_oppu_users, write_outputs
from components.lamp.records import OppuQuery, OppuUser, Output, ProfileItem, Question
from components.lamp.tasks import TaskSpec, get_task
from components.storage.files import write_json_atomic

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class PopulationConfig:
    """How users are grouped into populations (each later gets its own TAP-PER/PPlug model).

    rule: "kmeans" clusters users by a hashed, tf-idf weighted bag of words of their profile text;
          "field:<name>" uses a question field (e.g. "field:segment");
          "single" puts everyone in one population.
    """

    rule: str = "kmeans"
    k: int = 3
    dim: int = 512
    iterations: int = 25
    seed: int = 0


@dataclass(frozen=True)
class PrepareConfig:
    oppu_top_users: int = 100
    populations: PopulationConfig = PopulationConfig()


def split_files(task: str, split: str, data_root: str | Path = "data") -> tuple[Path, Path]:
    kind, _, name = split.partition("/")
    if not name:
        raise ValueError(f"split must look like <kind>/<split>, e.g. time/test or user/dev; got {split!r}")
    base = Path(data_root) / "prepared" / get_task(task).name / kind
    q, o = base / f"{name}_questions.json", base / f"{name}_outputs.json"
    if not q.exists():
        raise FileNotFoundError(f"no split {split!r} for {task}: {q} is missing (run `dvc repro` first)")
    return q, o


def time_splits(by_user: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """The time-based split of each question: per user, in date order, the last question ->
    test, the one before -> dev, the rest -> train (users with fewer than 3: all train).
    `by_user`: user -> [(date, question id)]; sorted in place."""
    out: dict[str, str] = {}
    for qs in by_user.values():
        qs.sort()
        for rank, (_, qid) in enumerate(reversed(qs)):
            out[qid] = ("test" if rank == 0 else "dev" if rank == 1 else "train") if len(qs) >= 3 else "train"
    return out


def _raw_files(raw_dir: Path) -> list[tuple[str, Path, Path | None]]:
    found = []
    for split in SPLITS:
        q = raw_dir / f"{split}_questions.json"
        o = raw_dir / f"{split}_outputs.json"
        if q.exists():
            found.append((split, q, o if o.exists() else None))
    if not found:
        raise FileNotFoundError(f"no *_questions.json files in {raw_dir}")
    return found


def _hash_vector(text: str, dim: int, vec) -> None:
    for word in text.lower().split():
        vec[zlib.crc32(word.encode("utf-8")) % dim] += 1.0


def kmeans(features, k: int, iterations: int, seed: int, restarts: int = 8):
    """Spherical k-means (k-means++ seeding, best of `restarts` by within-cluster
    similarity) on L2-normalised rows; deterministic by seed."""
    import numpy as np

    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    best, best_score = np.zeros(len(x), dtype=int), -np.inf
    for _ in range(restarts):
        centers = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d = np.clip(1 - np.max(x @ np.stack(centers).T, axis=1), 0, None)
            centers.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
        centers = np.stack(centers)
        for _ in range(iterations):
            assign = np.argmax(x @ centers.T, axis=1)
            new = np.stack([x[assign == c].mean(0) if (assign == c).any() else centers[c] for c in range(k)])
            new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
            if np.allclose(new, centers):
                break
            centers = new
        score = float(np.sum(np.max(x @ centers.T, axis=1)))
        if score > best_score:
            best, best_score = assign, score
    return best


def add_profile_text(texts: list[str], spec: TaskSpec, profile: list[ProfileItem]) -> None:
    """What clustering reads of a user: item texts of their questions' recent history (capped)."""
    if len(texts) < 200:
        texts += [spec.item_text(p.fields) for p in profile[-50:]]


def population_sizes(populations: dict[str, str]) -> dict[str, int]:
    """Users per population, by population name (the `sizes` of populations.json)."""
    sizes: dict[str, int] = defaultdict(int)
    for p in populations.values():
        sizes[p] += 1
    return dict(sorted(sizes.items()))


def _tfidf_features(user_text: dict[str, str], users: list[str], dim: int):
    """Hashed bag of words, log-scaled and idf-weighted (words every user writes say nothing
    about the cohort); returns (features [n, dim], idf [dim])."""
    import numpy as np

    feats = np.zeros((len(users), dim))
    for i, u in enumerate(users):
        _hash_vector(user_text[u], dim, feats[i])
    df = (feats > 0).sum(0)
    idf = np.log((1 + len(users)) / (1 + df))
    return np.log1p(feats) * idf, idf


def assign_populations(user_text: dict[str, str], user_field: dict[str, str],
                       cfg: PopulationConfig) -> dict[str, str]:
    users = sorted(user_text)
    if cfg.rule == "single" or not users:
        return {u: "p0" for u in users}
    if cfg.rule.startswith("field:"):
        name = cfg.rule.split(":", 1)[1]
        return {u: f"{name}-{user_field.get(u, 'unknown')}" for u in users}
    if cfg.rule != "kmeans":
        raise ValueError(f"unknown population rule {cfg.rule!r}; use kmeans, field:<name> or single")
    feats, _ = _tfidf_features(user_text, users, cfg.dim)
    labels = kmeans(feats, cfg.k, cfg.iterations, cfg.seed)
    return {u: f"p{int(c)}" for u, c in zip(users, labels)}


class PopulationIndex:
    """Places a user that `prepare` never saw (an onboarded user, or a guest with a profile
    at serving time) in the population whose mean feature vector is nearest, with the same
    features k-means clustered. Rules other than kmeans: "single" -> its one population;
    "field:<name>" -> the field's population when the user has one, else the largest."""

    def __init__(self, user_text: dict[str, str], populations: dict[str, str], cfg: PopulationConfig):
        import numpy as np

        self.cfg, self.populations = cfg, populations
        sizes = population_sizes(populations)
        self.largest = max(sorted(sizes), key=lambda p: sizes[p]) if sizes else "p0"
        self.names: list[str] = []
        if cfg.rule == "kmeans" and populations:
            users = sorted(u for u in populations if u in user_text)
            feats, self.idf = _tfidf_features(user_text, users, cfg.dim)
            x = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
            self.names = sorted(set(populations[u] for u in users))
            centers = np.stack([x[[populations[u] == n for u in users]].mean(0) for n in self.names])
            self.centers = centers / np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-12)

    def assign(self, text: str, field_value: str | None = None) -> str:
        import numpy as np

        if self.cfg.rule.startswith("field:"):
            name = f"{self.cfg.rule.split(':', 1)[1]}-{field_value}"
            return name if field_value is not None and name in set(self.populations.values()) else self.largest
        if not self.names:
            return self.largest
        vec = np.zeros(self.cfg.dim)
        _hash_vector(text, self.cfg.dim, vec)
        vec = np.log1p(vec) * self.idf
        return self.names[int(np.argmax(self.centers @ vec))]


def prepare_task(task: str | TaskSpec, raw_dir: str | Path, out_dir: str | Path, cfg: PrepareConfig) -> dict:
    spec = get_task(task) if isinstance(task, str) else task
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    files = _raw_files(raw_dir)
    golds: dict[str, str] = {}
    for _, _, outputs in files:
        if outputs is not None:
            golds.update(read_golds(outputs, spec))

    # Pass 1: index users (questions in date order, history length, text for clustering).
    by_user: dict[str, list[tuple[str, str]]] = defaultdict(list)
    history: dict[str, int] = defaultdict(int)
    text: dict[str, list[str]] = defaultdict(list)
    field: dict[str, str] = {}
    dated = True
    rule_field = cfg.populations.rule.split(":", 1)[1] if cfg.populations.rule.startswith("field:") else None
    for _, qpath, _ in files:
        for q in iter_questions(qpath, spec):
            user = q.user_key
            dated &= q.date is not None
            by_user[user].append((q.date or "", q.id))
            history[user] = max(history[user], len(q.profile))
            add_profile_text(text[user], spec, q.profile)
            if rule_field is not None:
                field[user] = str(q.extra.get(rule_field, q.user_id if rule_field == "user_id" else "unknown"))
    time_split = time_splits(by_user)
    top = set(sorted(history, key=lambda u: (-history[u], u))[: cfg.oppu_top_users])
    last_qid = {u: qs[-1][1] for u, qs in by_user.items()}

    # Pass 2: route every question to its outputs.
    outs: dict[tuple[str, str], list[Output]] = defaultdict(list)
    oppu_top: list[OppuUser] = []
    oppu_others: dict[str, OppuUser] = {}
    splits_out = {("user", s) for s, _, _ in files} | ({("time", s) for s in SPLITS} if dated else set())
    writers = {key: QuestionWriter(out_dir / key[0] / f"{key[1]}_questions.json") for key in sorted(splits_out)}
    for w in writers.values():
        w.__enter__()
    try:
        for split, qpath, _ in files:
            for q in iter_questions(qpath, spec):
                gold = golds.get(q.id)
                targets = [("user", split)] + ([("time", time_split[q.id])] if dated else [])
                for key in targets:
                    writers[key].write(q)
                    if gold is not None:
                        outs[key].append(Output(q.id, gold))
                _route_oppu(q, gold, q.user_key in top, last_qid, oppu_top, oppu_others)
    except BaseException as exc:
        for w in writers.values():
            w.__exit__(type(exc), exc, exc.__traceback__)
        raise
    for w in writers.values():
        w.__exit__(None, None, None)
    for key in writers:
        if outs[key]:
            write_outputs(out_dir / key[0] / f"{key[1]}_outputs.json", spec, outs[key])

    n = len(top)
    oppu_dir = out_dir / "oppu"
    write_oppu_users(oppu_dir / "user_others.json", oppu_others.values(), with_gold=True)
    write_oppu_users(oppu_dir / f"user_top_{n}_history.json", oppu_top, with_gold=False)
    write_outputs(oppu_dir / f"user_top_{n}_history_label.json", spec,
                  [Output(q.id, q.gold) for u in oppu_top for q in u.queries if q.gold is not None])

    populations = assign_populations({u: " ".join(t) for u, t in text.items()}, field, cfg.populations)
    sizes = population_sizes(populations)
    write_json_atomic(out_dir / "populations.json", {
        "task": spec.name, "rule": cfg.populations.rule, "sizes": sizes, "populations": populations})
    return {"users": len(by_user), "time_based": dated, "oppu_top_users": n, "populations": sizes,
            "splits": {f"{k[0]}/{k[1]}": w.count for k, w in writers.items()}}


def _route_oppu(q: Question, gold: str | None, is_top: bool, last_qid: dict[str, str],
                top: list[OppuUser], others: dict[str, OppuUser]) -> None:
    user = q.user_key
    if is_top:
        if q.id == last_qid[user]:          # the user's history is what they had before this query
            top.append(OppuUser(user, q.profile, [OppuQuery(q.id, q.input, gold)]))
        return
    entry = others.get(user)
    if entry is None:
        entry = others[user] = OppuUser(user, list(q.profile), [])
    elif len(q.profile) > len(entry.profile):
        entry.profile = list(q.profile)
    entry.queries.append(OppuQuery(q.id, q.input, gold))
