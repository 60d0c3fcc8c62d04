"""Benchmark: does recall in LaMP-2's own prompt teach a reader to read the demo's prompts?

Trains a saved reader (`--reader DIR`) on recall prompts in LaMP-2's full layout (the
template, the instruction and the list of tags): items on a few themes, every theme tagged
with one of LaMP-2's tags drawn afresh, the question a new text on a shown theme; loss on the
answer and on every item's tag after the first of its theme. Texts have `--tw` theme words
among `--words` words (the demo's data: 3 of 8-16; the reader's fuzzy stage: 4 of 6-8).
`--exact` / `--easy` start with that share of steps on one-word keys / 4-of-6-8 texts.
`--bare` drops the instruction and tag list before the question.

Every `--every` steps prints the held-out answer accuracy on fresh such prompts (first
token, 192 prompts); every `--dev-every` steps also BM25-4, full context and recall-4 on the
demo's LaMP-2 time/dev questions (the first `--n`), none of whose users it trained on.
This is the script behind the layout rows of docs/experiments.md; the reader's own layout
stage (`backbone.reader.layout_steps`) draws its prompts in another order.

    python bench/layout_recall.py --reader R3 --steps 200 --every 50 --dev-every 200 --tw 4 --words 6 8
"""
import argparse
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import torch  # noqa: E402
from components.backbone.embedded import _length_buckets  # noqa: E402
from components.backbone.model import Backbone  # noqa: E402
from components.backbone.reader import ReaderConfig, load_reader, right_padded  # noqa: E402
from components.lamp.prompts import build_prompt  # noqa: E402
from components.lamp.records import ProfileItem  # noqa: E402
from components.lamp.tasks import MOVIE_TAGS, get_task  # noqa: E402
from components.lamp.words import FILLERS, THEMES  # noqa: E402

SPEC = get_task("LaMP-2")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reader", required=True, help="the saved reader trained (e.g. the recall stages' R3)")
    ap.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    ap.add_argument("--every", type=int, default=100, help="held-out accuracy every N steps (default: 100)")
    ap.add_argument("--dev-every", type=int, default=300, help="demo time/dev figures every N steps (default: 300)")
    ap.add_argument("--n", type=int, default=150, help="time/dev questions scored (default: 150)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, 50 warm-up steps (default: 1e-3)")
    ap.add_argument("--batch", type=int, default=16, help="prompts per step (default: 16)")
    ap.add_argument("--items", type=int, nargs=2, default=[6, 14], help="items per prompt (default: 6 14)")
    ap.add_argument("--themes", type=int, nargs=2, default=[2, 5], help="themes among them (default: 2 5)")
    ap.add_argument("--tw", type=int, default=3, help="theme words per text (default: 3, as the demo's data)")
    ap.add_argument("--words", type=int, nargs=2, default=[8, 16], help="words per text (default: 8 16)")
    ap.add_argument("--exact", type=float, default=0.0, help="share of steps first with one-word keys (default: 0)")
    ap.add_argument("--easy", type=float, default=0.0, help="share of steps next with 4 theme words of 6-8 "
                                                            "(default: 0)")
    ap.add_argument("--bare", action="store_true", help="no instruction or tag list before the question")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompts drawn (default: 0)")
    ap.add_argument("--save", help="save the trained reader to this directory")
    return ap.parse_args(argv)


class Prompts:
    """LaMP-2 recall prompts; every draw goes through one random generator, in a fixed order."""

    def __init__(self, args, tok, rng: random.Random):
        self.a, self.tok, self.rng = args, tok, rng

    def text(self, theme, tw, words):
        rng = self.rng
        n = rng.randint(*words)
        w = rng.sample(THEMES[theme], tw) + [rng.choice(FILLERS) for _ in range(n - tw)]
        rng.shuffle(w)
        return " ".join(w)

    def example(self, easy: bool, exact: bool = False):
        a, tok, rng = self.a, self.tok, self.rng
        tw, words = (4, (6, 8)) if easy else (a.tw, tuple(a.words))
        themes = rng.sample(range(len(THEMES)), rng.randint(*a.themes))
        mk = self.text
        if exact:
            key = {t: rng.choice(THEMES[t]) for t in themes}
            mk = lambda t, tw, words: key[t]  # noqa: E731
        labels = dict(zip(themes, rng.sample(list(MOVIE_TAGS), len(themes))))
        items = [ProfileItem(id=str(i), fields={"description": mk(t, tw, words), "tag": labels[t]})
                 for i, t in enumerate(rng.choice(themes) for _ in range(rng.randint(*a.items)))]
        q = rng.choice([t for t in themes if any(it.fields["tag"] == labels[t] for it in items)])
        text = mk(q, tw, words)
        inp = f"description: {text}" if a.bare else SPEC.input_template.format(description=text)
        answer = tok.encode(labels[q], add_special_tokens=False) + [tok.eos_token_id]
        encode = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
        prompt = build_prompt(SPEC, inp, items, 512 - len(answer) - 1, encode, tok.decode)
        ids, targets, seen = [tok.bos_token_id], [-100], set()
        for s, is_label in prompt.segments:
            seg = encode(s)
            ids += seg
            targets += seg if is_label and s in seen else [-100] * len(seg)
            if is_label:
                seen.add(s)
        return ids + answer, targets + answer

    @torch.no_grad()
    def held_out(self, model, n: int = 192) -> float:
        """First-token accuracy of the answers of n fresh prompts (drawn with seed 12345)."""
        state = self.rng.getstate()
        self.rng.seed(12345)
        examples = [self.example(False) for _ in range(n)]
        self.rng.setstate(state)
        hit = 0
        for i in range(0, n, 32):
            chunk = examples[i:i + 32]
            p = right_padded(chunk, self.tok.pad_token_id)
            logits = model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits
            for j, (ids, targets) in enumerate(chunk):
                k = len(targets) - 1                       # the answer: the last run of targets
                while k > 0 and targets[k - 1] != -100:
                    k -= 1
                hit += int(logits[j, k - 1].argmax()) == ids[k]
        return hit / n


def dev_figures(backbone, n: int) -> str:
    from backbone import recall_at_k

    from components.evaluation.harness import evaluate
    from components.lamp.io import read_golds, read_questions
    from components.lamp.splits import split_files
    from components.methods import build_method

    qfile, ofile = split_files("LaMP-2", "time/dev", ROOT / "data")
    dev, golds = read_questions(qfile, SPEC)[:n], read_golds(ofile, SPEC)
    score = {m: evaluate(build_method(m), backbone, SPEC, dev, golds, progress=False).metrics[SPEC.primary_metric]
             for m in ("bm25-4", "full-context")}
    r = recall_at_k(SPEC, backbone, dev, 4)
    return (f"bm25-4 {score['bm25-4']:.3f} full {score['full-context']:.3f} recall-4 {r['exact']:.3f} "
            f"shown {r['shown']:.3f}")


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    model, tok = load_reader(ReaderConfig(path=a.reader), 0)
    backbone, prompts = Backbone(model, tok, name="layout-recall"), Prompts(a, tok, rng)

    def report(step: int) -> None:
        model.eval()
        print(f"step {step}: layout held-out {prompts.held_out(model):.3f}", flush=True)
        if step and step % a.dev_every == 0:
            print(f"step {step}: {dev_figures(backbone, a.n)} (LaMP-2 time/dev, {a.n} questions)", flush=True)

    report(0)
    warm = 50
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, a.steps - warm))))
    start, losses = time.time(), []
    for step in range(a.steps):
        model.train()
        batch = [prompts.example(step < (a.exact + a.easy) * a.steps, step < a.exact * a.steps)
                 for _ in range(a.batch)]
        opt.zero_grad()
        total, value = sum(sum(1 for x in t[1:] if x != -100) for _, t in batch), 0.0
        for micro in _length_buckets(batch, 8192):
            p = right_padded(micro, tok.pad_token_id)
            loss = model(**p).loss * (int((p["labels"][:, 1:] != -100).sum()) / total)
            loss.backward()
            value += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(value)
        if (step + 1) % 20 == 0:
            print(f"  {step + 1} loss {sum(losses[-20:]) / 20:.3f} answers/step {total} {time.time() - start:.0f}s",
                  flush=True)
        if (step + 1) % a.every == 0:
            report(step + 1)
    if a.save:
        model.save_pretrained(a.save)
        tok.save_pretrained(a.save)
        print("saved", a.save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
