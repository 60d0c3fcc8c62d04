import json
import subprocess
import sys
import time

import pytest

from components.lamp.io import write_outputs
from components.lamp.records import Output


def run(cmd, *args):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t=time.perf_counter(); from flows import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit: pass\n"
            "heavy=[m for m in ('torch','transformers','great_expectations','prefect','mlflow','pandas')"
            " if m in sys.modules]\nprint('HEAVY', heavy, time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    line = out.strip().splitlines()[-1]
    assert line.startswith("HEAVY []"), line
    assert float(line.split()[-1]) < 1.0
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "data", "validate", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--outputs" in proc.stdout
    assert time.perf_counter() - start < 3.0


@pytest.mark.parametrize("sub", [["data"], ["data", "synth"], ["data", "ingest"], ["data", "prepare"],
                                 ["data", "stats"], ["eval", "score"], ["pipeline"]])
def test_every_subcommand_has_help(persona_cmd, sub):
    proc = run(persona_cmd, *sub, "--help")
    assert proc.returncode == 0 and "usage: persona" in proc.stdout


def test_validate_exit_codes(persona_cmd, synth_root, tmp_path):
    q, o = synth_root / "LaMP-3" / "dev_questions.json", synth_root / "LaMP-3" / "dev_outputs.json"
    ok = run(persona_cmd, "data", "validate", "--task", "LaMP-3", "--questions", str(q), "--outputs", str(o))
    assert ok.returncode == 0 and "PASSED" in ok.stdout
    bad = tmp_path / "dev_outputs.json"
    golds = json.loads(o.read_text())
    golds["golds"][0]["output"] = "9"
    bad.write_text(json.dumps(golds))
    fail = run(persona_cmd, "data", "validate", "--task", "LaMP-3", "--questions", str(q), "--outputs", str(bad))
    assert fail.returncode == 2 and "FAILED" in fail.stdout and golds["golds"][0]["id"] in fail.stdout
    assert "INFO" not in ok.stderr + fail.stderr            # no Great Expectations chatter


@pytest.mark.parametrize("args, words", [
    (["data", "validate", "--task", "LaMP-9", "--questions", "x.json"], "unknown task"),
    (["data", "stats", "--task", "LaMP-2", "--questions", "missing.json"], "missing.json"),
])
def test_bad_input_exits_nonzero_with_message(persona_cmd, args, words):
    proc = run(persona_cmd, *args)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr


def test_eval_score_json(persona_cmd, tmp_path):
    write_outputs(tmp_path / "gold.json", "LaMP-2", [Output("1", "comedy"), Output("2", "action")])
    write_outputs(tmp_path / "pred.json", "LaMP-2", [Output("1", "comedy"), Output("2", "romance")])
    proc = run(persona_cmd, "eval", "score", "--task", "LaMP-2", "--pred", str(tmp_path / "pred.json"),
               "--gold", str(tmp_path / "gold.json"), "--json")
    assert proc.returncode == 0
    metrics = json.loads(proc.stdout)
    assert metrics["accuracy"] == 0.5 and set(metrics) == {"accuracy", "f1"}
    write_outputs(tmp_path / "short.json", "LaMP-2", [Output("1", "comedy")])
    proc = run(persona_cmd, "eval", "score", "--task", "LaMP-2", "--pred", str(tmp_path / "short.json"),
               "--gold", str(tmp_path / "gold.json"))
    assert proc.returncode == 2 and "missing" in proc.stderr
    # LaMP-3 predictions that are not finite ratings score as the worst extreme, in valid JSON
    write_outputs(tmp_path / "gold3.json", "LaMP-3", [Output("1", "4"), Output("2", "2"), Output("3", "4")])
    write_outputs(tmp_path / "pred3.json", "LaMP-3", [Output("1", "1e308"), Output("2", "nan"), Output("3", "inf")])
    proc = run(persona_cmd, "eval", "score", "--task", "LaMP-3", "--pred", str(tmp_path / "pred3.json"),
               "--gold", str(tmp_path / "gold3.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"MAE": 3.0, "RMSE": 3.0}


def test_synth_and_stats(persona_cmd, tmp_path):
    proc = run(persona_cmd, "data", "synth", "--task", "LaMP-3", "--out", str(tmp_path), "--users", "12")
    assert proc.returncode == 0, proc.stderr
    stats = run(persona_cmd, "data", "stats", "--task", "LaMP-3", "--questions",
                str(tmp_path / "train_questions.json"), "--outputs", str(tmp_path / "train_outputs.json"))
    data = json.loads(stats.stdout)
    assert data["users"] == 8 and data["questions"] == 24 and set(data["label_counts"]) <= set("12345")
