"""`persona`: the one command-line interface of the platform.

Heavy libraries (torch, transformers, great_expectations, prefect, mlflow) are imported
inside the command that needs them, so `persona --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


# --- persona data ... -----------------------------------------------------------------

def cmd_data_synth(args: argparse.Namespace) -> int:
    from components.config import load_profile
    from components.lamp.synthetic import generate_task

    cfg = load_profile(args.profile).data.synth
    overrides = {k: v for k, v in (("users", args.users), ("seed", args.seed)) if v is not None}
    cfg = cfg.model_copy(update=overrides).to_config()
    for task in args.task:
        out = Path(args.out) / task if len(args.task) > 1 else Path(args.out)
        counts = generate_task(task, cfg, out)
        print(f"{task}: wrote {counts} questions to {out} (+ relevance.json)")
    return 0


def cmd_data_ingest(args: argparse.Namespace) -> int:
    from components.lamp.ingest import ingest_task

    out = Path(args.out or f"data/raw/{args.task}")
    counts = ingest_task(args.task, args.source, out, time_based=args.time_based, timeout=args.timeout)
    print(f"{args.task}: ingested {counts} questions from {args.source} into {out}")
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from components.validation.runner import validate_files

    report = validate_files(args.task, args.questions, args.outputs, docs_dir=args.docs)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.summary())
    return 0 if report.success else EXIT_BAD_INPUT        # bad data is bad input (README)


def cmd_data_acquire(args: argparse.Namespace) -> int:
    from components.config import load_profile
    from components.lamp.stages import acquire

    _print_json(acquire(load_profile(args.profile), args.root))
    return 0


def cmd_data_validate_all(args: argparse.Namespace) -> int:
    from components.config import load_profile
    from components.lamp.stages import validate_all

    summary = validate_all(load_profile(args.profile), args.root)
    print(f"validation {'passed' if summary['success'] else 'FAILED'}; reports in {args.root}/validation/")
    return 0 if summary["success"] else 1


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from components.config import load_profile
    from components.lamp.stages import prepare_all

    _print_json(prepare_all(load_profile(args.profile), args.root))
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from components.lamp.stages import file_stats

    _print_json(file_stats(args.task, args.questions, args.outputs))
    return 0


# --- persona eval ... -----------------------------------------------------------------

def cmd_eval_score(args: argparse.Namespace) -> int:
    from components.lamp.io import read_outputs
    from components.lamp.metrics import score_outputs

    _, preds = read_outputs(args.pred, args.task)
    _, golds = read_outputs(args.gold, args.task)
    metrics = score_outputs(args.task, preds, golds)
    if args.json:
        print(json.dumps(metrics, allow_nan=False))     # strict JSON: a NaN is a bug, not a score
    else:
        for name, value in metrics.items():
            print(f"{name:>14}: {value:.4f}")
    return 0


def cmd_eval_run(args: argparse.Namespace) -> int:
    from components.config import load_profile
    from components.evaluation.run import EvalRequest, run_evaluation

    profile = load_profile(args.profile)
    method = f"{args.method}-{args.k}" if args.k is not None else args.method
    req = EvalRequest(method=method, task=args.task, split=args.split or profile.evaluation.split,
                      backbone_uri=args.backbone, batch_size=args.batch_size or profile.evaluation.batch_size,
                      num_beams=args.num_beams or profile.evaluation.num_beams, limit=args.limit)
    result = run_evaluation(req, profile.name, reports=args.reports)
    print(json.dumps({"method": result["method"], "task": result["task"], "split": result["split"],
                      "metrics": result["metrics"], "costs": result["costs"],
                      "predictions_file": result["predictions_file"],
                      "mlflow_run_id": result["mlflow_run_id"], "backbone": result["backbone"]}, indent=2))
    return 0


# --- persona train ... ----------------------------------------------------------------

def cmd_train_backbone(args: argparse.Namespace) -> int:
    from components.backbone.train import train_and_register
    from components.config import load_profile

    profile = load_profile(args.profile)
    for task in args.task or profile.tasks:
        reg = train_and_register(task, profile)
        print(f"{task}: registered {reg['model_uri']} (MLflow run {reg['run_id']})")
    return 0


def cmd_train_populations(args: argparse.Namespace) -> int:
    from components.config import load_profile
    from components.tracking import mlflow_tracking
    from flows.populations import train_limited

    profile = load_profile(args.profile)
    mlflow_tracking.configure(".")
    backbones = {}
    for task in profile.tasks:
        try:
            backbones[task] = {"model_uri": mlflow_tracking.latest_backbone_uri(task)}
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    for key, reg in train_limited(args.method, backbones, ".", profile.name).items():
        print(f"{key}: registered {reg['model_uri']} (MLflow run {reg['run_id']})")
    return 0


def cmd_train_attn_gs(args: argparse.Namespace) -> int:
    from components.config import load_profile
    from components.methods.attn_gs.registry import train_and_register
    from components.tracking import mlflow_tracking

    profile = load_profile(args.profile)
    mlflow_tracking.configure(".")
    for task in args.task or profile.tasks:
        try:
            uri = mlflow_tracking.latest_backbone_uri(task)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        reg = train_and_register(task, profile, uri)
        print(f"{task}: registered {reg['marker']['model_uri']} and {reg['compressor']['model_uri']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from components.evaluation.report import publish

    try:
        tables = publish(".", args.reports)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for task, table in tables.items():
        print(f"## {task}\n{table}\n")
    print(f"report: {args.reports}/report.md, {args.reports}/report.html (also in MLflow, run report-<task>)")
    if args.readme:
        from components.evaluation.readme import update_readme

        try:
            print(f"results section of {update_readme(args.readme, args.reports)} regenerated from {args.reports}/")
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


# --- persona storage ... ----------------------------------------------------------------

def cmd_storage_s3(args: argparse.Namespace) -> int:
    from components.storage.s3 import S3Location, StorageError, configure_dvc_remote, ensure_bucket

    try:
        dvc_loc = S3Location.parse(args.dvc_url, args.endpoint_url)
        configure_dvc_remote(".", dvc_loc, args.remote_name)
        print(f"DVC remote {args.remote_name!r} -> {dvc_loc.url}" + (f" at {args.endpoint_url}" if args.endpoint_url else ""))
        if args.mlflow_url:
            ml_loc = S3Location.parse(args.mlflow_url, args.endpoint_url)
            ensure_bucket(ml_loc)
            print("MLflow artifacts: export these (or start `mlflow server --artifacts-destination "
                  f"{ml_loc.url}`)\n  export PERSONA_MLFLOW_ARTIFACTS={ml_loc.url}")
            if args.endpoint_url:
                print(f"  export MLFLOW_S3_ENDPOINT_URL={args.endpoint_url}")
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# --- persona registry ... -------------------------------------------------------------

def cmd_registry(args: argparse.Namespace) -> int:
    from components.tracking import mlflow_tracking, registry

    mlflow_tracking.configure(".")
    try:
        if args.action == "show":
            print(json.dumps(registry.show(args.name), indent=2))
        elif args.action == "promote":
            d = registry.promote(args.name, args.version)
            print(f"{args.name} version {d.version}: {'promoted to champion' if d.promoted else 'not promoted'} "
                  f"({d.reason})")
        else:
            print(f"{args.name}: champion is now version {registry.rollback(args.name)}")
    except registry.RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# --- persona params -------------------------------------------------------------------

def cmd_params(args: argparse.Namespace) -> int:
    from components.config import load_profile
    from components.methods.accounting import accounting_for

    profile = load_profile(args.profile)
    print(accounting_for(profile.backbone.reader.to_config().directory(), args.backbones, args.users, profile.pplug.bridge_rank,
                         profile.tap_per.configs()[0]))
    return 0


# --- persona pipeline -----------------------------------------------------------------

def cmd_pipeline(args: argparse.Namespace) -> int:
    from flows.pipeline import pipeline

    summary = pipeline(push=not args.no_push)
    print(summary["text"])
    return 0


# --- persona users ... / persona serve -------------------------------------------------

def _flow_env() -> None:
    import flows  # noqa: F401  (the vector and context caches under .state/, as the flows use)


def cmd_users_add(args: argparse.Namespace) -> int:
    from components.lifecycle.onboard import onboard_users

    _flow_env()
    out = onboard_users(args.task, args.file, args.outputs, ".", args.profile, args.epochs, args.lr)
    _print_json(out)
    tap = out["servable"].get("tap-per", {})
    print(f"onboarded {len(out['users'])} user(s) into {out['task']} (data version {out['data_version']}); "
          f"TAP-PER {tap.get('seconds_per_user', 0):.1f} s per user, new versions: "
          f"{', '.join(tap.get('versions', {}).values()) or 'none'}", file=sys.stderr)
    return 0


def cmd_users_forget(args: argparse.Namespace) -> int:
    from components.lifecycle.forget import UnknownUserError, forget_user

    _flow_env()
    try:
        out = forget_user(args.user_id, ".", args.profile, args.purge_history)
    except UnknownUserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _print_json(out)
    audit = out["audit"]
    left = {k: len(v) for part in ("current", "history") for k, v in audit[part].items() if v}
    print(f"forgot {out['user']} in {', '.join(out['tasks'])}: {out['records_removed']} records, "
          f"{len(out['models'])} new model version(s), data version {out['data_version']}. Audit: "
          f"{'clean' if audit['clean'] else 'NOT clean'}"
          + (f"; still found in {left}" if left else "; nothing found anywhere"), file=sys.stderr)
    return 0 if audit["clean"] else 1


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from components.serving.registry import register_serving_model, run_server, serve_command, serve_env

    reg = register_serving_model(args.method, ".", args.profile, args.batch_size)
    if args.register_only:
        _print_json(reg)
        return 0
    from components.tracking.mlflow_tracking import configure

    print(f"serving {reg['name']} version {reg['version']} on http://{args.host}:{args.port}/invocations "
          f"(POST {{\"dataframe_records\": [{{\"user_id\", \"task\", \"input\", \"profile\"?}}]}}, at most "
          f"{args.max_rows} rows and {args.max_bytes} bytes a request); Ctrl-C or SIGTERM stops it", file=sys.stderr)
    env = serve_env(reg["model_uri"], {**os.environ, "MLFLOW_TRACKING_URI": configure(".")}, args.max_rows,
                    args.max_bytes)
    return run_server(serve_command(args.host, args.port, args.workers), env)


def build_parser() -> argparse.ArgumentParser:
    from components.serving.requests import MAX_REQUEST_BYTES, MAX_REQUEST_ROWS

    parser = argparse.ArgumentParser(
        prog="persona", description="Train, evaluate and register personalized LLMs on LaMP-format data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="the data plane: synthesize, ingest, validate, prepare, inspect")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    p = dsub.add_parser("synth", help="write synthetic LaMP-format files with planted personalization signals")
    p.add_argument("--task", nargs="+", required=True, help="task(s): LaMP-1 LaMP-2 LaMP-3 LaMP-4 LaMP-5 LaMP-7")
    p.add_argument("--out", required=True, help="output directory (one sub-directory per task if several)")
    p.add_argument("--users", type=int, help="number of users (default: params.yaml data.synth.users)")
    p.add_argument("--seed", type=int, help="random seed (default: params.yaml data.synth.seed)")
    p.add_argument("--profile", help="params.yaml profile to take the other knobs from")
    p.set_defaults(func=cmd_data_synth)

    p = dsub.add_parser("ingest", help="bring official LaMP files from a directory or URL into data/raw/<task>")
    p.add_argument("--task", required=True, help="task name, e.g. LaMP-2")
    p.add_argument("--source", required=True,
                   help="a directory, an http(s) base URL in the official layout, or 'official'")
    p.add_argument("--out", help="destination directory (default data/raw/<task>)")
    p.add_argument("--time-based", action="store_true", help="take the time-based files (time/LaMP_N/...)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per download before giving up")
    p.set_defaults(func=cmd_data_ingest)

    p = dsub.add_parser("validate", help="check a questions file (and its outputs) against format and the GX suite")
    p.add_argument("--task", required=True, help="task name, e.g. LaMP-3")
    p.add_argument("--questions", required=True, help="the *_questions.json file")
    p.add_argument("--outputs", help="the matching *_outputs.json file (ids must match)")
    p.add_argument("--docs", help="write Great Expectations Data Docs HTML into this directory")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=cmd_data_validate)

    for name, func, text in (
            ("acquire", cmd_data_acquire, "DVC stage: synthesize or ingest every task of the profile"),
            ("validate-all", cmd_data_validate_all, "DVC stage: validate every raw split, write reports"),
            ("prepare", cmd_data_prepare, "DVC stage: user/time/OPPU splits and populations")):
        p = dsub.add_parser(name, help=text)
        p.add_argument("--profile", help="params.yaml profile (default: its `profile` key)")
        p.add_argument("--root", default="data", help="data directory (default: data)")
        p.set_defaults(func=func)

    p = dsub.add_parser("stats", help="counts and length statistics of a questions file")
    p.add_argument("--task", required=True, help="task name")
    p.add_argument("--questions", required=True, help="the *_questions.json file")
    p.add_argument("--outputs", help="optional *_outputs.json for label counts")
    p.set_defaults(func=cmd_data_stats)

    ev = sub.add_parser("eval", help="evaluation: score prediction files")
    esub = ev.add_subparsers(dest="eval_command", required=True, metavar="SUBCOMMAND")
    p = esub.add_parser("score", help="score a predictions file with LaMP's official metrics")
    p.add_argument("--task", required=True, help="task name, e.g. LaMP-2")
    p.add_argument("--pred", required=True, help='predictions in the official format {"task", "golds"}')
    p.add_argument("--gold", required=True, help="the gold *_outputs.json")
    p.add_argument("--json", action="store_true", help="print one JSON object of metric names and values")
    p.set_defaults(func=cmd_eval_score)

    p = esub.add_parser("run", help="evaluate a method on a prepared split (MLflow run + predictions file)")
    p.add_argument("--method", required=True,
                   help="non-personalized, full-context, random, recency, bm25, dense (with --k) or e.g. bm25-4")
    p.add_argument("--task", required=True, help="task name, e.g. LaMP-2")
    p.add_argument("--split", help="<kind>/<split> under data/prepared/<task>/ (default: params evaluation.split)")
    p.add_argument("--k", type=int, help="number of retrieved profile items for retrieval methods")
    p.add_argument("--backbone", help="models:/backbone-<task>/<version> or a local model directory "
                                      "(default: the latest registered backbone of the task)")
    p.add_argument("--batch-size", type=int, help="questions per generation batch")
    p.add_argument("--num-beams", type=int, help="beam width (1 = greedy)")
    p.add_argument("--limit", type=int, help="evaluate only the first N questions (smoke runs)")
    p.add_argument("--reports", default="reports", help="where predictions and summary.json go")
    p.add_argument("--profile", help="params.yaml profile")
    p.set_defaults(func=cmd_eval_run)

    tr = sub.add_parser("train", help="training: the backbone, and the per-population methods")
    tsub = tr.add_subparsers(dest="train_command", required=True, metavar="SUBCOMMAND")
    p = tsub.add_parser("backbone", help="train the embedded backbone (or adopt a named one) and register it")
    p.add_argument("--task", nargs="*", help="tasks (default: the profile's tasks)")
    p.add_argument("--profile", help="params.yaml profile")
    p.set_defaults(func=cmd_train_backbone)
    for method, what in (("tap-per", "TAP-PER (user prefixes + record prefix + bridge LoRA)"),
                         ("pplug", "PPlug (input-aware user embedder)")):
        p = tsub.add_parser(method, help=f"train one {what} model per population and task, register each "
                                         f"as {method}-<task>-<population>")
        p.add_argument("--profile", help="params.yaml profile (settings: its `"
                                         f"{method.replace('-', '_')}` section)")
        p.set_defaults(func=cmd_train_populations, method=method)

    p = tsub.add_parser("attn-gs", help="Attn-GS: fine-tune the marker, train the compressor, register "
                                        "attn-gs-marker-<task> and attn-gs-compressor-<task>")
    p.add_argument("--task", nargs="*", help="tasks (default: the profile's tasks)")
    p.add_argument("--profile", help="params.yaml profile (settings: its `attn_gs` section)")
    p.set_defaults(func=cmd_train_attn_gs)

    st = sub.add_parser("storage", help="remote storage: the DVC remote and MLflow artifacts on S3")
    ssub = st.add_subparsers(dest="storage_command", required=True, metavar="SUBCOMMAND")
    p = ssub.add_parser("s3", help="create the buckets and point the DVC remote at S3 (credentials: the "
                                   "standard AWS_* variables, never written to tracked files)")
    p.add_argument("--dvc-url", required=True, help="s3://bucket/prefix for the DVC remote")
    p.add_argument("--mlflow-url", help="s3://bucket/prefix for MLflow artifacts (prints the variables to export)")
    p.add_argument("--endpoint-url", help="S3 endpoint of a non-AWS store, e.g. http://127.0.0.1:5055")
    p.add_argument("--remote-name", default="s3", help="name of the DVC remote (made the default)")
    p.set_defaults(func=cmd_storage_s3)

    rg = sub.add_parser("registry", help="the MLflow model registry: champion/challenger, promotion, rollback")
    rsub = rg.add_subparsers(dest="registry_command", required=True, metavar="SUBCOMMAND")
    p = rsub.add_parser("show", help="aliases, versions, validation metrics and promotion decisions of a model")
    p.add_argument("name", help="registered model name, e.g. tap-per-LaMP-2-p0 or backbone-LaMP-2")
    p.set_defaults(func=cmd_registry, action="show")
    p = rsub.add_parser("promote", help="move 'champion' to a version if it is at least as good as the current "
                                        "champion on the validation set (per the task's metric direction)")
    p.add_argument("name", help="registered model name")
    p.add_argument("--version", help="the version to consider (default: the 'challenger' alias)")
    p.set_defaults(func=cmd_registry, action="promote")
    p = rsub.add_parser("rollback", help="move 'champion' back to the previous champion")
    p.add_argument("name", help="registered model name")
    p.set_defaults(func=cmd_registry, action="rollback")

    p = sub.add_parser("params", help="per-user and total trainable parameters of every method at N users")
    p.add_argument("--users", type=int, nargs="+", default=[1, 100, 1000, 1_000_000],
                   help="user counts for the total columns")
    p.add_argument("--backbones", nargs="+", default=["demo", "llama-2-7b", "llama-3.1-8b"],
                   help="demo (the embedded backbone of params.yaml) and/or llama-2-7b, llama-3.1-8b "
                        "(architectures built on the meta device: no weights needed)")
    p.add_argument("--profile", help="params.yaml profile (for the demo backbone's size)")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("report", help="write reports/report.{md,html} (tables, Pareto plots, published numbers) "
                                      "from reports/summary.json and log them to MLflow")
    p.add_argument("--reports", default="reports", help="folder holding summary.json; the report goes there too")
    p.add_argument("--readme", nargs="?", const="README.md", default=None, metavar="FILE",
                   help="also regenerate the results section of FILE (default when given bare: README.md) from "
                        "the reports folder (default: leave it alone)")
    p.set_defaults(func=cmd_report)

    us = sub.add_parser("users", help="the user lifecycle: onboard new users, forget a user (with an audit)")
    usub = us.add_subparsers(dest="users_command", required=True, metavar="SUBCOMMAND")
    p = usub.add_parser("add", help="validate new users' histories, place them in populations, add them to the "
                                    "data (a new DVC version) and make them servable (TAP-PER fits their P_u)")
    p.add_argument("file", help="a LaMP questions file whose records carry the new users' user_id")
    p.add_argument("--task", required=True, help="LaMP task, e.g. LaMP-2")
    p.add_argument("--outputs", help="the matching outputs file (gold answers), if any")
    p.add_argument("--profile", help="params.yaml profile (default: the active one)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the online P_u fit per user")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate of the online P_u fit")
    p.set_defaults(func=cmd_users_add)
    p = usub.add_parser("forget", help="remove a user from the data (a new DVC version), the P_u tables (new "
                                       "model versions) and the caches, then audit; exit 1 if anything remains")
    p.add_argument("user_id", help="the user's id as in the data's user_id field")
    p.add_argument("--purge-history", action="store_true",
                   help="also delete earlier model versions that hold the user and garbage-collect every "
                        "earlier data version from the DVC cache and remote (dvc gc --workspace --cloud)")
    p.add_argument("--profile", help="params.yaml profile (default: the active one)")
    p.set_defaults(func=cmd_users_forget)

    p = sub.add_parser("serve", help="register serve-<method> (an MLflow pyfunc) and serve it on POST "
                                     "/invocations (MLflow's scoring server, with request limits)")
    p.add_argument("--method", default="tap-per", help="any evaluated method: tap-per, pplug, attn-gs@8, bm25-4, ...")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=5005, help="port to listen on")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (each loads the models)")
    p.add_argument("--batch-size", type=int, default=16, help="rows answered per model call")
    p.add_argument("--max-rows", type=int, default=MAX_REQUEST_ROWS,
                   help=f"rows per request; a larger one gets 413 (default {MAX_REQUEST_ROWS})")
    p.add_argument("--max-bytes", type=int, default=MAX_REQUEST_BYTES,
                   help=f"bytes per request body; a larger one gets 413 (default {MAX_REQUEST_BYTES})")
    p.add_argument("--profile", help="params.yaml profile (default: the active one)")
    p.add_argument("--register-only", action="store_true", help="register the serving model, do not serve")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("pipeline", help="run the main job (the Prefect pipeline) on the active profile")
    p.add_argument("--no-push", action="store_true", help="do not push data to the DVC remote")
    p.set_defaults(func=cmd_pipeline)
    return parser


def _exit_on_sigterm(signum, _frame):
    """SIGTERM ends the command like Ctrl-C does: cleanups and exit handlers run (Prefect's
    ephemeral API server is stopped by one), where the default action would orphan it.
    Training loops in worker threads save their checkpoint and stop at their next step, so
    the exit does not wait for them to finish. During a flow run, Prefect's own handler
    first marks the run, then passes the signal on here."""
    from components.stopping import request_stop

    request_stop()
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from components.storage.dvc import DvcError
    from components.validation.runner import ValidationFailed

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError, LookupError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValidationFailed, DvcError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
