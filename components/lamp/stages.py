"""The data-plane stages that `dvc.yaml` runs: acquire -> validate -> prepare.

Each stage reads the active profile of `params.yaml` and works on every task of it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from components.config import Profile, data_paths
from components.lamp.io import iter_questions, read_outputs
from components.lamp.tasks import get_task
from components.storage.files import write_json_atomic

log = logging.getLogger(__name__)


def acquire(profile: Profile, root: str | Path = "data") -> dict:
    """Synthesize or ingest the raw official files of every task into data/raw/<task>/."""
    from components.lamp.ingest import ingest_task
    from components.lifecycle.datafiles import DataTransaction, ForgottenUsers, remove_users
    from components.lamp.synthetic import generate_task

    raw = data_paths(root)["raw"]
    counts = {}
    for task in profile.tasks:
        out = raw / task
        if profile.data.source == "synth":
            counts[task] = generate_task(task, profile.data.synth.to_config(), out)
        else:
            source = profile.data.source
            if Path(source, task).is_dir():      # a directory with one sub-directory per task
                source = str(Path(source, task))
            counts[task] = ingest_task(task, source, out, time_based=profile.data.time_based)
        forgotten = ForgottenUsers(Path(root) / "forgotten.json")
        if forgotten:                            # users forgotten for good stay forgotten
            with DataTransaction() as tx:
                removed = remove_users([out], forgotten, tx)
            log.info("dropped %d records of forgotten users from %s", removed.records, out)
        log.info("acquired %s into %s: %s", task, out, counts[task])
    return counts


def validate_all(profile: Profile, root: str | Path = "data") -> dict:
    """Run the GX suite on every raw split; write reports + Data Docs; return the summary."""
    from components.validation.runner import validate_files

    paths = data_paths(root)
    out_root = paths["validation"]
    summary: dict = {"success": True, "tasks": {}}
    for task in profile.tasks:
        task_dir = out_root / task
        if task_dir.exists():
            shutil.rmtree(task_dir)
        for qfile in sorted((paths["raw"] / task).glob("*_questions.json")):
            split = qfile.name.removesuffix("_questions.json")
            ofile = qfile.with_name(f"{split}_outputs.json")
            report = validate_files(task, qfile, ofile if ofile.exists() else None,
                                    docs_dir=task_dir / "data_docs" / split)
            write_json_atomic(task_dir / f"{split}.json", report.to_dict())
            summary["tasks"].setdefault(task, {})[split] = {
                "success": report.success, "questions": report.n_questions,
                "profile_items": report.n_profile_items,
                "failures": [f.describe() for f in report.failures]
                + ([report.format_error] if report.format_error else [])}
            summary["success"] &= report.success
            print(report.summary())
    write_json_atomic(paths["validation_summary"], summary)
    return summary


def prepare_all(profile: Profile, root: str | Path = "data") -> dict:
    from components.lamp.splits import prepare_task

    paths = data_paths(root)
    result = {}
    for task in profile.tasks:
        result[task] = prepare_task(task, paths["raw"] / task, paths["prepared"] / task,
                                    profile.prepare.to_config())
        log.info("prepared %s: %s", task, result[task])
    write_json_atomic(paths["prepared"] / "summary.json", result)
    return result


def file_stats(task: str, questions: str | Path, outputs: str | Path | None = None) -> dict:
    """Counts and length statistics of one questions file (streamed)."""
    spec = get_task(task)
    n, items, users, dated = 0, [], set(), 0
    input_chars = 0
    for q in iter_questions(questions, spec):
        n += 1
        items.append(len(q.profile))
        users.add(q.user_key)
        input_chars += len(q.input)
        dated += q.date is not None
    items.sort()
    stats = {"task": spec.name, "questions": n, "users": len(users),
             "profile_items_total": sum(items),
             "profile_items_mean": sum(items) / n if n else 0.0,
             "profile_items_median": items[n // 2] if n else 0,
             "profile_items_max": items[-1] if n else 0,
             "input_chars_mean": input_chars / n if n else 0.0,
             "dated_questions": dated}
    if outputs is not None:
        _, outs = read_outputs(outputs, spec)
        counts: dict[str, int] = {}
        for o in outs:
            counts[o.output] = counts.get(o.output, 0) + 1
        if spec.labels:
            stats["label_counts"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    return stats
