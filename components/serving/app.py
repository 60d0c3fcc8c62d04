"""The HTTP app `persona serve` runs under uvicorn: MLflow's own scoring app for the serving
model (`/invocations`, `/ping`, `/health`, `/version`, the same request and response formats
as `mlflow models serve`), behind limits on the size of a request.

A request over `PERSONA_SERVE_MAX_BYTES` bytes or `PERSONA_SERVE_MAX_ROWS` rows is refused
with 413 and a message naming the limit before any of it is answered, so one huge body
cannot keep the worker busy long after its client has given up.

    PERSONA_SERVE_MODEL=models:/serve-tap-per@champion \\
        uvicorn --factory components.serving.app:create_app --port 5005
"""

from __future__ import annotations

import json
import os

from components.serving.requests import MAX_REQUEST_BYTES, MAX_REQUEST_ROWS

ROW_KEYS = ("dataframe_records", "instances", "inputs")


class RequestLimits:
    """ASGI middleware: bytes (declared or streamed) and rows of a POST body, checked before
    the app sees the request."""

    def __init__(self, app, max_rows: int = MAX_REQUEST_ROWS, max_bytes: int = MAX_REQUEST_BYTES):
        self.app, self.max_rows, self.max_bytes = app, max_rows, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send, f"the body has {int(declared)} bytes; the limit is {self.max_bytes} "
                                            "bytes per request (persona serve --max-bytes)")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._refuse(send, f"the body has more than {self.max_bytes} bytes, the limit per "
                                                "request (persona serve --max-bytes)")
        rows = count_rows(body)
        if rows > self.max_rows:
            return await self._refuse(send, f"the request has {rows} rows; the limit is {self.max_rows} rows per "
                                            "request (persona serve --max-rows): split it into batches")
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send, message: str):
        payload = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": message}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def count_rows(body: bytes) -> int:
    """Rows of a JSON scoring request (`dataframe_records`, `dataframe_split.data`,
    `instances`, `inputs`); 0 for anything else (the scoring app then says what is wrong)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return 0
    if not isinstance(payload, dict):
        return 0
    split = payload.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("data"), list):
        return len(split["data"])
    return next((len(payload[k]) for k in ROW_KEYS if isinstance(payload.get(k), list)), 0)


def create_app():
    """The scoring app for `$PERSONA_SERVE_MODEL` within `$PERSONA_SERVE_MAX_ROWS` and
    `$PERSONA_SERVE_MAX_BYTES` (defaults in `components/serving/requests.py`)."""
    from mlflow.pyfunc import scoring_server

    app = scoring_server.init(scoring_server.load_model_with_mlflow_config(os.environ["PERSONA_SERVE_MODEL"]))
    return RequestLimits(app, int(os.environ.get("PERSONA_SERVE_MAX_ROWS", MAX_REQUEST_ROWS)),
                         int(os.environ.get("PERSONA_SERVE_MAX_BYTES", MAX_REQUEST_BYTES)))
