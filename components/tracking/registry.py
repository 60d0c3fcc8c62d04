"""The model registry's lifecycle: `challenger` and `champion` aliases and the promotion rule.

* Every newly registered version gets the alias `challenger` (`mark_challenger`).
* Its quality on the fixed validation set is recorded on the version (`record_validation`:
  tag `validation_metrics`, JSON, plus the task it answers).
* `promote` moves `champion` to the challenger only if it is at least as good as the current
  champion on the task's primary metric, in the task's direction (MAE: lower is better).
  The decision and the evidence (both metric sets) are written on the challenger's version
  as tags `promotion_decision` and `promotion_evidence`; the champion's history is kept on
  the registered model (tag `champion_history`) so `rollback` can restore the previous one.
* Promotions of one model are serialised by an inter-process lock, so two racing promotions
  end with one consistent alias: the second one compares against the first one's result.
* A version is registered as one unit (`registering`): it is either complete (tagged, marked
  challenger, tag `registered`) or, if the process died half-way (`kill -9`), deleted with
  its logged model by the next registration of the same model.
* A version that still holds a forgotten user's data carries a `tombstone` tag
  (`persona users forget`); `promote` and `rollback` refuse it, so a forgotten user never
  comes back into serving. `install` makes a version champion without the comparison (a
  version derived from the champion by adding or removing one user), under the same lock
  and champion history.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass

from components.lamp.tasks import get_task
from components.storage.files import named_lock

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
TOMBSTONE = "tombstone"
COMPLETE = "registered"                 # version tag: the registration finished
PENDING = "pending_registration"        # registered-model tag while a version is being registered


class RegistryError(RuntimeError):
    pass


@dataclass
class Decision:
    name: str
    version: str
    promoted: bool
    reason: str
    metric: str
    higher_is_better: bool
    challenger_metrics: dict
    champion_version: str | None
    champion_metrics: dict | None

    def to_dict(self) -> dict:
        return asdict(self)


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _lock(name: str):
    import mlflow

    return named_lock(f"registry-{mlflow.get_tracking_uri()}-{name}")


def mark_challenger(name: str, version: str) -> None:
    _client().set_registered_model_alias(name, CHALLENGER, str(version))


@contextlib.contextmanager
def registering(name: str):
    """Register a version of `name` as one unit. Inside the block the caller logs the model
    (creating the version), tags it and marks it challenger, then calls `complete`. The
    promotion lock is held throughout, so a pending mark found on entry was left by a
    process that died: the versions it created and never completed are deleted first."""
    from mlflow.exceptions import MlflowException

    client = _client()
    with _lock(name):
        try:
            model = client.get_registered_model(name)
        except MlflowException:
            model = client.create_registered_model(name)
        if PENDING in model.tags:
            remove_incomplete(name, json.loads(model.tags[PENDING])["after"])
        versions = client.search_model_versions(f"name='{name}'")
        latest = max((int(v.version) for v in versions), default=0)
        client.set_registered_model_tag(name, PENDING, json.dumps({"after": latest, "pid": os.getpid()}))
        try:
            yield
        except BaseException:
            remove_incomplete(name, latest)
            raise
        client.delete_registered_model_tag(name, PENDING)


def complete(name: str, version: str) -> None:
    _client().set_model_version_tag(name, str(version), COMPLETE, "true")


def remove_incomplete(name: str, after: int) -> list[str]:
    """Delete the versions of `name` newer than `after` that never completed registration,
    with their logged models; their runs end as KILLED."""
    from mlflow.exceptions import MlflowException

    from components.lifecycle.models import logged_model_id

    client = _client()
    removed = []
    for v in client.search_model_versions(f"name='{name}'"):
        if int(v.version) <= after or v.tags.get(COMPLETE):
            continue
        client.delete_model_version(name, v.version)
        if model_id := logged_model_id(v):
            client.delete_logged_model(model_id)
        with contextlib.suppress(MlflowException):          # the run may be gone already
            if v.run_id and client.get_run(v.run_id).info.status == "RUNNING":
                client.set_terminated(v.run_id, "KILLED")
        removed.append(str(v.version))
    if removed:
        log.warning("%s: removed version(s) %s, left incomplete by an interrupted registration", name,
                    ", ".join(removed))
    client.delete_registered_model_tag(name, PENDING)
    return removed


def record_validation(name: str, version: str, task: str, metrics: dict[str, float], split: str) -> None:
    client = _client()
    client.set_model_version_tag(name, str(version), "task", get_task(task).name)
    client.set_model_version_tag(name, str(version), "validation_split", split)
    client.set_model_version_tag(name, str(version), "validation_metrics", json.dumps(metrics, sort_keys=True))


def _alias_version(name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def tombstone(name: str, version: str, reason: str) -> None:
    """Mark a version that must never serve again (it holds a forgotten user's data)."""
    _client().set_model_version_tag(name, str(version), TOMBSTONE, reason)


def _refuse_tombstoned(name: str, mv, action: str) -> None:
    reason = mv.tags.get(TOMBSTONE)
    if reason:
        raise RegistryError(f"{name} version {mv.version} cannot {action}: {reason}")


def install(name: str, version: str, decision: str) -> None:
    """Make `version` the champion without comparing metrics (a version derived from the
    champion), under the promotion lock and in the champion history."""
    with _lock(name):
        mv = _client().get_model_version(name, str(version))
        _refuse_tombstoned(name, mv, "become the champion")
        _set_champion(name, str(version))
        _client().set_model_version_tag(name, str(version), "promotion_decision", decision)


def _metrics(mv) -> dict | None:
    raw = mv.tags.get("validation_metrics")
    return json.loads(raw) if raw else None


def _history(name: str) -> list[str]:
    raw = _client().get_registered_model(name).tags.get("champion_history")
    return json.loads(raw) if raw else []


def _set_champion(name: str, version: str) -> None:
    """The alias first, then the history: a process killed in between leaves the history
    one short, which `rollback` reads correctly and the next `promote` of it completes."""
    client = _client()
    client.set_registered_model_alias(name, CHAMPION, version)
    history = [v for v in _history(name) if v != version] + [version]
    client.set_registered_model_tag(name, "champion_history", json.dumps(history))


def promote(name: str, version: str | None = None) -> Decision:
    """Apply the promotion rule to `version` (default: the current challenger)."""
    from mlflow.exceptions import MlflowException

    client = _client()
    with _lock(name):
        if version is None:
            mv = _alias_version(name, CHALLENGER)
            if mv is None:
                raise RegistryError(f"{name} has no {CHALLENGER!r} version; name one with --version")
        else:
            try:
                mv = client.get_model_version(name, str(version))
            except MlflowException:
                raise RegistryError(f"{name} has no version {version}") from None
        _refuse_tombstoned(name, mv, "be promoted")
        task = mv.tags.get("task")
        challenger = _metrics(mv)
        if not task or challenger is None:
            raise RegistryError(f"{name} version {mv.version} has no validation metrics; evaluate it on the "
                                "validation split first (the pipeline does, or record_validation)")
        spec = get_task(task)
        metric = spec.primary_metric
        champ = _alias_version(name, CHAMPION)
        champ_metrics = _metrics(champ) if champ is not None else None
        if champ is None:
            promoted, reason = True, "no champion yet"
        elif str(champ.version) == str(mv.version):
            promoted, reason = False, "already the champion"
            _set_champion(name, str(mv.version))     # completes the history of a promotion cut short
        elif champ_metrics is None or metric not in champ_metrics:
            promoted, reason = True, f"the champion (version {champ.version}) has no validation {metric}"
        else:
            new, old = challenger[metric], champ_metrics[metric]
            at_least_as_good = new >= old if spec.higher_is_better else new <= old
            promoted = at_least_as_good
            reason = (f"{metric} {new:.4f} {'>=' if spec.higher_is_better else '<='} {old:.4f} of version "
                      f"{champ.version}" if promoted else
                      f"{metric} {new:.4f} is worse than {old:.4f} of version {champ.version}")
        decision = Decision(name, str(mv.version), promoted, reason, metric, spec.higher_is_better, challenger,
                            str(champ.version) if champ is not None else None, champ_metrics)
        if promoted:
            _set_champion(name, str(mv.version))
        client.set_model_version_tag(name, mv.version, "promotion_decision",
                                     f"{'promoted' if promoted else 'rejected'}: {reason}")
        client.set_model_version_tag(name, mv.version, "promotion_evidence",
                                     json.dumps({**decision.to_dict(), "time": time.time()}, sort_keys=True))
        return decision


def rollback(name: str) -> str:
    """Move `champion` back to the previous champion; returns that version."""
    from mlflow.exceptions import MlflowException

    with _lock(name):
        history = _history(name)
        current = _alias_version(name, CHAMPION)
        if current is not None and history and history[-1] == str(current.version):
            history = history[:-1]
        if not history:
            raise RegistryError(f"{name} has no earlier champion to roll back to")
        previous = history[-1]
        client = _client()
        try:
            _refuse_tombstoned(name, client.get_model_version(name, previous), "be rolled back to")
        except MlflowException:
            raise RegistryError(f"{name} cannot roll back: the previous champion, version {previous}, was deleted "
                                "(persona users forget --purge-history deletes versions that held a forgotten "
                                "user)") from None
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_registered_model_tag(name, "champion_history", json.dumps(history))
        if current is not None:
            client.set_model_version_tag(name, current.version, "promotion_decision",
                                         f"rolled back: champion returned to version {previous}")
        return previous


def show(name: str) -> dict:
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model {name!r}") from None
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    return {"name": name, "aliases": {k: str(v) for k, v in (model.aliases or {}).items()}, "champion_history": _history(name),
            "versions": [{"version": str(v.version), "validation_metrics": _metrics(v),
                          "decision": v.tags.get("promotion_decision"), "data_version": v.tags.get("data_version"),
                          "git_commit": v.tags.get("git_commit")} for v in versions]}
