"""Benchmark: can a small transformer learn fuzzy in-context recall on LaMP-shaped prompts?

The capability the demo backbone lacks, isolated from the rest of the pipeline. Each prompt
shows k items written as LaMP-2's profile ("the tag for the movie: "<text>" is "<label>"")
with texts from the synthetic generator's real words (`components/lamp/words.py`: theme
words among fillers), every item on another theme and with a label drawn afresh; then a
query text on one item's theme. The answer is that item's label, which only matching the
query against the items' texts gives (chance 1/k). `--exact` makes the first share of the
steps exact recall instead (one theme word per item and query): the easy version that
attention models are known to learn (multi-query associative recall, Zoology).

Prints held-out recall (1,000 fresh prompts; with `--exact`, exact recall too) every
`--every` steps, as JSON lines. `--probe` measures instead whether the untrained model's
attention already favours the matching item (a signal training could start from).

    python bench/recall.py --arch llama --layers 2 --steps 2000
    python bench/recall.py --arch t5 --order label-first --queries 4 --exact 0.2
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from components.backbone.reader import minilm_path, recall_accuracy  # noqa: E402
from components.lamp.words import FILLERS, STYLES, THEMES  # noqa: E402

TEMPLATE = ["the", "tag", "for", "the", "movie:"]
SPECIALS = ["<pad>", "<bos>", "<eos>", '"', "is", "description:", "answer:", ";"]


class Prompts:
    """Random recall prompts, as token ids: a word-level vocabulary (one token per word) for
    models built here, the pretrained WordPiece vocabulary for `--arch minilm`, the reader's
    cut WordPiece vocabulary for `--arch minilm-causal`."""

    def __init__(self, args, tokenizer=None):
        self.args = args
        self.labels = list(STYLES[:args.labels])
        self.vocab = SPECIALS + sorted(set(TEMPLATE)) + [w for t in THEMES for w in t] + list(FILLERS) + self.labels
        if tokenizer is None:
            index = {w: i for i, w in enumerate(self.vocab)}
            self.ids = lambda w: [index[w]]
            self.sep = index[";"]
        else:
            special = {"<bos>": [tokenizer.cls_token_id], "<pad>": [tokenizer.pad_token_id]}
            self.ids = lambda w: special.get(w) or tokenizer(w, add_special_tokens=False)["input_ids"]
            self.sep = self.ids(";")[0]

    def text(self, theme: int, rng: random.Random, exact: bool) -> list[str]:
        if exact:
            return [THEMES[theme][0]]
        n = rng.randint(*self.args.words)
        words = rng.sample(THEMES[theme], self.args.theme_words)
        words += [rng.choice(FILLERS) for _ in range(n - len(words))]
        rng.shuffle(words)
        return words

    def example(self, rng: random.Random, exact: bool, queries: int):
        """(context ids, [(query ids, answer id, (start, end) of the answer's item in the context)])."""
        k = self.args.k
        themes, labels = rng.sample(range(len(THEMES)), k), rng.sample(self.labels, k)
        tokens = lambda words: [t for w in words for t in self.ids(w)]  # noqa: E731
        context, spans = tokens(["<bos>"]), []
        order = self.args.order if self.args.order != "mixed" else rng.choice(["label-first", "label-last"])
        for theme, label in zip(themes, labels):
            if self.args.compact:                       # MQAR's layout: the text, then its label
                text = self.text(theme, rng, exact)
                item = tokens([label] + text if order == "label-first" else text + [label])
            else:
                body = TEMPLATE + ['"'] + self.text(theme, rng, exact) + ['"']
                item = tokens(['"', label, '"', "is"] + body if order == "label-first"
                              else body + ["is", '"', label, '"'])
            spans.append((len(context), len(context) + len(item)))
            context += item
        asked = []
        for _ in range(queries):
            j = rng.randrange(k)
            q = tokens(self.text(themes[j], rng, exact) if self.args.compact
                       else ["description:"] + self.text(themes[j], rng, exact) + ["answer:"])
            asked.append((q, self.ids(labels[j])[0], spans[j]))
        return context, asked


def build_model(args, vocab_size: int, tokenizer=None):
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    if args.arch == "minilm":                  # bert2bert: a warm start from the packaged MiniLM
        from transformers import EncoderDecoderModel

        path = minilm_path()
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(
            path, path, encoder_num_hidden_layers=args.layers,
            decoder_num_hidden_layers=args.decoder_layers or args.layers)
        model.config.decoder_start_token_id = tokenizer.cls_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
        return model
    if args.arch == "llama":
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab_size, hidden_size=args.d, num_hidden_layers=args.layers, num_attention_heads=args.heads,
            num_key_value_heads=args.heads, intermediate_size=4 * args.d, max_position_embeddings=1024,
            tie_word_embeddings=True))
    return T5ForConditionalGeneration(T5Config(
        vocab_size=vocab_size, d_model=args.d, d_kv=args.d // args.heads, d_ff=4 * args.d, num_layers=args.layers,
        num_decoder_layers=args.decoder_layers or args.layers, num_heads=args.heads, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=2, decoder_start_token_id=0, feed_forward_proj="gated-gelu"))


def minilm_embeddings(vocab: list[str], d: int, std: float = 0.02) -> torch.Tensor:
    """One row per word: the packaged MiniLM's static input embedding of the word (mean of
    its WordPiece pieces), centred, projected on its top-d principal directions and scaled
    to the model's initial spread: words of a theme start close together."""
    from transformers import AutoModel, AutoTokenizer

    tok, enc = AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path())
    table = enc.get_input_embeddings().weight.detach()
    rows = torch.stack([table[tok(w, add_special_tokens=False)["input_ids"]].mean(0) for w in vocab])
    rows = rows - rows.mean(0)
    print(json.dumps({"minilm_theme_grouping": theme_grouping(rows, vocab)}), flush=True)
    if d < rows.shape[1]:
        _, _, v = torch.linalg.svd(rows, full_matrices=False)
        rows = rows @ v[:d].T
    elif d > rows.shape[1]:
        raise SystemExit(f"--d {d} is wider than MiniLM's {rows.shape[1]} embedding dimensions")
    return rows * (std / rows.std())


def theme_grouping(rows: torch.Tensor, vocab: list[str]) -> dict[str, float]:
    """How well static word vectors group a theme's words: mean cosine within a theme and
    across themes, and the share of words whose nearest theme centroid (the word left out
    of its own) is their theme."""
    index = {w: i for i, w in enumerate(vocab)}
    words = torch.nn.functional.normalize(torch.stack([rows[[index[w] for w in t]] for t in THEMES]), dim=-1)
    n_themes, size = words.shape[:2]
    flat = words.reshape(n_themes * size, -1)
    cos = flat @ flat.T
    theme = torch.arange(n_themes).repeat_interleave(size)
    same = (theme[:, None] == theme[None, :]) & ~torch.eye(len(theme), dtype=torch.bool)
    sums = words.sum(1)
    right = 0
    for t in range(n_themes):
        for j in range(size):
            centroids = sums / size
            centroids[t] = (sums[t] - words[t, j]) / (size - 1)
            right += int((centroids @ words[t, j]).argmax() == t)
    return {"cosine_within": round(float(cos[same].mean()), 3),
            "cosine_across": round(float(cos[theme[:, None] != theme[None, :]].mean()), 3),
            "nearest_centroid": round(right / len(theme), 3)}


def batch(examples, arch: str, sep: int):
    """Tensors for a batch, and per row the attention targets [(query position, item start,
    item end)]. Decoder-only: context, then each query and its answer in one sequence (loss
    on the answers; the query position is the one that predicts the answer). Encoder-decoder:
    the queries first, then the context in the encoder; the decoder writes the answers in
    order, separated by ';' (the query position is the decoder step that writes the answer)."""
    rows, targets, attend = [], [], []
    for context, asked in examples:
        if arch == "llama":
            ids, labels, at = list(context), [-100] * len(context), []
            for q, a, (start, end) in asked:
                ids += q
                at.append((len(ids) - 1, start, end))
                ids += [a, sep]
                labels += [-100] * len(q) + [a, -100]          # aligned with ids; the model shifts
            rows.append(ids)
            targets.append(labels)
        else:
            prefix = [t for q, _, _ in asked for t in q]
            rows.append(prefix + context)
            targets.append([t for _, a, _ in asked for t in (a, sep)])
            at = [(2 * j, len(prefix) + start, len(prefix) + end) for j, (_, _, (start, end)) in enumerate(asked)]
        attend.append(at)
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    if arch == "llama":
        labels = torch.full_like(ids, -100)
        for i, t in enumerate(targets):
            labels[i, :len(t)] = torch.tensor(t)
    else:
        labels = torch.tensor(targets)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}, attend


def attention_loss(out, attend, arch: str) -> torch.Tensor:
    """-log of the attention mass that head 0 of the last layer (self-attention; for
    encoder-decoders the last cross-attention) puts on the answer's item, from the position
    that writes the answer: a direct signal for the matching the answer loss alone gives late."""
    att = (out.attentions if arch == "llama" else out.cross_attentions)[-1][:, 0]
    mass = torch.stack([att[b, pos, start:end].sum() for b, rows in enumerate(attend) for pos, start, end in rows])
    return -torch.log(mass + 1e-6).mean()


def probe_attention(model, prompts: "Prompts", rng: random.Random, n: int = 200) -> list[dict]:
    """Before any training: per layer, the attention mass that the position writing the
    answer puts on the answer's item, over the item's share of the context (1 = uniform),
    for the best head and the mean head. Above 1 is a matching signal to start from."""
    ratios = None
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            context, asked = prompts.example(rng, False, 1)
            q, _, (start, end) = asked[0]
            out = model(input_ids=torch.tensor([context + q]), output_attentions=True)
            att = torch.stack([a[0, :, -1, :len(context)] for a in out.attentions])    # layers x heads x context
            share = (end - start) / len(context)
            r = att[:, :, start:end].sum(-1) / att.sum(-1) / share
            ratios = r if ratios is None else ratios + r
    ratios /= n
    return [{"layer": i, "best_head": round(float(r.max()), 2), "mean_head": round(float(r.mean()), 2)}
            for i, r in enumerate(ratios)]


def accuracy(model, data, arch: str, sep: int) -> float:
    if arch == "llama":                        # decoder-only: the reader's own measure
        return recall_accuracy(model, [b for b, _ in data])
    right = total = 0
    model.eval()
    with torch.no_grad():
        for b, _ in data:
            logits, labels = model(**b).logits, b["labels"]
            answer = (labels != -100) & (labels != sep)
            right += int((logits.argmax(-1)[answer] == labels[answer]).sum())
            total += int(answer.sum())
    model.train()
    return right / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="llama", choices=["llama", "t5", "minilm", "minilm-causal"],
                    help="decoder-only, encoder-decoder, an encoder-decoder warm-started from the packaged "
                         "all-MiniLM-L6-v2 (its first --layers layers in both; --d and --heads are its own), "
                         "or a decoder-only model made of MiniLM's first --layers layers under a causal mask")
    ap.add_argument("--layers", type=int, default=2, help="layers (the encoder's, for t5 and minilm; default 2)")
    ap.add_argument("--decoder-layers", type=int, default=0, help="t5, minilm: decoder layers (default: --layers)")
    ap.add_argument("--freeze-encoder", action="store_true", help="minilm: train the decoder only")
    ap.add_argument("--embeddings", default="random", choices=["random", "minilm"],
                    help="llama, t5: initial word embeddings (minilm: the pretrained static embeddings, "
                         "projected to --d)")
    ap.add_argument("--d", type=int, default=128, help="hidden size (default 128)")
    ap.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    ap.add_argument("--order", default="label-last", choices=["label-last", "label-first", "mixed"],
                    help="LaMP-2's item (label last), LaMP-3's (label first), or either, drawn per prompt")
    ap.add_argument("--compact", action="store_true",
                    help="items as MQAR writes them (text, label; with --order label-first: label, text) and "
                         "queries without template words")
    ap.add_argument("--k", type=int, default=4, help="items per prompt (default 4)")
    ap.add_argument("--labels", type=int, default=16, help="label vocabulary (default 16)")
    ap.add_argument("--words", type=int, nargs=2, default=[8, 16], help="words per text (default 8 16)")
    ap.add_argument("--theme-words", type=int, default=5, help="theme words per text (default 5, as the demo)")
    ap.add_argument("--queries", type=int, default=1, help="queries per training prompt (held out: 1)")
    ap.add_argument("--exact", type=float, default=0.0, help="share of the first steps on exact recall")
    ap.add_argument("--attention-loss", type=float, default=0.0,
                    help="weight of the attention loss (attention_loss; default 0: the answer loss only)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--every", type=int, default=250, help="evaluate every N steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast of the forward pass (default fp32; measure it first: on a 2-core AMX "
                         "CPU it was slower than fp32 for MiniLM-sized steps)")
    ap.add_argument("--init", metavar="DIR",
                    help="start from a saved reader (`python -m components.backbone.reader --out DIR`) instead of "
                         "building --arch")
    ap.add_argument("--save", metavar="DIR", help="save the trained model (and tokenizer) to DIR, e.g. for --init")
    ap.add_argument("--probe", action="store_true",
                    help="only measure, before training, how much each layer's attention favours the answer's item")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = None
    if args.init or args.arch == "minilm-causal":       # the reader (components/backbone/reader.py)
        from components.backbone.reader import ReaderConfig, build_reader, load_reader

        args.arch = "minilm-causal"
        model, tokenizer = load_reader(ReaderConfig(path=args.init)) if args.init else build_reader(args.layers)
    elif args.arch == "minilm":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    prompts = Prompts(args, tokenizer)
    if args.arch != "minilm-causal":
        model = build_model(args, len(prompts.vocab), tokenizer)
    if args.embeddings == "minilm" and not args.arch.startswith("minilm"):
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(minilm_embeddings(prompts.vocab, args.d))
    if args.attention_loss or args.probe:
        model.set_attn_implementation("eager")              # attention probabilities as outputs
    if args.probe:
        for row in probe_attention(model, prompts, random.Random(args.seed)):
            print(json.dumps(row))
        return
    if args.freeze_encoder:
        model.get_encoder().requires_grad_(False)
    arch = "llama" if args.arch in ("llama", "minilm-causal") else "seq2seq"
    held = random.Random(10**6 + args.seed)
    test = [batch([prompts.example(held, False, 1) for _ in range(100)], arch, prompts.sep) for _ in range(10)]
    test_exact = [batch([prompts.example(held, True, 1) for _ in range(100)], arch, prompts.sep)
                  for _ in range(10)] if args.exact else []
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    start = time.perf_counter()
    for step in range(args.steps):
        exact = step < args.exact * args.steps
        examples = [prompts.example(rng, exact, args.queries) for _ in range(args.batch)]
        inputs, attend = batch(examples, arch, prompts.sep)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = model(**inputs, output_attentions=bool(args.attention_loss))
        loss = out.loss
        if args.attention_loss:
            loss = loss + args.attention_loss * attention_loss(out, attend, arch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            print(json.dumps({"step": step + 1, "loss": round(float(loss.detach()), 3),
                              "recall": round(accuracy(model, test, arch, prompts.sep), 3),
                              **({"exact_recall": round(accuracy(model, test_exact, arch, prompts.sep), 3)}
                                 if test_exact else {}),
                              "chance": round(1 / args.k, 3), "seconds": round(time.perf_counter() - start)}),
                  flush=True)
    if args.save:
        model.save_pretrained(args.save)
        if tokenizer is not None:
            tokenizer.save_pretrained(args.save)
    print(json.dumps({"args": vars(args), "parameters": sum(p.numel() for p in model.parameters()),
                      "trainable": sum(p.numel() for p in trainable)}))


if __name__ == "__main__":
    main()
