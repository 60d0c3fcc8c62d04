"""Fine-tuning for Attn-GS's two models.

- the **marker** (`finetune_marker`): a copy of the marking model (the task backbone,
  or the pretrained model `attn_gs.marker_source` names) whose marking layers'
  query and key projections are trained so that their attention puts a larger share on
  weakly labelled relevant items (`marker_examples`), each layer with a learned scale on
  both (a temperature of its attention, folded into the weights after training); nothing
  else changes;
- the **compressor** (`finetune`): a LoRA over a copy of the task backbone, trained with
  the answer-only loss on (compression prompt, compressed context) pairs, then merged
  into a plain model so that it loads, saves and registers like any backbone; the two
  mark tokens are added to its vocabulary and their embedding rows trained (peft's
  `trainable_token_indices`).
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from components.backbone.model import Backbone, answer_loss
from components.stopping import stop_if_requested

if TYPE_CHECKING:
    from components.config import AttnGSSettings


@dataclass(frozen=True)
class FinetuneConfig:
    rank: int = 8
    alpha: int = 16
    roles: str = "qkvo"
    steps: int = 300
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0


def _optimise(opt, params, loss: torch.Tensor, losses: list[float], bar, step: int) -> None:
    """One clipped optimiser step; the loss goes to `losses` and, every 20 steps, to the bar."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    losses.append(float(loss.detach()))
    stop_if_requested()
    if step % 20 == 0:
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")


def finetune(backbone: Backbone, prompts: Sequence[str], targets: Sequence[str], cfg: FinetuneConfig,
             new_tokens: Sequence[str] = (), progress: bool = True, desc: str = "fine-tune"
             ) -> tuple[Backbone, list[float]]:
    """A merged copy of `backbone` after `cfg.steps` LoRA steps on the pairs; the original
    is left untouched. `new_tokens` are added to the copy's tokenizer first."""
    from peft import LoraConfig, TaskType, get_peft_model
    from tqdm.auto import tqdm

    from components.backbone.lora import attention_targets

    if not prompts:
        raise ValueError("no training pairs: the split has no questions with a profile")
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(backbone.model)
    tokenizer = copy.deepcopy(backbone.tokenizer)
    token_ids: list[int] = []
    if new_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(new_tokens)})
        model.resize_token_embeddings(len(tokenizer))
        token_ids = tokenizer.convert_tokens_to_ids(list(new_tokens))
    encdec = bool(getattr(model.config, "is_encoder_decoder", False))
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0,
                      target_modules=attention_targets(model, cfg.roles),
                      task_type=TaskType.SEQ_2_SEQ_LM if encdec else TaskType.CAUSAL_LM,
                      trainable_token_indices=token_ids or None)
    peft_model = get_peft_model(model, lora)
    tuned = Backbone(peft_model, tokenizer, name=backbone.name)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rng = random.Random(cfg.seed)
    order = list(range(len(prompts)))
    losses: list[float] = []
    peft_model.train()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, mininterval=2)
    for step in bar:
        if step * cfg.batch_size % len(order) < cfg.batch_size:
            rng.shuffle(order)
        at = step * cfg.batch_size % len(order)
        idx = (order + order)[at:at + cfg.batch_size]
        _optimise(opt, params, answer_loss(tuned, [prompts[i] for i in idx], [targets[i] for i in idx]),
                  losses, bar, step)
    bar.close()
    merged = peft_model.merge_and_unload()
    merged.eval()
    return Backbone(merged, tokenizer, name=backbone.name), losses


def _content_words(text: str) -> set[str]:
    import re

    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 2}


def marker_examples(spec, pairs, limit: int, tokenize, detokenize, max_items: int = 12, seed: int = 0,
                    hide_outputs: bool = True, supervision: str = "label", bm25_top: int = 4):
    """(prompt, gold, item flags) for fine-tuning the marker: each question with a random
    subset of at most `max_items` of its profile items (chronological), flagged where the
    item's past output equals the gold answer: the weak relevance signal any LaMP
    training split has (no ground-truth sidecar is read). `label+lexical` keeps the flags
    of items that share a content word with the input; `label+bm25` those among the
    `bm25_top` shown items that BM25 ranks highest for the input (fewer, cleaner flags
    where every review shares filler words with the input: docs/attn-gs.md)."""
    from components.lamp.prompts import build_prompt
    from components.methods.attn_gs.marking import hidden_output, query_span
    from components.methods.weak_labels import lexical_top_mask

    rng = random.Random(seed)
    out = []
    for q, gold in pairs:
        if not q.profile:
            continue
        idx = sorted(rng.sample(range(len(q.profile)), min(max_items, len(q.profile))),
                     key=lambda i: (q.profile[i].date or "", i))
        items = [q.profile[i] for i in idx]
        shown = [hidden_output(spec, p) for p in items] if hide_outputs else items
        prompt = build_prompt(spec, q.input, shown, limit, tokenize, detokenize)
        flags = [str(items[i].fields.get(spec.label_field, "")).strip() == gold.strip() for i, _, _ in prompt.item_spans]
        if supervision == "label+lexical":
            query = _content_words(spec.query_text(q.input))
            flags = [f and bool(query & _content_words(spec.item_text(items[i].fields)))
                     for f, (i, _, _) in zip(flags, prompt.item_spans)]
        elif supervision == "label+bm25":
            top = lexical_top_mask(spec, [q], [items], len(items), bm25_top)[0]
            flags = [f and bool(top[i]) for f, (i, _, _) in zip(flags, prompt.item_spans)]
        out.append((prompt, gold, flags, query_span(spec, q.input, prompt.text)))
    return out


def marking_projections(model: torch.nn.Module, marking) -> list[torch.nn.Parameter]:
    """The query and key projection weights (and biases) of the marking layers: what decides
    where those layers attend."""
    return [p for module in _marking_modules(model, marking) for proj in _projections(module)
            for p in proj.parameters()]


def _marking_modules(model: torch.nn.Module, marking) -> list[torch.nn.Module]:
    """The attention modules of the marking layers."""
    from components.methods.attn_gs.marking import attention_modules, select_layers

    modules = attention_modules(model, marking.query)
    return [modules[i] for i in select_layers(len(modules), marking.layers)]


class _Scaled(torch.nn.Module):
    """A parametrization: the tensor times a learned scalar (shared by the modules given the same one)."""

    def __init__(self, scale: torch.nn.Parameter):
        super().__init__()
        self.scale = scale

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * self.scale


@contextlib.contextmanager
def learned_temperature(model: torch.nn.Module, marking):
    """Within the block, each marking layer's query and key projections (weights and biases)
    are multiplied by one learned scalar per layer, starting at 1: its attention logits
    scale by its square, so the layer can sharpen its attention in a few hundred steps
    where growing every weight takes thousands (docs/attn-gs.md). Yields the scalars; on
    exit the scale is folded into the weights, which stay plain parameters."""
    import torch.nn.utils.parametrize as parametrize

    scaled, scales = [], []
    for module in _marking_modules(model, marking):
        scale = torch.nn.Parameter(torch.ones((), device=next(module.parameters()).device))
        scales.append(scale)
        for proj in _projections(module):
            for name in ("weight", "bias"):
                if getattr(proj, name, None) is not None:
                    parametrize.register_parametrization(proj, name, _Scaled(scale))
                    scaled.append((proj, name))
    try:
        yield scales
    finally:
        with torch.no_grad():
            for proj, name in scaled:
                parametrize.remove_parametrizations(proj, name, leave_parametrized=True)


def _projections(module: torch.nn.Module) -> list[torch.nn.Module]:
    """An attention module's query and key projections."""
    from components.backbone.lora import _ROLE_NAMES

    found = []
    for role in "qk":
        proj = next((getattr(module, n) for n in _ROLE_NAMES[role] if hasattr(module, n)), None)
        if proj is None:
            raise ValueError(f"attention module {type(module).__name__} has no {role} projection")
        found.append(proj)
    return found


def finetune_marker(backbone: Backbone, spec, pairs, marking, cfg: FinetuneConfig, attention_weight: float = 1.0,
                    progress: bool = True, supervision: str = "label", answer_weight: float = 0.0,
                    temperature: bool = True) -> tuple[Backbone, list[float]]:
    """The fine-tuned marker: a copy of the task backbone whose marking layers' query and
    key projections are trained so that their attention (from the marking query) puts a
    larger share on the flagged items: those whose output is the answer (`label`), and
    that also share a content word with the input (`label+lexical`) or rank among the
    shown items' top BM25 matches (`label+bm25`). With `temperature`, each marking layer
    also learns one scale on both projections (`learned_temperature`). Loss:
    `attention_weight` x -log(share of the items' attention on the flagged items), plus
    `answer_weight` x the answer loss on the same prompts."""
    from tqdm.auto import tqdm

    from components.methods.attn_gs.marking import capture_attention, item_attention

    limit = backbone.max_length - spec.max_new_tokens - 2
    examples = [e for e in marker_examples(spec, pairs, limit, backbone.tokenize, backbone.detokenize, seed=cfg.seed,
                                           hide_outputs=marking.hide_outputs, supervision=supervision) if any(e[2])]
    if not examples:
        raise ValueError("no training prompt has an item whose output is the answer: nothing to teach the marker")
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(backbone.model)
    for p in model.parameters():
        p.requires_grad_(False)
    params = marking_projections(model, marking)
    for p in params:
        p.requires_grad_(True)
    tuned = Backbone(model, backbone.tokenizer, name=backbone.name)
    summed = type(marking)(**{**marking.__dict__, "token_pooling": "sum"})
    rng = random.Random(cfg.seed)
    losses: list[float] = []
    # eval mode while training: dropout in the frozen layers (BERT's 0.1 on attention) would only
    # add noise to what the marking layer reads, and on CPU it takes SDPA off its fast kernel
    # (the MiniLM marker's 1000 steps: 610 s in train mode, 190 s in eval; docs/attn-gs.md)
    model.eval()
    with learned_temperature(model, marking) if temperature else contextlib.nullcontext([]) as scales:
        trained = params + list(scales)
        opt = torch.optim.Adam(trained, lr=cfg.lr)
        bar = tqdm(range(cfg.steps), desc="fine-tune marker", disable=not progress, mininterval=2)
        for step in bar:
            batch = rng.sample(examples, min(cfg.batch_size, len(examples)))
            with capture_attention(model, marking.layers, marking.query, skip_rest=True) as modules:
                rows = item_attention(tuned, [e[0] for e in batch], modules, summed, [e[3] for e in batch],
                                      [e[1] for e in batch])      # query `generated`: from the gold answer
            # the share of the items' attention on the flagged items (moving mass from the
            # template and the input onto all items alike would not separate anything)
            loss = attention_weight * torch.stack([
                -torch.log((r[torch.tensor(e[2], device=r.device)].sum() / r.sum().clamp(min=1e-9)).clamp(min=1e-6))
                for r, e in zip(rows, batch)]).mean()
            if answer_weight:
                loss = loss + answer_weight * answer_loss(tuned, [e[0].text for e in batch], [e[1] for e in batch])
            _optimise(opt, trained, loss, losses, bar, step)
        bar.close()
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return tuned, losses


def train_attn_gs(backbone: Backbone, spec, pairs, settings: AttnGSSettings,
                  progress: bool = True) -> tuple[Backbone, Backbone, dict]:
    """Fine-tune the marker (from `settings.marker_source`: the task backbone, or a
    pretrained white-box model) -> mark the training profiles -> train the compressor (from
    the task backbone), as the `attn_gs` section of params.yaml (`settings`) says.
    Returns (marker, compressor, info with losses and seconds per step)."""
    import time

    from components.methods.attn_gs.marking import Marker, marker_base
    from components.methods.attn_gs.method import MARK_TOKENS, target_builder, training_pairs

    marking, marker_cfg, compressor_cfg = settings.configs()
    t0 = time.perf_counter()
    base = marker_base(settings.marker_source, backbone)
    marker, marker_losses = finetune_marker(base, spec, pairs, marking, marker_cfg, settings.attention_weight,
                                            progress, settings.marker_supervision, settings.marker_answer_weight,
                                            settings.marker_temperature)
    t1 = time.perf_counter()
    rng = random.Random(compressor_cfg.seed)
    questions = [q for q, _ in pairs if q.profile]
    questions = rng.sample(questions, min(settings.max_compressor_questions, len(questions)))
    prompts, targets = training_pairs(spec, questions, Marker(marker, marking), marking, settings.train_budgets,
                                      backbone, target_builder(settings.target), progress=progress)
    t2 = time.perf_counter()
    compressor, compressor_losses = finetune(backbone, prompts, targets, compressor_cfg, new_tokens=MARK_TOKENS,
                                             progress=progress, desc="train compressor")
    t3 = time.perf_counter()
    info = {"marker_loss_first": _mean(marker_losses[:20]), "marker_loss_last": _mean(marker_losses[-20:]),
            "compressor_loss_first": _mean(compressor_losses[:20]),
            "compressor_loss_last": _mean(compressor_losses[-20:]),
            "marker_seconds": t1 - t0, "marking_training_seconds": t2 - t1, "compressor_seconds": t3 - t2,
            "compressor_examples": len(prompts)}
    return marker, compressor, info


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
