"""Validate a pair of official LaMP files: format (the streaming reader) + the GX suite.

The questions file is streamed and its profile table validated in chunks, so a
LaMP-3-train-sized file never sits in memory as a whole. Failures are aggregated per
expectation with example record ids; Data Docs HTML is written when `docs_dir` is given.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.lamp.io import iter_questions, read_outputs
from components.lamp.records import DataError
from components.lamp.tasks import TaskSpec, get_task
from components.validation import suites

PROFILE_CHUNK_ROWS = 200_000


class ValidationFailed(RuntimeError):
    """Data failed its suite; nothing downstream may run."""
_MAX_EXAMPLES = 5


@dataclass
class Failure:
    table: str
    expectation: str
    column: str | None
    unexpected_count: int = 0
    examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        col = f" on column {self.column!r}" if self.column else ""
        ex = f"; e.g. records {', '.join(self.examples)}" if self.examples else ""
        return f"[{self.table}] {self.expectation}{col}: {self.unexpected_count} unexpected{ex}"


@dataclass
class ValidationReport:
    task: str
    questions_file: str
    outputs_file: str | None
    success: bool = True
    n_questions: int = 0
    n_profile_items: int = 0
    n_expectations: int = 0
    failures: list[Failure] = field(default_factory=list)
    format_error: str | None = None
    data_docs: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        head = (f"{self.task}: {'PASSED' if self.success else 'FAILED'} "
                f"({self.n_questions} questions, {self.n_profile_items} profile items, "
                f"{self.n_expectations} expectation checks) - {self.questions_file}")
        lines = [head]
        if self.format_error:
            lines.append(f"  format error: {self.format_error}")
        lines += [f"  {f.describe()}" for f in self.failures]
        if self.data_docs:
            lines.append(f"  data docs: {self.data_docs}")
        return "\n".join(lines)


class _Suite:
    """One ephemeral GX context; each table gets a suite + checkpoint (with Data Docs)."""

    def __init__(self, docs_dir: str | Path | None):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import logging

        # GX logs at INFO from import on (one of its loggers sets INFO itself) and draws a bar
        # per metric: both drown what the validation reports
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
        self.gx = gx
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.actions = []
        if docs_dir is not None:
            self.ctx.add_data_docs_site("local", {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(Path(docs_dir).resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
            self.actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["local"])]
        self.source = self.ctx.data_sources.add_pandas("lamp")
        self.checkpoints: dict[str, object] = {}
        self.failures: dict[tuple, Failure] = {}
        self.n_checks = 0

    def add_table(self, table: str, expectations: list, index_columns: list[str]) -> None:
        gx = self.gx
        batch = self.source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = self.ctx.suites.add(gx.ExpectationSuite(name=f"lamp_{table}"))
        for exp in expectations:
            suite.add_expectation(exp)
        vd = self.ctx.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
        self.checkpoints[table] = self.ctx.checkpoints.add(gx.Checkpoint(
            name=f"check_{table}", validation_definitions=[vd], actions=self.actions,
            result_format={"result_format": "SUMMARY", "unexpected_index_column_names": index_columns}))

    def run(self, table: str, frame) -> None:
        result = self.checkpoints[table].run(batch_parameters={"dataframe": frame})
        for vr in result.run_results.values():
            for r in vr.results:
                self.n_checks += 1
                if r.success:
                    continue
                cfg = r.expectation_config
                column = cfg.kwargs.get("column") or ",".join(cfg.kwargs.get("column_list", []))
                key = (table, cfg.type, column)
                fail = self.failures.setdefault(key, Failure(table, cfg.type, column))
                fail.unexpected_count += int(r.result.get("unexpected_count") or 0)
                for row in r.result.get("partial_unexpected_index_list") or []:
                    rid = _record_id(row)
                    if rid and rid not in fail.examples and len(fail.examples) < _MAX_EXAMPLES:
                        fail.examples.append(rid)
                if r.exception_info and r.exception_info.get("raised_exception"):
                    fail.examples.append(str(r.exception_info.get("exception_message"))[:200])


def _record_id(row: dict) -> str | None:
    if "question_id" in row:
        item = row.get("item_id")
        return f"{row['question_id']}/{item}" if item is not None else str(row["question_id"])
    return str(row["id"]) if "id" in row else None


class ItemTexts:
    """A profile item id names one item: the same id with other texts in another user's
    profile is refused (files that are joined per item id, such as the tokenizer corpus,
    would silently keep one of them). Keeps an 8-byte digest per item id."""

    def __init__(self, path):
        self.path, self.seen = path, {}

    def check(self, q) -> None:
        for i, item in enumerate(q.profile):
            digest = hashlib.blake2b(json.dumps(item.fields, sort_keys=True).encode(), digest_size=8).digest()
            owner = f"user {q.user_id!r}" if q.user_id is not None else f"question {q.id!r}"
            first, known = self.seen.setdefault(item.id, (owner, digest))
            if known != digest and first != owner:
                raise DataError(self.path, f"profile item id {item.id!r} also names an item with other texts in "
                                           f"the profile of {first}; an item id must name one item", q.id,
                                f"profile[{i}].id")


def _frame(rows: dict[str, list]):
    import pandas as pd

    return pd.DataFrame(rows)


def validate_files(task: str | TaskSpec, questions: str | Path, outputs: str | Path | None = None,
                   docs_dir: str | Path | None = None, chunk_rows: int = PROFILE_CHUNK_ROWS) -> ValidationReport:
    """Check format and the task's GX suite; never raises on bad data, reports it instead."""
    spec = get_task(task) if isinstance(task, str) else task
    report = ValidationReport(spec.name, str(questions), str(outputs) if outputs else None)
    try:
        golds = None
        if outputs is not None:
            _, outs = read_outputs(outputs, spec)
            golds = {}
            for o in outs:
                golds.setdefault(o.id, o.output)
        suite = _Suite(docs_dir)
        suite.add_table("profile", suites.profile_expectations(spec), ["question_id", "item_id"])
        qrows: dict[str, list] = {"id": [], "input": [], "profile_size": [], "date": []}
        if golds is not None:
            qrows["output"] = []
        prow_keys = ["question_id", "item_id", "date", *spec.profile_fields]
        if spec.label_field and spec.label_field not in prow_keys:
            prow_keys.append(spec.label_field)
        prows: dict[str, list] = {k: [] for k in prow_keys}
        items = ItemTexts(questions)
        for q in iter_questions(questions, spec):
            items.check(q)
            qrows["id"].append(q.id)
            qrows["input"].append(q.input)
            qrows["profile_size"].append(len(q.profile))
            qrows["date"].append(q.date)
            if golds is not None:
                qrows["output"].append(golds.get(q.id))
            for item in q.profile:
                prows["question_id"].append(q.id)
                prows["item_id"].append(item.id)
                prows["date"].append(item.date)
                for name in prow_keys[3:]:
                    prows[name].append(item.fields.get(name))
            if len(prows["item_id"]) >= chunk_rows:
                suite.run("profile", _frame(prows))
                prows = {k: [] for k in prow_keys}
            report.n_questions += 1
            report.n_profile_items += len(q.profile)
        if report.n_questions == 0:
            raise DataError(questions, "holds no questions (an empty list): nothing to train or evaluate on")
        if prows["item_id"]:
            suite.run("profile", _frame(prows))
        suite.add_table("questions", suites.question_expectations(spec, golds is not None), ["id"])
        suite.run("questions", _frame(qrows))
        if golds is not None:
            suite.add_table("outputs", suites.output_expectations(qrows["id"]), ["id"])
            suite.run("outputs", _frame({"id": [o.id for o in outs]}))
        report.failures = list(suite.failures.values())
        report.n_expectations = suite.n_checks
        if docs_dir is not None:
            report.data_docs = str(Path(docs_dir) / "index.html")
    except DataError as exc:
        report.format_error = str(exc)
    report.success = report.format_error is None and not report.failures
    return report
