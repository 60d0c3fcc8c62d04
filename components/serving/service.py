"""One method served for every task: rows `{user_id, task, input, profile?}` -> answers.

`PersonaService` is what the serving pyfunc (`model.py`) and the latency benchmark call.
Per task it loads, on the first request that needs it, the backbone, the method exactly
as the evaluation harness builds it (`build_method`: the population champions of TAP-PER
and PPlug with their P_u tables, Attn-GS's marker and compressor with the compressed-
context cache, or a baseline), the current users (their histories and populations) and
the non-personalized fallback.

Who gets what:
* a known user (in the current data) without a profile in the request: their stored history;
* any user with a profile: that profile (an unknown user is placed in the nearest population;
  TAP-PER gives them the population's mean P_u plus P_q from the profile; PPlug and Attn-GS
  need nothing else);
* an unknown user without a profile: the non-personalized answer, `personalized: false`.

When the data version changes (a user onboarded or forgotten: `dvc.lock` is rewritten) the
next request reloads the task's state, so a running server forgets too.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from components.serving.requests import ServeRequest, parse_rows

log = logging.getLogger(__name__)


@dataclass
class TaskState:
    spec: object
    backbone: object
    backbone_uri: str
    method: object
    fallback: object
    users: object
    loaded_seconds: float


class PersonaService:
    def __init__(self, method: str, repo: str | Path = ".", profile_name: str | None = None,
                 batch_size: int = 16, tasks: list[str] | None = None):
        from components.config import load_profile

        self.method_name, self.repo, self.batch_size = method, Path(repo).resolve(), batch_size
        self.profile = load_profile(profile_name, self.repo / "params.yaml")
        self.tasks = tasks or list(self.profile.tasks)
        self._states: dict[str, TaskState] = {}
        self._data_stamp = self._stamp()
        self._lock = threading.Lock()      # the scoring server may call predict from several threads

    # --- state --------------------------------------------------------------------------------

    def _stamp(self) -> tuple:
        lock = self.repo / "dvc.lock"
        return (lock.stat().st_mtime_ns, lock.stat().st_size) if lock.exists() else (0, 0)

    def _state(self, task: str) -> TaskState:
        stamp = self._stamp()
        if stamp != self._data_stamp:          # onboarding or forgetting wrote a new data version
            log.info("data version changed: reloading users and models")
            self._states.clear()
            self._data_stamp = stamp
        if task not in self._states:
            self._states[task] = self._load(task)
        return self._states[task]

    def _load(self, task: str) -> TaskState:
        from components.lamp.tasks import get_task
        from components.lamp.users import UserData
        from components.methods import build_method
        from components.methods.baselines import make_baseline
        from components.tracking import mlflow_tracking

        t0 = time.perf_counter()
        spec = get_task(task)
        mlflow_tracking.configure(self.repo)
        backbone, uri = mlflow_tracking.resolve_backbone(spec.name, None, self.repo)
        method = build_method(self.method_name, task=spec.name, backbone=backbone, repo=str(self.repo),
                              profile=self.profile, num_beams=self.profile.evaluation.num_beams)
        if hasattr(method, "methods"):        # TAP-PER: users without a P_u row are served as guests
            for m in method.methods.values():
                if hasattr(m, "guests"):
                    m.guests = True
        users = UserData.load(spec.name, self.repo / "data")
        state = TaskState(spec, backbone, uri, method, make_baseline("non-personalized"), users,
                          time.perf_counter() - t0)
        log.info("serving %s on %s: loaded in %.1f s (%d users)", self.method_name, spec.name,
                 state.loaded_seconds, len(users.questions))
        return state

    # --- answering ----------------------------------------------------------------------------

    def answer(self, rows: list[dict]) -> list[dict]:
        """Answers in the order of `rows`; a malformed row raises `RequestError` before any work."""
        requests = parse_rows(rows, self.tasks)
        out: list[dict | None] = [None] * len(requests)
        with self._lock:
            by_task: dict[str, list[ServeRequest]] = {}
            for r in requests:
                by_task.setdefault(r.task, []).append(r)
            for task, reqs in by_task.items():
                for start in range(0, len(reqs), self.batch_size):
                    for r, answer in zip(reqs[start:start + self.batch_size],
                                         self._answer_batch(self._state(task), reqs[start:start + self.batch_size])):
                        out[r.row] = answer
        return out

    def _answer_batch(self, st: TaskState, reqs: list[ServeRequest]) -> list[dict]:
        personal, guests = [], []
        for r in reqs:
            profile = r.profile if r.profile is not None else st.users.profile(r.user_id)
            known = r.user_id in st.users
            (personal if known or profile else guests).append((r, r.question(profile), known))
        answers: dict[int, dict] = {}
        if guests:
            preds = st.fallback.predict(st.backbone, st.spec, [q for _, q, _ in guests])
            for (r, _, _), p in zip(guests, preds):
                answers[r.row] = {"output": p.output, "personalized": False, "method": "non-personalized",
                                  "model_version": st.backbone_uri.removeprefix("models:/")}
        if personal:
            questions = [q for _, q, _ in personal]
            if hasattr(st.method, "predict_routed"):      # one model per population
                routes = [st.users.population_of(r.user_id, q.profile) for r, q, _ in personal]
                preds = st.method.predict_routed(st.backbone, st.spec, questions, routes)
                versions = [st.method.versions.get(p, "") for p in routes]
            else:
                preds = st.method.predict(st.backbone, st.spec, questions)
                version = getattr(st.method, "versions", None) or st.backbone_uri
                versions = [version.replace("models:/", "")] * len(preds)
            for (r, q, known), p, v in zip(personal, preds, versions):
                has_state = known and st.method.per_user_params > 0
                answers[r.row] = {"output": p.output, "personalized": bool(q.profile) or has_state,
                                  "method": self.method_name, "model_version": v}
        return [answers[r.row] for r in reqs]
