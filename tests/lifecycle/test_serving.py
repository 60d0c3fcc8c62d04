"""Serving: the same answers as the evaluation harness, guests, flags, bad rows, and the
serving model behind the real server of `persona serve` on loopback (request limits, signals)."""

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def _rows(questions, with_profile=True):
    return [{"user_id": q.user_id, "task": "LaMP-2", "input": q.input, "date": q.date,
             **({"profile": [p.to_json() for p in q.profile]} if with_profile else {})} for q in questions]


def _test_questions(repo, n=8):
    from components.lamp.io import read_questions
    from components.lamp.splits import split_files

    return read_questions(split_files("LaMP-2", "time/test", repo / "data")[0], "LaMP-2")[:n]


@pytest.mark.parametrize("method", ["tap-per", "pplug", "attn-gs@6", "bm25-2"])
def test_served_answers_equal_the_evaluation_harness(workspace, method):
    from components.evaluation.run import EvalRequest, run_evaluation
    from components.lamp.io import read_golds
    from components.serving.service import PersonaService

    questions = _test_questions(workspace)
    out = run_evaluation(EvalRequest(method=method, task="LaMP-2", split="time/test", batch_size=8, limit=8),
                         "demo", workspace, reports=workspace / "reports", progress=False)
    harness = read_golds(out["predictions_file"])
    service = PersonaService(method, workspace, batch_size=8)
    served = service.answer(_rows(questions))
    assert [a["output"] for a in served] == [harness[q.id] for q in questions]
    assert all(a["personalized"] and a["method"] == method for a in served)
    prefix = {"bm25-2": "backbone-LaMP-2/", "attn-gs@6": "attn-gs-marker-LaMP-2/"}.get(method, f"{method}-LaMP-2-p")
    assert all(a["model_version"].startswith(prefix) for a in served)
    # a known user without a profile in the request is answered from their stored history
    stored = service.answer(_rows(questions[:2], with_profile=False))
    assert all(a["personalized"] for a in stored)


def test_guests_are_personalized_from_a_profile_or_flagged(workspace):
    from components.serving.service import PersonaService

    q = _test_questions(workspace, 1)[0]
    service = PersonaService("tap-per", workspace)
    guest = {"user_id": "guest-1", "task": "LaMP-2", "input": q.input, "profile": [p.to_json() for p in q.profile]}
    anonymous = {"user_id": "guest-2", "task": "LaMP-2", "input": q.input}
    with_profile, without = service.answer([guest, anonymous])
    assert with_profile["personalized"] and with_profile["method"] == "tap-per"
    assert with_profile["model_version"].startswith("tap-per-LaMP-2-p")
    assert not without["personalized"] and without["method"] == "non-personalized"
    assert without["model_version"].startswith("backbone-LaMP-2/")


@pytest.mark.parametrize("row, message", [
    ({"task": "LaMP-2", "input": "x"}, "request row 0, field 'user_id': missing"),
    ({"user_id": "u1", "task": "LaMP-2", "input": 5}, "field 'input': must be a non-empty string"),
    ({"user_id": "../etc", "task": "LaMP-2", "input": "x"}, "field 'user_id'"),
    ({"user_id": "u1", "task": "LaMP-9", "input": "x"}, "field 'task'"),
    ({"user_id": "u1", "task": "LaMP-2", "input": "x", "profile": "abc"}, "field 'profile': must be a list"),
    ({"user_id": "u1", "task": "LaMP-2", "input": "x", "profile": [{"id": "1", "description": "d"}]},
     "field 'profile[0].tag'"),
    ({"user_id": "u1", "task": "LaMP-2", "input": "x", "profile": [{"id": str(i), "description": "d", "tag": "t"}
                                                                   for i in range(3000)]}, "more than the limit"),
    ({"user_id": "u1", "task": "LaMP-2", "input": "x", "colour": "red"}, "field 'colour': unknown field"),
])
def test_malformed_rows_are_refused_naming_row_and_field(row, message):
    from components.serving.requests import RequestError, parse_rows

    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse_rows([row], ["LaMP-2"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, payload):
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_server_answers_like_the_service_within_its_limits(workspace, tmp_path):
    from components.serving.registry import register_serving_model, serve_command, serve_env
    from components.serving.service import PersonaService

    reg = register_serving_model("tap-per", workspace)
    assert reg["model_uri"] == "models:/serve-tap-per@champion"
    assert not register_serving_model("tap-per", workspace)["new"]          # unchanged: same version
    port = _free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(serve_command(port=port), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=serve_env(reg["model_uri"], max_rows=8, max_bytes=200_000))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(1)
        else:
            pytest.fail(f"server did not start: {log.read_text()[-3000:]}")
        rows = _rows(_test_questions(workspace, 4))
        status, body = _post(f"{url}/invocations", {"dataframe_records": rows})
        assert status == 200, body
        expected = PersonaService("tap-per", workspace).answer(rows)
        assert [p["output"] for p in body["predictions"]] == [a["output"] for a in expected]
        assert all(p["personalized"] for p in body["predictions"])
        status, body = _post(f"{url}/invocations", {"dataframe_records": [{"user_id": "u1", "task": "LaMP-2"}]})
        assert status == 400 and "request row 0, field 'input': missing" in json.dumps(body)
        status, body = _post(f"{url}/invocations", {"dataframe_records": rows * 3})      # 12 rows
        assert status == 413 and "12 rows; the limit is 8 rows" in body["message"]
        status, body = _post(f"{url}/invocations", {"dataframe_records": rows[:1], "pad": "x" * 200_000})
        assert status == 413 and "the limit is 200000 bytes" in body["message"]
        status, body = _post(f"{url}/invocations", {"dataframe_records": rows[:1]})       # still answering
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_persona_serve_registers_the_serving_model(workspace):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "flows.cli", "serve", "--method", "attn-gs@6", "--register-only"],
                         cwd=workspace, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    reg = json.loads(out.stdout)
    assert reg["name"] == "serve-attn-gs-6" and reg["model_uri"] == "models:/serve-attn-gs-6@champion"
    bad = subprocess.run([sys.executable, "-m", "flows.cli", "serve", "--method", "magic-9", "--register-only"],
                         cwd=workspace, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown baseline 'magic-9'" in bad.stderr


def test_stopping_persona_serve_stops_the_server(workspace, tmp_path):
    import signal
    import sys

    port = _free_port()
    log = tmp_path / "persona-serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--method", "bm25-2", "--port", str(port)],
                            cwd=workspace, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/ping"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(1)
        else:
            pytest.fail(f"server did not start: {log.read_text()[-3000:]}")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        with pytest.raises(OSError):                 # nothing is left answering on the port
            urllib.request.urlopen(url, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
