"""The users of the current data: their questions, their latest history, their population.

Serving reads a known user's history from here when a request brings none, and places
users `prepare` never saw; onboarding and forgetting change what is here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from components.lamp.history import latest_profile_per_user
from components.lamp.io import iter_questions
from components.lamp.records import ProfileItem, Question
from components.lamp.splits import PopulationConfig, PopulationIndex, add_profile_text
from components.lamp.tasks import TaskSpec, get_task


@dataclass
class UserData:
    """Every user of one task in the prepared data (`data/prepared/<task>/user/*`, each
    question once) and the population each was assigned."""

    spec: TaskSpec
    questions: dict[str, list[Question]]
    populations: dict[str, str]
    population_config: PopulationConfig
    _index: PopulationIndex | None = field(default=None, repr=False)

    @classmethod
    def load(cls, task: str, data_root: str | Path = "data") -> "UserData":
        spec = get_task(task)
        base = Path(data_root) / "prepared" / spec.name
        questions: dict[str, list[Question]] = defaultdict(list)
        for qfile in sorted((base / "user").glob("*_questions.json")):
            for q in iter_questions(qfile, spec):
                questions[q.user_key].append(q)
        pops_file = base / "populations.json"
        pops = json.loads(pops_file.read_text()) if pops_file.exists() else {"populations": {}, "rule": "single"}
        return cls(spec, dict(questions), pops["populations"], PopulationConfig(rule=pops.get("rule", "kmeans")))

    def __contains__(self, user: str) -> bool:
        return user in self.questions

    def profile(self, user: str) -> list[ProfileItem]:
        return latest_profile_per_user(self.questions.get(user, [])).get(user, [])

    @property
    def index(self) -> PopulationIndex:
        if self._index is None:
            text: dict[str, list[str]] = defaultdict(list)
            for user, qs in self.questions.items():
                for q in qs:
                    add_profile_text(text[user], self.spec, q.profile)
            self._index = PopulationIndex({u: " ".join(t) for u, t in text.items()}, self.populations,
                                          self.population_config)
        return self._index

    def population_of(self, user: str, profile: list[ProfileItem]) -> str:
        """The user's assigned population, or the nearest one for their profile."""
        if user in self.populations:
            return self.populations[user]
        texts: list[str] = []
        add_profile_text(texts, self.spec, profile)
        return self.index.assign(" ".join(texts))
