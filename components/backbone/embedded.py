"""The embedded default backbone: the shipped reader, task-adapted here (no model hub here).

The reader (`components/backbone/reader.py`) is MiniLM's first layers as a causal LM that
has learnt in-context recall; this module *task-adapts* it the way OPPU/TAP-PER stage 1
does: the training users' questions with prompts holding k profile items drawn by a mix
(none, BM25's top k, k random, recall prompts with fresh labels, or every item that
fits), loss on the answer. `bench/backbone.py` measures what it reads.
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
from components.backbone.reader import ReaderConfig, load_reader, right_padded
from components.lamp.history import history_examples
from components.lamp.prompts import build_prompt, label_follows_text
from components.lamp.records import ProfileItem, Question
from components.lamp.tasks import TaskSpec
from components.retrieval.rankers import rank_bm25, rank_random, select_items
from components.stopping import stop_if_requested
from components.storage.checkpoints import Checkpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedConfig:
    """The `backbone.embedded` section of params.yaml."""

    max_length: int = 512
    steps: int = 300
    batch_size: int = 16
    tokens_per_microbatch: int = 4096
    lr: float = 2e-4
    warmup_steps: int = 30
    k_max: int = 8
    mix_none: float = 0.10
    mix_bm25: float = 0.30
    mix_random: float = 0.10
    mix_recall: float = 0.25           # recall prompts: BM25's best among k-1 others, fresh labels, random order
    history_examples: bool = True      # also train on profile items turned into questions
    history_share: float = 0.5
    profile_label_loss: bool = False   # also put loss on the labels inside the profile that follow their item's
                                       # text (read from it and the items before), except in recall prompts
    permute_labels: float = 0.0        # share of prompts with history whose labels are renamed by one random
                                       # permutation of the task's labels (profile and answer alike), with loss
                                       # on the profile's labels too: only reading the items answers them
    seed: int = 0


def training_context(spec: TaskSpec, q: Question, cfg: EmbeddedConfig, rng: random.Random,
                     k_max: int) -> tuple[list[ProfileItem], str | None]:
    """The profile items one training prompt shows, drawn by the mix: none, BM25's top k,
    k random, a recall prompt (`mix_recall`), or every item that fits; and the answer that
    replaces the question's gold (recall prompts only, else None)."""
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


def permuted_labels(spec: TaskSpec, items: list[ProfileItem], gold: str,
                    rng: random.Random) -> tuple[list[ProfileItem], str]:
    """`items` and `gold` with every label of the task renamed by one random permutation of
    its label set. A user's habits stay consistent within the prompt (same-theme items still
    share a label) but no label means what it meant in training: the answer, and each
    profile label after the first of its theme, can only be read from the items shown
    (the symbol-tuning idea: Wei et al. 2023, arXiv 2305.08298)."""
    labels = list(spec.labels)
    rename = dict(zip(labels, rng.sample(labels, len(labels))))
    field = spec.label_field
    items = [replace(it, fields={**it.fields, field: rename.get(it.fields.get(field), it.fields.get(field))})
             for it in items]
    return items, rename.get(gold, gold)


def _example(spec: TaskSpec, q: Question, gold: str, backbone: Backbone, cfg: EmbeddedConfig,
             rng: random.Random, k_max: int):
    """Token ids and labels of one training prompt with a randomly chosen context."""
    items, answer = training_context(spec, q, cfg, rng, k_max)
    gold = gold if answer is None else answer
    permuted = (answer is None and bool(items) and spec.label_field is not None and bool(spec.labels)
                and cfg.permute_labels > 0 and rng.random() < cfg.permute_labels)
    if permuted:
        items, gold = permuted_labels(spec, items, gold, rng)
    answer_ids = backbone.tokenize(gold) + [backbone.tokenizer.eos_token_id]
    budget = cfg.max_length - len(answer_ids) - 1
    prompt = build_prompt(spec, q.input, items, budget, backbone.tokenize, backbone.detokenize)
    ids, labels = [backbone.tokenizer.bos_token_id], [-100]
    profile_labels = (cfg.profile_label_loss or permuted) and answer is None and label_follows_text(spec)
    for text, is_label in prompt.segments:
        seg = backbone.tokenize(text)
        ids += seg
        labels += seg if is_label and profile_labels else [-100] * len(seg)
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


@dataclass
class TaskExamples:
    """What adaptation draws one task's prompts from: its training questions with their
    gold outputs, and (with `history_examples`) profile items turned into questions."""

    spec: TaskSpec
    train: list[tuple[Question, str]]
    history: list[tuple[Question, str]]


def task_examples(spec: TaskSpec, questions: Sequence[Question], golds: dict[str, str], cfg: EmbeddedConfig,
                  tokenize) -> TaskExamples:
    check_answer_budget(spec, golds, tokenize)
    train = [(q, golds[q.id]) for q in questions if q.id in golds]
    if not train:
        raise ValueError(f"no training questions with gold outputs for {spec.name}")
    return TaskExamples(spec, train, list(history_examples(spec, questions)) if cfg.history_examples else [])


def train_embedded_backbone(spec: TaskSpec, questions: Sequence[Question], golds: dict[str, str],
                            cfg: EmbeddedConfig, progress: bool = True,
                            checkpoints: Checkpoints | None = None,
                            reader: ReaderConfig = ReaderConfig()) -> tuple[Backbone, dict]:
    """Load the reader (`reader`, default the shipped one) and task-adapt it on `questions`
    (train users): `adapt` on this one task."""
    model, tokenizer = load_reader(reader, cfg.seed)
    tokenizer.model_max_length = min(cfg.max_length, model.config.max_position_embeddings)
    backbone = Backbone(model, tokenizer, name=f"embedded-{spec.name}")
    stats = adapt(backbone, [task_examples(spec, questions, golds, cfg, backbone.tokenize)], cfg, progress,
                  checkpoints)
    stats["config"]["reader"] = str(reader.directory())
    return backbone, stats


def adapt(backbone: Backbone, tasks: Sequence[TaskExamples], cfg: EmbeddedConfig, progress: bool = True,
          checkpoints: Checkpoints | None = None) -> dict:
    """Train `backbone` in place for `cfg.steps` steps of `cfg.batch_size` prompts, each
    drawn from a task chosen uniformly among `tasks`, with its context drawn by the mix;
    loss on the answer. Returns the training stats (loss curve, time, tokens per second).

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
    model, tokenizer = backbone.model, backbone.tokenizer
    names = "+".join(t.spec.name for t in tasks)
    distributed.broadcast_parameters(model, ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    total = cfg.steps

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
        log.info("resuming %s backbone training at step %d/%d", names, first, total)
    bar = tqdm(range(first, total), desc=f"backbone {names}", disable=not progress or not ctx.is_main,
               mininterval=2, initial=first, total=total)
    for step in bar:
        stop_if_requested()
        # curriculum: small k first, the maximum grows to k_max over the first half
        k_max = 2 + int((cfg.k_max - 2) * min(1.0, 2 * step / max(1, total)))
        batch = []
        for _ in range(cfg.batch_size):
            task = rng.choice(tasks)
            pool = task.history if task.history and rng.random() < cfg.history_share else task.train
            q, gold = rng.choice(pool)
            batch.append(_example(task.spec, q, gold, backbone, cfg, rng, k_max))
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
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        if checkpoints is not None and step + 1 < total:
            checkpoints.save(step + 1, lambda: {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "losses": losses,
                "tokens_seen": tokens_seen, "step": step + 1})
    model.eval()
    seconds = time.perf_counter() - start
    stats = {"history_examples": sum(len(t.history) for t in tasks), "train_seconds": seconds,
             "tokens_per_second": tokens_seen / seconds, "steps": total,
             "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
             "parameters": sum(p.numel() for p in model.parameters()),
             "vocab_size": len(tokenizer), "loss_curve": losses, "config": asdict(cfg)}
    log.info("trained %s backbone: %d params, %.0f tokens/s, final loss %.3f",
             names, stats["parameters"], stats["tokens_per_second"], stats["final_loss"])
    return stats
