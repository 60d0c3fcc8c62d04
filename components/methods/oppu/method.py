"""OPPU baseline: one LoRA (r=8 on q and v) per user, over the frozen task-adapted backbone.

Each user's adapter starts fresh and sees that user's history items only (the reference
code initialises its training list outside the per-user loop, so every adapter also
trains on all earlier users' data; this does not). One peft wrapper holds the LoRA
modules; a user's weights are swapped in before answering for that user.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from components.backbone.model import Backbone, answer_loss
from components.lamp.records import Question
from components.lamp.tasks import TaskSpec
from components.methods.base import Method, Prediction
from components.stopping import stop_if_requested


@dataclass(frozen=True)
class OppuConfig:
    rank: int = 8
    alpha: int = 8
    roles: str = "qv"
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 8
    seed: int = 0


class OppuMethod(Method):
    name = "oppu"

    def __init__(self, backbone: Backbone, cfg: OppuConfig = OppuConfig()):
        from peft import get_peft_model_state_dict

        from components.backbone.lora import add_lora

        self.cfg = cfg
        model = add_lora(copy.deepcopy(backbone.model), r=cfg.rank, alpha=cfg.alpha, dropout=0.0, roles=cfg.roles)
        self.backbone = Backbone(model, backbone.tokenizer, name=backbone.name)
        self._fresh = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
        self.adapters: dict[str, dict[str, torch.Tensor]] = {}
        self.per_user_params = sum(v.numel() for v in self._fresh.values())

    def _load(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.backbone.model, state)

    def fit_user(self, user_id: str, examples: Sequence[tuple[Question, str]]) -> float:
        """Train this user's adapter from a fresh start on this user's examples only."""
        from peft import get_peft_model_state_dict

        foreign = {q.user_key for q, _ in examples} - {user_id}
        if foreign:
            raise ValueError(f"OPPU trains a user's adapter on that user's data only; got data of {sorted(foreign)}")
        torch.manual_seed(self.cfg.seed)
        self._load(self._fresh)
        params = [p for p in self.backbone.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=0.0)
        rng = random.Random(self.cfg.seed)
        order = list(examples)
        self.backbone.model.train()
        loss_value = 0.0
        for _ in range(self.cfg.epochs):
            rng.shuffle(order)
            for i in range(0, len(order), self.cfg.batch_size):
                batch = order[i:i + self.cfg.batch_size]
                loss = answer_loss(self.backbone, [q.input for q, _ in batch], [g for _, g in batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_value = float(loss.detach())
                stop_if_requested()
        self.backbone.model.eval()
        self.adapters[user_id] = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.backbone.model).items()}
        return loss_value

    @torch.no_grad()
    def predict(self, backbone: Backbone, spec: TaskSpec, questions: Sequence[Question]) -> list[Prediction]:
        out: dict[str, Prediction] = {}
        by_user: dict[str, list[Question]] = {}
        for q in questions:
            by_user.setdefault(q.user_key, []).append(q)
        for user, qs in by_user.items():
            self._load(self.adapters.get(user, self._fresh))   # unknown users: the plain backbone
            texts = self.backbone.generate([q.input for q in qs], spec.max_new_tokens)
            for q, text in zip(qs, texts):
                out[q.id] = Prediction(q.id, text, 0, self.backbone.count_tokens(q.input))
        return [out[q.id] for q in questions]
