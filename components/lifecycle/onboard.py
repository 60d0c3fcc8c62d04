"""`persona users add --task T FILE`: take in new users' histories and make them servable.

1. The file (LaMP questions format, every record with a `user_id`; optionally an outputs
   file) passes the same checks as the data plane: the format and the task's Great
   Expectations suite. Users already in the data, or question ids already used, are refused.
2. Each new user is placed in the nearest population (`PopulationIndex`), and the records
   join the current data: raw `train` (so the next full retrain sees them), the prepared
   `user/train` and time-based splits, `populations.json`; all files staged, then swapped
   in, then a new DVC data version.
3. Servable at once: TAP-PER fits each new user's P_u row online with every shared part
   frozen (`fit_user`) and registers the population's new version as champion (the other
   rows are copied bit for bit); PPlug needs no training (the user's item vectors are
   encoded into the cache now); Attn-GS compresses the new users' latest questions now.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

from components.lamp.records import DataError

log = logging.getLogger(__name__)


class OnboardingError(ValueError):
    pass


def read_new_users(task: str, questions_file: str | Path, outputs_file: str | Path | None, repo: Path):
    """Validated records of users that are not in the data yet: (questions by user, golds)."""
    from components.lamp.io import read_golds, read_questions
    from components.lamp.tasks import get_task
    from components.lamp.users import UserData
    from components.validation.runner import validate_files

    spec = get_task(task)
    report = validate_files(spec, questions_file, outputs_file)
    if not report.success:
        raise OnboardingError(f"{questions_file} failed validation; nothing changed:\n{report.summary()}")
    questions = read_questions(questions_file, spec)
    golds = read_golds(outputs_file, spec) if outputs_file else {}
    data = UserData.load(spec.name, repo / "data")
    used_ids = {q.id for qs in data.questions.values() for q in qs}
    by_user: dict[str, list] = defaultdict(list)
    for q in questions:
        if q.user_id is None:
            raise DataError(questions_file, "missing: every record of a new user needs one", q.id, "user_id")
        if q.user_id in data:
            raise DataError(questions_file, f"user {q.user_id!r} is already in the data of {spec.name}", q.id,
                            "user_id")
        if q.id in used_ids:
            raise DataError(questions_file, f"question id {q.id!r} is already used in {spec.name}", q.id, "id")
        by_user[q.user_id].append(q)
    if not by_user:
        raise OnboardingError(f"{questions_file} holds no records; nothing changed")
    return spec, data, dict(by_user), golds


def add_records(spec, data, by_user: dict, golds: dict, populations: dict[str, str], repo: Path) -> list[str]:
    """Stage the new users' records into raw and prepared files and swap them in."""
    from components.lamp.io import iter_json_array
    from components.lamp.splits import population_sizes, time_splits
    from components.lifecycle.datafiles import DataTransaction

    raw, prepared = repo / "data" / "raw" / spec.name, repo / "data" / "prepared" / spec.name
    new_qs = [q for qs in by_user.values() for q in qs]
    split = time_splits({u: [(q.date or "", q.id) for q in qs] for u, qs in by_user.items()})
    targets = {raw / "train": new_qs, prepared / "user" / "train": new_qs}
    if (prepared / "time").exists():
        for name in ("train", "dev", "test"):
            targets[prepared / "time" / name] = [q for q in new_qs if split[q.id] == name]
    changed = []
    with DataTransaction() as tx:
        for base, qs in targets.items():
            if not qs:
                continue
            qfile, ofile = base.with_name(f"{base.name}_questions.json"), base.with_name(f"{base.name}_outputs.json")
            existing = iter_json_array(qfile) if qfile.exists() else iter(())
            tx.stage_array(qfile, itertools.chain(existing, (q.to_json() for q in qs)))
            changed.append(str(qfile))
            if golds and ofile.exists():
                outs = json.loads(ofile.read_text(encoding="utf-8"))
                outs["golds"] += [{"id": q.id, "output": golds[q.id]} for q in qs if q.id in golds]
                tx.stage_json(ofile, outs)
                changed.append(str(ofile))
        pops_file = prepared / "populations.json"
        pops = json.loads(pops_file.read_text())
        pops["populations"].update(populations)
        pops["sizes"] = population_sizes(pops["populations"])
        tx.stage_json(pops_file, pops)
        changed.append(str(pops_file))
    return changed


def onboard_users(task: str, questions_file: str | Path, outputs_file: str | Path | None = None,
                  repo: str | Path = ".", profile_name: str | None = None, epochs: int = 3, lr: float = 1e-2) -> dict:
    from components.config import load_profile
    from components.storage.dvc import record_data_change
    from components.tracking import mlflow_tracking

    repo = Path(repo).resolve()
    profile = load_profile(profile_name, repo / "params.yaml")
    spec, data, by_user, golds = read_new_users(task, questions_file, outputs_file, repo)
    if spec.name not in profile.tasks:
        raise OnboardingError(f"{spec.name} is not a task of profile {profile.name!r} ({', '.join(profile.tasks)})")
    populations = {u: data.population_of(u, _latest(qs).profile) for u, qs in by_user.items()}
    files = add_records(spec, data, by_user, golds, populations, repo)
    version = record_data_change(repo)
    mlflow_tracking.configure(repo)
    methods = set(profile.evaluation.methods)
    servable = {}
    if "tap-per" in methods:
        servable["tap-per"] = onboard_tap_per(spec, by_user, populations, repo, epochs, lr)
    if "pplug" in methods:
        servable["pplug"] = onboard_pplug(spec, by_user, profile)
    attn = sorted(m for m in methods if m.startswith("attn-gs@"))
    if attn:
        servable["attn-gs"] = onboard_attn_gs(spec, by_user, attn, profile, repo)
    return {"task": spec.name, "users": sorted(by_user), "populations": populations, "data_version": version,
            "files_changed": len(files), "servable": servable}


def _latest(qs):
    return max(qs, key=lambda q: (q.date or "", len(q.profile)))


def onboard_tap_per(spec, by_user: dict, populations: dict, repo: Path, epochs: int, lr: float) -> dict:
    """Fit each new user's P_u row in their population's serving model; register it."""
    from components.lamp.history import history_examples
    from components.lifecycle.models import derive_version
    from components.methods.tap_per.method import TapPerMethod, fit_user
    from components.tracking.mlflow_tracking import resolve_backbone

    backbone, _ = resolve_backbone(spec.name, None, repo)
    per_user, versions = {}, {}
    for pop in sorted(set(populations.values())):
        users = sorted(u for u, p in populations.items() if p == pop)

        def fit(directory: Path, users=users) -> list[str]:
            method = TapPerMethod.load(directory, copy.deepcopy(backbone))
            for user in users:
                examples = list(history_examples(spec, by_user[user]))
                info = fit_user(method, spec, user, examples, epochs=epochs, lr=lr)
                per_user[user] = {"seconds": info["seconds"], "examples": info["examples"],
                                  "final_loss": info["final_loss"], "population": pop}
            method.save(directory)
            return users

        reg = derive_version("tap-per", f"tap-per-{spec.name}-{pop}", fit, f"onboard {len(users)} user(s)", repo)
        if reg:
            versions[pop] = f"{reg['name']}/{reg['version']}"
    seconds = [u["seconds"] for u in per_user.values()]
    return {"users": per_user, "versions": versions, "seconds_per_user": sum(seconds) / max(1, len(seconds))}


def onboard_pplug(spec, by_user: dict, profile) -> dict:
    """No training: encode the new users' history items into the vector cache now."""
    from components.methods.pplug.method import encoded_texts, recent
    from components.retrieval.cache import VectorCache, default_cache_root

    t0 = time.perf_counter()
    encoder = profile.pplug.history_encoder()            # the encoder PPlug's populations train with
    cache = VectorCache(default_cache_root(), encoder.fingerprint)
    cfg = profile.pplug
    texts = encoded_texts(spec, [p for qs in by_user.values() for p in recent(_latest(qs).profile, cfg.max_history)],
                          cfg)
    cache.encode(texts, encoder)
    seconds = time.perf_counter() - t0
    return {"items_encoded": cache.misses, "seconds_per_user": seconds / len(by_user)}


def onboard_attn_gs(spec, by_user: dict, names: list[str], profile, repo: Path) -> dict:
    """Compress each new user's latest question with every configured Attn-GS budget."""
    from components.methods.attn_gs.registry import load_method
    from components.tracking.mlflow_tracking import resolve_backbone

    t0 = time.perf_counter()
    backbone, _ = resolve_backbone(spec.name, None, repo)
    latest = [_latest(qs) for qs in by_user.values()]
    done = {}
    for name in names:
        try:
            method = load_method(name, spec.name, profile, repo)
        except FileNotFoundError as exc:
            done[name] = f"skipped: {exc}"
            continue
        method.contexts(spec, latest, backbone)
        done[name] = f"{len(latest)} profile(s) compressed"
    return {"compressed": done, "seconds_per_user": (time.perf_counter() - t0) / len(by_user)}
