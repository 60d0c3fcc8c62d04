"""`persona users forget USER_ID`: remove a user from the current data, the models that hold
per-user state, and the caches; then audit what remains.

1. data: the user's records leave every raw and prepared file of every task (all files
   staged first, then swapped in), the user's hash joins `data/forgotten.json`, and the
   change becomes a new DVC data version (validated, committed, pushed to the default remote);
2. models: every TAP-PER population model whose serving version has a P_u row for the user
   gets a new version without it, which becomes the champion (other rows are unchanged);
3. caches: the user's item vectors (PPlug, dense retrieval) and compressed contexts
   (Attn-GS); a running server reloads on the new data version;
4. `--purge-history`: earlier model versions holding the user are deleted with their runs
   and artifacts (`mlflow gc`), and `dvc gc --workspace --cloud` deletes every data version
   but the current one from the DVC cache and the remote;
5. the audit (`audit.py`) scans current data, caches, the latest model versions and (always
   reported, required clean only with `--purge-history`) the history.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from components.lamp.io import check_user_id
from components.lamp.records import DataError

log = logging.getLogger(__name__)


class UnknownUserError(LookupError):
    pass


class InvalidUserIdError(ValueError):
    pass


def valid_user_id(user: str) -> str:
    try:
        return check_user_id("command line", "-", user)
    except DataError as exc:
        raise InvalidUserIdError(f"{user!r} is not a valid user id: {str(exc).split(': ', 1)[-1]}") from None


def vector_texts(spec, questions) -> set[str]:
    """Every string a vector cache may hold for these questions: items as dense retrieval and
    PPlug's history encoder read them, and the queries."""
    from components.methods.pplug.method import history_text

    out = set()
    for q in questions:
        out.add(spec.query_text(q.input))
        for p in q.profile:
            out |= {spec.item_text(p.fields), history_text(spec, p, True), history_text(spec, p, False)}
    return out


def forget_user(user: str, repo: str | Path = ".", profile_name: str | None = None,
                purge_history: bool = False) -> dict:
    from components.config import load_profile
    from components.lamp.tasks import get_task
    from components.lamp.users import UserData
    from components.lifecycle.audit import audit_user
    from components.lifecycle.datafiles import DataTransaction, ForgottenUsers, remove_users
    from components.storage.dvc import record_data_change

    start = time.perf_counter()
    user = valid_user_id(user)
    repo = Path(repo).resolve()
    profile = load_profile(profile_name, repo / "params.yaml")
    data = repo / "data"
    held = {t: UserData.load(t, data) for t in profile.tasks}
    tasks = [t for t, d in held.items() if user in d]
    if not tasks:
        raise UnknownUserError(f"user {user!r} is not in the current data of {', '.join(profile.tasks)} "
                               f"({data / 'prepared'}); nothing changed")
    questions = {t: held[t].questions[user] for t in tasks}

    # 1. data: all files staged, then swapped in; then a new DVC version
    with DataTransaction() as tx:
        removal = remove_users([p for t in tasks for p in (data / "raw" / t, data / "prepared" / t)], {user}, tx)
        ForgottenUsers(data / "forgotten.json").stage_add([user], tx)
    log.info("removed %d records of %s from %d files", removal.records, user, len(removal.files))
    version = record_data_change(repo)

    # 2. models with per-user state, 3. caches
    models = forget_in_models(user, tasks, repo)
    strings = set().union(*(vector_texts(get_task(t), questions[t]) for t in tasks))
    caches = forget_in_caches(user, [q for t in tasks for q in questions[t]], strings, repo)

    # 4. history
    purged: dict = {}
    if purge_history:
        purged = purge_user_history(user, tasks, repo, keep={m["name"]: m["version"] for m in models})

    # 5. audit
    secret = removal.texts | {s for s in strings if _holds_any(s, removal.texts)}
    report = audit_user(user, removal.texts, tasks, repo, vector_strings=secret, require_history=purge_history)
    return {"user": user, "tasks": tasks, "data_version": version, "records_removed": removal.records,
            "files_changed": len(removal.files), "models": models, "caches": caches, "purged": purged,
            "audit": report, "seconds": time.perf_counter() - start}


def _holds_any(s: str, texts: set[str]) -> bool:
    """Whether a cached string (an item as an encoder reads it) contains one of the texts
    that only this user had: its vector is then the user's."""
    return any(t in s for t in texts)


def forget_in_models(user: str, tasks: list[str], repo: Path) -> list[dict]:
    """A new champion without the user for every population model that served them; every
    version that still holds the user gets a tombstone, so no promotion or rollback brings
    them back into serving."""
    from components.lifecycle.models import derive_version, population_models, users_in_dir, versions_holding
    from components.methods.tap_per.method import remove_users_from_dir
    from components.tracking import mlflow_tracking
    from components.tracking.registry import tombstone

    mlflow_tracking.configure(repo)
    out = []
    for task in tasks:
        for name in population_models("tap-per", task):
            reg = derive_version("tap-per", name, lambda d: remove_users_from_dir(d, {user}), "forget one user",
                                 repo)
            if reg:
                out.append({"name": name, "version": reg["version"], "derived_from": reg["derived_from"]})
            for version in versions_holding(name, lambda d: user in users_in_dir(d), skip=set(), repo=repo):
                tombstone(name, version, "it holds data of a forgotten user (persona users forget); it may "
                                         "not serve again")
    return out


def forget_in_caches(user: str, questions: list, strings: set[str], repo: str | Path = ".") -> dict:
    """Drop the vectors of `strings` (the user's items and queries, `vector_texts`) from every
    encoder's cache, and the compressed contexts of the user and of their `questions` from
    every marker/compressor/budget namespace, in the repository's caches (`cache_dir`)."""
    from components.methods.attn_gs.method import ContextCache, question_key
    from components.retrieval.cache import VectorCache
    from components.storage.state import cache_dir

    keys = {question_key(q) for q in questions}
    vectors = contexts = 0
    root = cache_dir("vectors", repo)
    if root.exists():
        for ns in sorted(p.name for p in root.iterdir() if p.is_dir()):
            vectors += VectorCache(root, ns).remove(strings)
    root = cache_dir("contexts", repo)
    if root.exists():
        for ns in sorted(p.name for p in root.iterdir() if p.is_dir()):
            contexts += ContextCache(root, ns).remove({user}, keys)
    return {"vectors_removed": vectors, "contexts_removed": contexts}


def purge_user_history(user: str, tasks: list[str], repo: Path, keep: dict[str, str]) -> dict:
    from components.lifecycle.models import population_models, purge_versions, users_in_dir, versions_holding
    from components.storage.dvc import default_remote, run_dvc

    deleted = []
    for task in tasks:
        for name in population_models("tap-per", task):
            old = versions_holding(name, lambda d: user in users_in_dir(d), skip={keep.get(name, "")}, repo=repo)
            if old:
                deleted += purge_versions(name, old)
    gc = "not a DVC workspace"
    if (repo / ".dvc").is_dir():
        args = ["gc", "--workspace", "--force"] + (["--cloud"] if default_remote(repo) else [])
        gc = "; ".join(line.strip() for line in run_dvc(*args, repo=repo).stdout.splitlines() if line.strip()) \
            or "nothing to collect"
    return {"model_versions_deleted": deleted, "dvc_gc": gc}
