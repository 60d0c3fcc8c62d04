"""The one interface every personalization method implements.

Evaluation, flows, the registry and serving only ever call `predict` (and read the
accounting attributes); they never ask which method they hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from components.backbone.model import Backbone
from components.lamp.records import Question
from components.lamp.tasks import TaskSpec


@dataclass
class Prediction:
    id: str
    output: str
    context_tokens: int = 0     # tokens of user context in the prompt (soft tokens count as 1 each)
    prompt_tokens: int = 0      # all prompt tokens given to the backbone
    items_dropped: int = 0      # items chosen for the prompt that did not fit the window (oldest first)


class Method(ABC):
    """A way to answer a user's question with that user's history."""

    name: str = "method"
    per_user_params: int = 0    # trainable scalars stored per user (0 for retrieval baselines)

    @abstractmethod
    def predict(self, backbone: Backbone, spec: TaskSpec, questions: Sequence[Question]) -> list[Prediction]:
        """Answer one batch of questions."""
