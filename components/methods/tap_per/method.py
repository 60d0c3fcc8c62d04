"""TAP-PER behind the common `Method` interface, and its on-disk form.

A population model is a directory:
    prefix.safetensors   the shared prefix modules AND the P_u table (one file, not a file per user)
    users.json           user id -> row of P_u, plus the TAP-PER config
    bridge/              the bridge LoRA adapter (peft `save_pretrained`, safetensors)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from components.backbone.model import Backbone
from components.lamp.records import Question
from components.lamp.tasks import TaskSpec
from components.methods.base import Method, Prediction
from components.methods.tap_per.model import STANDARDISATION_BUFFERS, TapPerConfig, TapPerPrefix
from components.methods.tap_per.train import features
from components.stopping import stop_if_requested
from components.storage.files import write_json_atomic


class UnknownUserError(KeyError):
    pass


class TapPerMethod(Method):
    name = "tap-per"

    def __init__(self, bridged: Backbone, prefix: TapPerPrefix, index: dict[str, int], max_records: int = 32,
                 guests: bool = False):
        self.bridged, self.prefix, self.index, self.max_records = bridged, prefix, index, max_records
        self.guests = guests         # serving: a user without a P_u row gets the population mean + P_q
        self.per_user_params = prefix.per_user_parameters()

    def rows_for(self, questions: Sequence[Question]) -> torch.Tensor:
        missing = [q.user_key for q in questions if q.user_key not in self.index]
        if missing and self.guests:
            return torch.tensor([self.index.get(q.user_key, -1) for q in questions], dtype=torch.long)
        if missing:
            raise UnknownUserError(f"user {missing[0]!r} is not in this population's index "
                                   f"({len(self.index)} users); onboard it first")
        return torch.tensor([self.index[q.user_key] for q in questions], dtype=torch.long)

    @torch.no_grad()
    def predict(self, backbone: Backbone, spec: TaskSpec, questions: Sequence[Question]) -> list[Prediction]:
        self.prefix.eval()
        feats = features(self.bridged, spec, questions, self.max_records, self.prefix.cfg)
        prefix = self.prefix(self.rows_for(questions), *feats)
        prompts = [q.input for q in questions]
        outputs = self.bridged.generate(prompts, spec.max_new_tokens, prefix=prefix)
        L = self.prefix.cfg.prefix_length
        return [Prediction(q.id, out, L, L + self.bridged.count_tokens(p))
                for q, p, out in zip(questions, prompts, outputs)]

    def save(self, out_dir: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.prefix.state_dict().items()}
        save_file(state, str(out / "prefix.safetensors"))
        self.bridged.model.save_pretrained(out / "bridge")
        write_json_atomic(out / "users.json", {"config": asdict(self.prefix.cfg), "hidden_size": self.prefix.hidden_size,
                                               "max_records": self.max_records, "users": self.index})
        return out

    @classmethod
    def load(cls, directory: str | Path, backbone: Backbone) -> "TapPerMethod":
        """Rebuild on a *fresh* frozen backbone (the bridge adapter is attached to it)."""
        from peft import PeftModel
        from safetensors.torch import load_file

        d = Path(directory)
        meta = json.loads((d / "users.json").read_text())
        cfg = TapPerConfig(**meta["config"])
        prefix = TapPerPrefix(meta["hidden_size"], len(meta["users"]), cfg)
        # models saved before standardisation existed have no statistics: identity, as they were trained
        missing, unexpected = prefix.load_state_dict(load_file(str(d / "prefix.safetensors")), strict=False)
        if unexpected or set(missing) - STANDARDISATION_BUFFERS:
            raise ValueError(f"{d / 'prefix.safetensors'} does not match its users.json config: missing "
                             f"{sorted(set(missing) - STANDARDISATION_BUFFERS)}, unexpected {sorted(unexpected)}")
        model = PeftModel.from_pretrained(backbone.model, d / "bridge")
        bridged = Backbone(model.eval(), backbone.tokenizer, name=backbone.name)
        return cls(bridged, prefix.eval(), meta["users"], meta["max_records"])


def add_user(method: TapPerMethod, user_id: str) -> int:
    """Give a new user a P_u row, initialised to the population mean; returns the row."""
    if user_id in method.index:
        return method.index[user_id]
    table = method.prefix.user_prefix
    grown = torch.nn.Embedding(table.num_embeddings + 1, table.embedding_dim)
    with torch.no_grad():
        grown.weight[:-1] = table.weight
        grown.weight[-1] = table.weight.mean(0)
    method.prefix.user_prefix = grown
    method.index[user_id] = grown.num_embeddings - 1
    return method.index[user_id]


def remove_users_from_dir(directory: str | Path, users: set[str]) -> list[str]:
    """Forgetting: rewrite a saved population model without these users' P_u rows (the table
    shrinks, later rows move up, so nothing of a removed row remains). Returns who was removed."""
    from safetensors.torch import load_file, save_file

    d = Path(directory)
    meta = json.loads((d / "users.json").read_text())
    gone = sorted(u for u in users if u in meta["users"])
    if not gone:
        return []
    state = load_file(str(d / "prefix.safetensors"))
    drop = {meta["users"][u] for u in gone}
    keep = [r for r in range(state["user_prefix.weight"].shape[0]) if r not in drop]
    state["user_prefix.weight"] = state["user_prefix.weight"][keep].contiguous()
    new_row = {old: new for new, old in enumerate(keep)}
    meta["users"] = {u: new_row[r] for u, r in meta["users"].items() if r in new_row}
    save_file(state, str(d / "prefix.safetensors"))
    write_json_atomic(d / "users.json", meta)
    return gone


def fit_user(method: TapPerMethod, spec: TaskSpec, user_id: str, examples: Sequence[tuple[Question, str]],
             epochs: int = 3, lr: float = 1e-2, batch_size: int = 8) -> dict:
    """Online update: fit only this user's P_u with everything shared frozen.

    Other users' rows get exactly zero gradient and a fresh Adam state, so they do not move
    and their outputs stay identical."""
    import time

    from components.backbone.model import prefix_loss

    start = time.perf_counter()
    row = add_user(method, user_id)
    frozen = [p for p in list(method.bridged.model.parameters()) + list(method.prefix.parameters())]
    flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    table = method.prefix.user_prefix.weight
    table.requires_grad_(True)
    opt = torch.optim.Adam([table], lr=lr)
    method.bridged.model.eval()
    losses = []
    try:
        for _ in range(epochs):
            for i in range(0, len(examples), batch_size):
                batch = examples[i:i + batch_size]
                qs = [q for q, _ in batch]
                feats = features(method.bridged, spec, qs, method.max_records, method.prefix.cfg)
                rows = torch.full((len(qs),), row, dtype=torch.long)
                loss = prefix_loss(method.bridged, method.prefix(rows, *feats), [q.input for q in qs],
                                   [g for _, g in batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                stop_if_requested()
    finally:
        for p, flag in zip(frozen, flags):
            p.requires_grad_(flag)
    return {"user": user_id, "row": row, "examples": len(examples), "seconds": time.perf_counter() - start,
            "final_loss": losses[-1] if losses else None}
