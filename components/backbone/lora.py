"""LoRA over `peft`, targeted by the module names a backbone really has.

Reference code for OPPU/TAP-PER targets `out_proj`, which matches nothing in Llama;
`attention_targets` looks the names up instead of assuming them.
"""

from __future__ import annotations

import torch

# attention projection names by role, per architecture family
_ROLE_NAMES = {
    "q": ("q_proj", "q", "query"),
    "k": ("k_proj", "k", "key"),
    "v": ("v_proj", "v", "value"),
    "o": ("o_proj", "o", "out_proj", "dense"),
}


def attention_targets(model: torch.nn.Module, roles: str = "qv") -> list[str]:
    """The leaf names of the attention projections for `roles` (e.g. "qv", "qkvo")."""
    leaves = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
              if isinstance(mod, torch.nn.Linear) and ("attn" in name or "attention" in name.lower()
                                                       or "SelfAttention" in name or "EncDecAttention" in name)}
    targets = []
    for role in roles:
        found = [n for n in _ROLE_NAMES[role] if n in leaves]
        if not found:
            raise ValueError(f"no attention projection for role {role!r} among {sorted(leaves)}")
        targets.append(found[0])
    if not targets and any("c_attn" in n for n, _ in model.named_modules()):
        targets = ["c_attn"]                     # GPT-2 fuses q/k/v
    return targets


def add_lora(model: torch.nn.Module, r: int = 8, alpha: int = 8, dropout: float = 0.05,
             roles: str = "qv", adapter_name: str = "default"):
    """Wrap `model` with a fresh LoRA adapter on its attention projections."""
    from peft import LoraConfig, TaskType, get_peft_model

    task_type = TaskType.SEQ_2_SEQ_LM if getattr(model.config, "is_encoder_decoder", False) else TaskType.CAUSAL_LM
    try:
        targets = attention_targets(model, roles)
    except ValueError:
        if any(n.endswith("c_attn") for n, _ in model.named_modules()):
            targets = ["c_attn"]
        else:
            raise
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type=task_type)
    return get_peft_model(model, cfg, adapter_name=adapter_name)


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
