"""The embedded default backbone: built and trained locally (no model hub here).

Recipe (measured in `shared/reference/embedded-backbone-notes.md`, re-measured by
`bench/backbone.py`): a word-level tokenizer trained with `tokenizers` on the task's
corpus; a small Llama-style decoder; phase 1 trains it as a language model on prompts
built from the corpus, phase 2 *task-adapts* it the way OPPU/TAP-PER stage 1 does: the
training users' questions with prompts holding k retrieved profile items (k=0 included),
loss on the answer and on every past label inside the profile.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch

from components.backbone.checks import check_answer_budget
from components.backbone.model import Backbone
from components.backbone.reader import right_padded
from components.lamp.history import history_examples
from components.lamp.prompts import build_prompt
from components.lamp.records import ProfileItem, Question
from components.lamp.tasks import TASKS, TaskSpec
from components.retrieval.rankers import rank_bm25, rank_random, select_items
from components.storage.checkpoints import Checkpoints

log = logging.getLogger(__name__)
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]


@dataclass(frozen=True)
class EmbeddedConfig:
    """The `backbone.embedded` section of params.yaml."""

    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 512
    max_length: int = 512
    lm_steps: int = 100
    task_steps: int = 700
    batch_size: int = 16
    tokens_per_microbatch: int = 4096
    lr: float = 2e-3
    warmup_steps: int = 30
    k_max: int = 8
    mix_none: float = 0.10
    mix_bm25: float = 0.45
    mix_random: float = 0.25
    mix_planted: float = 0.0           # BM25's best item among k-1 random others; the rest: every item that fits
    profile_label_loss: bool = True
    planted_shuffle: bool = False      # planted prompts in random order instead of date order
    mix_recall: float = 0.0            # recall prompts: BM25's best among k-1 others, fresh labels, random order
    history_examples: bool = True      # also train on profile items turned into questions
    history_share: float = 0.5
    seed: int = 0


def build_tokenizer(corpus: Sequence[str], max_length: int):
    """A word-level tokenizer over whitespace-separated words (quotes split off)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split('"', behavior="isolated")])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1))
    bos = tok.token_to_id("<bos>")             # prompts start with <bos>, as in training
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                        special_tokens=[("<bos>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", model_max_length=max_length)
    fast.padding_side = "left"
    return fast


def build_model(vocab_size: int, cfg: EmbeddedConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        intermediate_size=cfg.intermediate_size, max_position_embeddings=cfg.max_length,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def corpus_of(spec: TaskSpec, questions: Sequence[Question], golds: dict[str, str]) -> list[str]:
    texts = [t.input_template for t in TASKS.values()] + ["<empty>"]
    texts += ["the tag for the movie: is , and . Following the given patterns are written by a person",
              "is the score for is the title for is a title for the category for the article:"]
    seen: set[str] = set()
    for q in questions:
        texts.append(q.input)
        texts.append(golds.get(q.id, ""))
        for p in q.profile:
            if p.id not in seen:
                seen.add(p.id)
                texts.extend(p.fields.values())
    texts += list(spec.labels)
    return texts


def training_context(spec: TaskSpec, q: Question, cfg: EmbeddedConfig, rng: random.Random,
                     k_max: int) -> tuple[list[ProfileItem], str | None]:
    """The profile items one training prompt shows, drawn by the mix: none, BM25's top k,
    k random, BM25's best among k-1 random others (`mix_planted`), a recall prompt
    (`mix_recall`), or every item; and the answer that replaces the question's gold
    (recall prompts only, else None)."""
    r = rng.random()
    k = rng.randint(1, max(1, k_max))
    if r < cfg.mix_none or not q.profile:
        return [], None
    bound = cfg.mix_none + cfg.mix_bm25
    if r < bound:
        return select_items(q.profile, rank_bm25(spec, q), k), None
    bound += cfg.mix_random
    if r < bound:
        return select_items(q.profile, rank_random(spec, q, seed=rng.randrange(1 << 30)), k), None
    bound += cfg.mix_planted
    if r < bound:
        best = rank_bm25(spec, q)[0]
        others = rank_random(spec, q, seed=rng.randrange(1 << 30))
        items = select_items(q.profile, [best] + [i for i in others if i != best], k)
        if cfg.planted_shuffle:
            rng.shuffle(items)
        return items, None
    bound += cfg.mix_recall
    if r < bound:
        return recall_context(spec, q, rng, k)
    return select_items(q.profile, list(range(len(q.profile))), None), None


def recall_context(spec: TaskSpec, q: Question, rng: random.Random, k: int) -> tuple[list[ProfileItem], str | None]:
    """An associative-recall prompt: BM25's best item for the input among k-1 other items
    drawn from the half of the profile least like the input (at least 2 items in all), in
    random order, each relabelled with a different label of the task drawn afresh; the
    answer is the best item's new label. No vote, recency or memorised label predicts it,
    only matching the input against the items' texts does; others drawn from the whole
    profile can share the input's theme under another label, which makes the answer a guess
    (docs/embedded-backbone.md). Tasks without a closed label set, and profiles of one item,
    get BM25's top k instead."""
    if spec.label_field is None or not spec.labels or len(q.profile) < 2:
        return select_items(q.profile, rank_bm25(spec, q), k), None
    ranking = rank_bm25(spec, q)
    best, unlike = ranking[0], set(ranking[max(1, len(ranking) // 2):])
    k = max(2, min(k, len(spec.labels), len(unlike) + 1))
    chosen = [best] + [i for i in rank_random(spec, q, seed=rng.randrange(1 << 30)) if i in unlike][: k - 1]
    labels = rng.sample(list(spec.labels), k)
    items = [replace(q.profile[i], fields={**q.profile[i].fields, spec.label_field: label})
             for i, label in zip(chosen, labels)]
    rng.shuffle(items)
    return items, labels[0]


def _example(spec: TaskSpec, q: Question, gold: str, backbone: Backbone, cfg: EmbeddedConfig,
             rng: random.Random, k_max: int, lm: bool):
    """Token ids and labels of one training prompt with a randomly chosen context."""
    items, answer = training_context(spec, q, cfg, rng, k_max)
    gold = gold if answer is None else answer
    answer_ids = backbone.tokenize(gold) + [backbone.tokenizer.eos_token_id]
    budget = cfg.max_length - len(answer_ids) - 1
    prompt = build_prompt(spec, q.input, items, budget, backbone.tokenize, backbone.detokenize)
    ids, labels = [backbone.tokenizer.bos_token_id], [-100]
    for text, is_label in prompt.segments:
        seg = backbone.tokenize(text)
        ids += seg
        labels += seg if (lm or (is_label and cfg.profile_label_loss)) else [-100] * len(seg)
    ids += answer_ids
    labels += answer_ids
    return ids, labels


def _length_buckets(examples, tokens_per_microbatch: int):
    """Sort by length and cut into micro-batches of bounded padded size: one long
    full-context prompt no longer pads fifteen short ones to 512 tokens."""
    examples = sorted(examples, key=lambda e: len(e[0]))
    bucket: list = []
    for ex in examples:
        if bucket and len(ex[0]) * (len(bucket) + 1) > tokens_per_microbatch:
            yield bucket
            bucket = []
        bucket.append(ex)
    if bucket:
        yield bucket


def train_embedded_backbone(spec: TaskSpec, questions: Sequence[Question], golds: dict[str, str],
                            cfg: EmbeddedConfig, progress: bool = True,
                            checkpoints: Checkpoints | None = None) -> tuple[Backbone, dict]:
    """Build the tokenizer and model from scratch and train them on `questions` (train users).

    Under `torchrun` every rank builds the same batch, trains on its slice, and the gradients
    are summed across ranks: the update equals the single-process one (`components.distributed`).

    With `checkpoints`, the whole training state (weights, optimizer, schedule, random
    generators, step) is saved every few steps and on a stop request; a run that finds it
    resumes from that step and ends with the same weights as an uninterrupted run."""
    from tqdm.auto import tqdm

    from components import distributed

    ctx = distributed.init()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tokenizer = build_tokenizer(corpus_of(spec, questions, golds), cfg.max_length)
    model = build_model(len(tokenizer), cfg, tokenizer)
    backbone = Backbone(model, tokenizer, name=f"embedded-{spec.name}")
    check_answer_budget(spec, golds, backbone.tokenize)
    train = [(q, golds[q.id]) for q in questions if q.id in golds]
    if not train:
        raise ValueError(f"no training questions with gold outputs for {spec.name}")
    from_history = list(history_examples(spec, questions)) if cfg.history_examples else []
    distributed.broadcast_parameters(model, ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    total = cfg.lm_steps + cfg.task_steps

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses, tokens_seen, start, first = [], 0, time.perf_counter(), 0
    state = checkpoints.restore() if checkpoints is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        losses, tokens_seen, first = state["losses"], state["tokens_seen"], state["step"]
        log.info("resuming %s backbone training at step %d/%d", spec.name, first, total)
    bar = tqdm(range(first, total), desc=f"backbone {spec.name}", disable=not progress or not ctx.is_main,
               mininterval=2, initial=first, total=total)
    for step in bar:
        lm = step < cfg.lm_steps
        # curriculum: small k first, the maximum grows to k_max over the task phase
        frac = 0.0 if lm else (step - cfg.lm_steps) / max(1, cfg.task_steps)
        k_max = 2 + int((cfg.k_max - 2) * min(1.0, 2 * frac))
        picks = [rng.choice(from_history) if from_history and rng.random() < cfg.history_share else rng.choice(train)
                 for _ in range(cfg.batch_size)]
        batch = [_example(spec, q, gold, backbone, cfg, rng, k_max, lm) for q, gold in picks]
        opt.zero_grad(set_to_none=True)
        loss_value, n_tokens = 0.0, 0
        total_labels = sum(sum(1 for x in lab[1:] if x != -100) for _, lab in batch)
        for micro in _length_buckets(distributed.shard(batch, ctx), cfg.tokens_per_microbatch):
            padded = right_padded(micro, tokenizer.pad_token_id)
            n_labels = int((padded["labels"][:, 1:] != -100).sum())
            loss = model(**padded).loss * (n_labels / total_labels)
            loss.backward()
            loss_value += float(loss.detach())
            n_tokens += int(padded["attention_mask"].sum())
        distributed.reduce_gradients(model.parameters(), ctx, average=False)   # losses are pre-scaled
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        tokens_seen += distributed.all_sum(n_tokens, ctx)
        losses.append(distributed.all_sum(loss_value, ctx))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}", phase="lm" if lm else "task")
        if checkpoints is not None and step + 1 < total:
            checkpoints.save(step + 1, lambda: {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "losses": losses,
                "tokens_seen": tokens_seen, "step": step + 1})
    model.eval()
    seconds = time.perf_counter() - start
    stats = {"history_examples": len(from_history), "train_seconds": seconds, "tokens_per_second": tokens_seen / seconds, "steps": total,
             "final_loss": sum(losses[-50:]) / len(losses[-50:]), "parameters": sum(p.numel() for p in model.parameters()),
             "vocab_size": len(tokenizer), "loss_curve": losses, "config": asdict(cfg)}
    log.info("trained %s backbone: %d params, %.0f tokens/s, final loss %.3f",
             spec.name, stats["parameters"], stats["tokens_per_second"], stats["final_loss"])
    return backbone, stats
