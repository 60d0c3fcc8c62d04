"""Attn-GS end to end: mark -> compress -> answer with the compressed context.

`AttnGSMethod` answers a batch of questions in three steps:

1. **mark**: per question, a score per profile item (the marker's attention, or random
   scores for the random-marking baseline), and the marking rule's flags (all items for
   mark-all, none for direct summary);
2. **compress**: the compressor (backbone + LoRA, merged) reads the compression prompt
   (the task input, the budget B, the profile with the marked items wrapped in
   `<start_important>` ... `<end_important>`) and writes a context, cut to B tokens of the
   task backbone's tokenizer;
3. **answer**: the frozen task backbone answers with LaMP's prompt holding the
   compressed context in place of the profile items.

Compressed contexts are cached per (marker version, compressor version, variant, budget)
and per question content (`ContextCache`), so a second evaluation compresses nothing.
The compression target builder is pluggable (`TARGET_BUILDERS`): the demo builds targets
from the marks; a paper-scale run can supply a larger teacher model's summaries.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.backbone.model import Backbone
from components.lamp.prompts import (MARK_END, MARK_START, build_prompt, compact_item, fit_compact,
                                     prompt_with_context)
from components.lamp.records import Question
from components.lamp.tasks import TaskSpec
from components.methods.attn_gs.marking import Marker, MarkingConfig, mark, random_scores
from components.methods.base import Method, Prediction

VARIANTS = {"attention": "attn-gs", "random": "random-marking", "all": "mark-all", "none": "direct-summary"}
MARK_TOKENS = (MARK_START, MARK_END)


# --- compression prompts and targets ------------------------------------------------------

def compression_prompt(spec: TaskSpec, q: Question, flags: Sequence[bool], budget: int, compressor: Backbone,
                       ranked: Sequence[int] | None = None) -> str:
    """The compressor's input: the instruction with the budget and the task input, after the
    profile items with the marked ones wrapped. Marked items go last (next to the
    instruction) so that a profile longer than the window loses unmarked items first.
    `ranked` (the marked items as the target ranks them: `marked_by_score`,
    `marked_by_consensus`) puts them in its reverse order, the item the target puts first
    last, so that the compressor can tell which one that is (the marks alone do not say; on
    LaMP-3 at budget 8, where one item fits, ordering them by score took attn-gs@8 from MAE
    0.650 to 0.600: docs/attn-gs.md). Other items keep their dates' order."""
    ranked = list(ranked or [])
    shown_by_rank = set(ranked)
    by_date = [i for i in sorted(range(len(q.profile)), key=lambda i: (q.profile[i].date or "", i))
               if i not in shown_by_rank]
    order = [i for i in by_date if not flags[i]] + [i for i in by_date if flags[i]] + ranked[::-1]
    instruction = (f"Write this user's context for the task below in at most {budget} tokens, "
                   f"putting the important items first. Task: {q.input}")
    limit = compressor.max_length - budget - 6
    return build_prompt(spec, instruction, [q.profile[i] for i in order], limit, compressor.tokenize,
                        compressor.detokenize, marked=[bool(flags[i]) for i in order]).text


def marked_by_score(spec: TaskSpec, q: Question, scores: Sequence[float], flags: Sequence[bool]) -> list[int]:
    """The marked items, most attended first."""
    return sorted((i for i, f in enumerate(flags) if f), key=lambda i: -scores[i])


def marked_by_consensus(spec: TaskSpec, q: Question, scores: Sequence[float], flags: Sequence[bool]) -> list[int]:
    """The marked items with, first, the most attended one whose past output is what the
    marked items agree on: their median for numeric outputs (ratings), else the most
    frequent output (ties: the more attended). The rest follow by score (all of them with
    fewer than three marked items, or an item without an output). With one item in
    the budget, a single item's output is a noisy guess; the marked items' consensus is the
    summary a teacher would write ("this user rates such items 4"), kept in the words of one
    real item (docs/attn-gs.md, "The consensus target")."""
    order = marked_by_score(spec, q, scores, flags)
    outputs = [q.profile[i].fields.get(spec.label_field) if spec.label_field else None for i in order]
    if len(order) < 3 or None in outputs:
        return order
    try:
        values = sorted(float(o) for o in outputs)
        median = values[(len(values) - 1) // 2]                  # the lower median: one of the values
        agreed = next(o for o in outputs if float(o) == median)
    except ValueError:
        agreed = max(outputs, key=outputs.count)                 # max keeps the first (most attended) tie
    lead = order[outputs.index(agreed)]
    return [lead] + [i for i in order if i != lead]


Ranking = Callable[[TaskSpec, Question, Sequence[float], Sequence[bool]], list[int]]


class CompactTarget:
    """The demo's targets: the marked items in an order (`marked_by_score`,
    `marked_by_consensus`), each as its compact form (the past output in LaMP's words),
    fitted to the budget."""

    def __init__(self, order: Ranking):
        self.order = order

    def __call__(self, spec: TaskSpec, q: Question, scores: Sequence[float], flags: Sequence[bool], budget: int,
                 tokenize, detokenize) -> str:
        return fit_compact([compact_item(spec, q.profile[i]) for i in self.order(spec, q, scores, flags)],
                           budget, tokenize, detokenize)


marked_content_target = CompactTarget(marked_by_score)
marked_consensus_target = CompactTarget(marked_by_consensus)


class TeacherTargets:
    """Paper-scale targets: summaries written by a larger teacher model, one JSON object
    {question id: summary} per file, used in place of `marked_content_target`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.summaries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: cannot read teacher summaries ({exc})") from None
        if not isinstance(self.summaries, dict):
            raise ValueError(f"{self.path}: teacher summaries must be one JSON object {{question id: summary}}")

    def __call__(self, spec, q, scores, flags, budget, tokenize, detokenize) -> str:
        if q.id not in self.summaries:
            raise KeyError(f"{self.path}: no teacher summary for question {q.id!r}")
        return detokenize(tokenize(str(self.summaries[q.id]))[:budget])


TARGET_BUILDERS: dict[str, Callable] = {"marked-content": marked_content_target,
                                        "marked-consensus": marked_consensus_target}


def ranking_of(target: Callable | None) -> Ranking:
    """How a target builder ranks the marked items (the compression prompt shows them in
    that order, reversed); teacher summaries and unknown builders: by score."""
    return getattr(target, "order", marked_by_score)


def target_builder(name: str) -> Callable:
    """`marked-content`, `marked-consensus` or `teacher:<path to a JSON file of summaries>`."""
    if name.startswith("teacher:"):
        return TeacherTargets(name.split(":", 1)[1])
    if name not in TARGET_BUILDERS:
        raise ValueError(f"compression target {name!r}: use {', '.join(TARGET_BUILDERS)} or teacher:<file>")
    return TARGET_BUILDERS[name]


# --- the cache of compressed contexts ------------------------------------------------------

def question_key(q: Question) -> str:
    blob = json.dumps([q.input, [(p.id, p.fields) for p in q.profile]], sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


class ContextCache:
    """Compressed contexts on disk: `<root>/<namespace>/shard-*.json`, each shard one JSON
    object {"contexts": {question key: context}, "users": {question key: user}}, written
    atomically (one shard per batch that had to compress anything). The namespace names the
    marker, the compressor, the variant and the budget, so a new model version never reads
    another's contexts. The owners let forgetting a user drop their contexts (`remove`)."""

    def __init__(self, root: str | Path | None, namespace: str):
        self.dir = Path(root) / namespace if root is not None else None
        self.contexts: dict[str, str] = {}
        self.owners: dict[str, str] = {}
        self.hits = self.misses = 0
        if self.dir is not None and self.dir.exists():
            for shard in sorted(self.dir.glob("shard-*.json")):
                data = json.loads(shard.read_text(encoding="utf-8"))
                self.contexts.update(data.get("contexts", {}))
                self.owners.update(data.get("users", {}))

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def get(self, key: str) -> str | None:
        found = self.contexts.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put_many(self, items: dict[str, str], owners: dict[str, str] | None = None) -> None:
        self.contexts.update(items)
        self.owners.update(owners or {})
        if self.dir is None or not items:
            return
        self._write({"contexts": items, "users": {k: (owners or {}).get(k) for k in items if k in (owners or {})}})

    def _write(self, data: dict) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1("".join(sorted(data["contexts"])).encode()).hexdigest()[:16]
        tmp = self.dir / f".tmp-{name}-{os.getpid()}"
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        path = self.dir / f"shard-{name}.json"
        os.replace(tmp, path)
        return path

    def remove(self, users: set[str] = frozenset(), keys: set[str] = frozenset()) -> int:
        """Drop the contexts of these users (and of these question keys), in memory and on
        disk (the shards are rewritten as one); returns how many were dropped."""
        drop = {k for k, u in self.owners.items() if u in users} | (set(keys) & set(self.contexts))
        if not drop:
            return 0
        for k in drop:
            self.contexts.pop(k, None)
            self.owners.pop(k, None)
        if self.dir is not None:
            old = sorted(self.dir.glob("shard-*.json"))
            fresh = self._write({"contexts": self.contexts, "users": self.owners}) if self.contexts else None
            for shard in old:
                if shard != fresh:
                    shard.unlink()
        return len(drop)


def default_context_root() -> Path | None:
    """`$PERSONA_CONTEXT_CACHE` (the flows set it to `.state/contexts`); None: in memory only."""
    root = os.environ.get("PERSONA_CONTEXT_CACHE")
    return Path(root) if root else None


# --- the method ----------------------------------------------------------------------------

@dataclass
class Timings:
    marking_seconds: float = 0.0
    compression_seconds: float = 0.0
    users: set = field(default_factory=set)       # users whose contexts were computed


class AttnGSMethod(Method):
    """Attn-GS at token budget `budget`; `variant` picks the marks (see `VARIANTS`)."""

    def __init__(self, marker: Marker | None, compressor: Backbone, budget: int, variant: str = "attention",
                 marking: MarkingConfig = MarkingConfig(), versions: str = "local", cache_root=None,
                 seed: int = 0, ranking: Ranking = marked_by_score):
        if variant not in VARIANTS:
            raise ValueError(f"Attn-GS variant {variant!r}: use {', '.join(VARIANTS)}")
        if variant == "attention" and marker is None:
            raise ValueError("Attn-GS with attention marks needs a marker")
        if budget < 1:
            raise ValueError(f"token budget must be at least 1, got {budget}")
        if budget > compressor.max_length // 2:
            raise ValueError(f"token budget {budget} leaves too little of the compressor's {compressor.max_length}-"
                             f"token window for the profile it compresses: use at most {compressor.max_length // 2} "
                             "(or full-context, which needs no compressor)")
        self.marker, self.compressor, self.budget, self.variant = marker, compressor, budget, variant
        self.marking, self.seed, self.versions, self.ranking = marking, seed, versions, ranking
        self.name = f"{VARIANTS[variant]}@{budget}"
        key = f"{versions}|{variant}|{budget}|{marking}|{seed}|{ranking.__name__}"
        namespace = hashlib.sha1(key.encode()).hexdigest()[:16]
        self.cache = ContextCache(cache_root if cache_root is not None else default_context_root(), namespace)
        self.timings = Timings()

    def scores(self, spec: TaskSpec, questions: Sequence[Question]) -> list[list[float]]:
        if self.variant == "attention":
            return self.marker.score(spec, questions)
        return [random_scores(q, self.seed) for q in questions]

    def flags(self, scores: Sequence[float]) -> list[bool]:
        if self.variant == "all":
            return [True] * len(scores)
        if self.variant == "none":
            return [False] * len(scores)
        return mark(scores, self.marking)

    def contexts(self, spec: TaskSpec, questions: Sequence[Question], downstream: Backbone) -> list[str]:
        keys = [question_key(q) for q in questions]
        # no profile: no context to compress (the non-personalized prompt), and no cache lookup
        found = {k: self.cache.get(k) for q, k in zip(questions, keys) if q.profile}
        todo = [q for q, k in zip(questions, keys) if q.profile and found[k] is None]
        if todo:
            t0 = time.perf_counter()
            all_scores = self.scores(spec, todo)
            t1 = time.perf_counter()
            prompts = []
            for q, s in zip(todo, all_scores):
                flags = self.flags(s)
                prompts.append(compression_prompt(spec, q, flags, self.budget, self.compressor,
                                                  self.ranking(spec, q, s, flags)))
            raw = self.compressor.generate(prompts, self.budget + 4, batch_size=32)
            new = {question_key(q): downstream.detokenize(downstream.tokenize(text)[:self.budget]).strip()
                   for q, text in zip(todo, raw)}
            t2 = time.perf_counter()
            self.timings.marking_seconds += t1 - t0
            self.timings.compression_seconds += t2 - t1
            self.timings.users.update(q.user_key for q in todo)
            self.cache.put_many(new, {question_key(q): q.user_key for q in todo})
            found.update(new)
        return [found.get(k) or "" for k in keys]

    def predict(self, backbone: Backbone, spec: TaskSpec, questions: Sequence[Question]) -> list[Prediction]:
        contexts = self.contexts(spec, questions, backbone)
        texts = [prompt_with_context(spec, q.input, c) for q, c in zip(questions, contexts)]
        outputs = backbone.generate(texts, spec.max_new_tokens)
        return [Prediction(q.id, out, backbone.count_tokens(c), backbone.count_tokens(t))
                for q, c, t, out in zip(questions, contexts, texts, outputs)]


def training_pairs(spec: TaskSpec, questions: Sequence[Question], marker: Marker, marking: MarkingConfig,
                   budgets: Sequence[int], compressor: Backbone, target: Callable = marked_content_target,
                   batch_size: int = 16, progress: bool = True) -> tuple[list[str], list[str]]:
    """(compression prompt, target) pairs: every question marked by `marker`, once per budget."""
    from tqdm.auto import tqdm

    prompts, targets = [], []
    ranking = ranking_of(target)
    questions = [q for q in questions if q.profile]
    for start in tqdm(range(0, len(questions), batch_size), desc="mark training profiles", disable=not progress,
                      mininterval=2):
        batch = questions[start:start + batch_size]
        for q, s in zip(batch, marker.score(spec, batch)):
            flags = mark(s, marking)
            for b in budgets:
                prompts.append(compression_prompt(spec, q, flags, b, compressor, ranking(spec, q, s, flags)))
                targets.append(target(spec, q, s, flags, b, compressor.tokenize, compressor.detokenize))
    return prompts, targets
