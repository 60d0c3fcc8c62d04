"""Synthetic LaMP-format data with planted, documented personalization signals.

One generative story serves every task (see docs/synthetic-data.md):

* The world has `n_themes` themes, drawn from `components/lamp/words.py`; each theme is a
  group of 6 related English words (orbit, planet, rocket …). Text mixes a few theme words
  with filler words, so BM25 finds same-theme items and a pretrained encoder sees related
  meanings.
* Users belong to one of `n_segments` segments; a segment prefers a pool of themes
  (this is the structure that population clustering can recover).
* Each user follows 3-8 themes and has a private **habit** per theme: a movie tag
  (LaMP-2), a rating level (LaMP-3), a signature word (LaMP-4/5), a hashtag (LaMP-7),
  drawn from the user's personal vocabulary (3-5 tags or words; for ratings the user's
  base level +-1), so any of the user's items says something, same-theme items say most.
  LaMP-1 uses the themes themselves: the related reference is on a theme the user
  currently writes about.
* **Drift**: after a per-user change date, 1-2 of the user's themes switch habit; items
  (and queries) after that date follow the new habit, so recent items matter.
* A user has one history: every question of that user shows a prefix of it (an item id
  always carries the same text).
* A fraction of profile items are noise: off-interest themes with random habits.
* The answer to a query on theme t is the user's *current* habit for t, so a model
  that reads the user's recent same-theme items can answer; one that does not cannot
  do better than the population's prior.

Alongside the official files the generator writes `relevance.json`: for each question
the ids of the profile items that carry the answer (same theme, current habit).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from components.lamp.io import write_outputs, write_questions
from components.lamp.records import Output, ProfileItem, Question
from components.lamp.tasks import MOVIE_TAGS, TaskSpec, get_task
from components.lamp.words import FILLERS, STYLES, THEMES
from components.storage.files import write_json_atomic

SYNTH_TASKS = ("LaMP-1", "LaMP-2", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-7")


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator (the `data.synth` section of params.yaml)."""

    users: int = 400
    queries_per_user: int = 3
    profile_min: int = 10
    profile_max: int = 40
    n_themes: int = 30
    n_segments: int = 3
    themes_per_user: tuple[int, int] = (3, 8)
    irrelevant_fraction: float = 0.15
    drift_themes: tuple[int, int] = (1, 2)
    label_noise: float = 0.03
    words_per_text: tuple[int, int] = (8, 16)
    theme_words_per_text: int = 3
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0


@dataclass
class _User:
    uid: str
    themes: list[int]
    habit: dict[int, object]
    new_habit: dict[int, object]
    change: date
    start: date
    items: list[tuple[date, int, object]] = field(default_factory=list)


class _World:
    def __init__(self, spec: TaskSpec, cfg: SynthConfig, rng: random.Random):
        if not 1 <= cfg.n_themes <= len(THEMES):
            raise ValueError(f"data.synth.n_themes is {cfg.n_themes}; the word lists hold {len(THEMES)} themes "
                             f"(components/lamp/words.py)")
        self.spec, self.cfg, self.rng = spec, cfg, rng
        self.theme_words = [list(THEMES[i]) for i in rng.sample(range(len(THEMES)), cfg.n_themes)]
        self.filler = list(FILLERS)
        self.styles = rng.sample(STYLES, len(STYLES))
        self.values = self._value_space()

    def _value_space(self) -> list:
        name = self.spec.name
        if name == "LaMP-2":
            return list(MOVIE_TAGS)
        if name == "LaMP-3":
            return [1, 2, 3, 4, 5]
        if name == "LaMP-1":
            return [None]                             # citation: the signal is the theme itself
        if name == "LaMP-7":
            return ["#" + w for w in self.styles[:30]]
        return self.styles[:30]                       # LaMP-4/5: signature words

    def personal_values(self, rng: random.Random) -> list:
        """The values one user draws all their habits from (a personal tag vocabulary, a
        rating level +-1, a few signature words): what any of their items reveals."""
        if len(self.values) == 1:
            return list(self.values)
        if self.spec.name == "LaMP-3":
            base = rng.randint(1, 5)
            return [v for v in (base, base, base - 1, base + 1) if 1 <= v <= 5]
        return rng.sample(self.values, rng.randint(3, 5))

    def text(self, theme: int) -> list[str]:
        lo, hi = self.cfg.words_per_text
        n = self.rng.randint(lo, hi)
        n_theme_words = min(self.cfg.theme_words_per_text, n, 6)
        words = self.rng.sample(self.theme_words[theme], n_theme_words)
        words += [self.rng.choice(self.filler) for _ in range(n - n_theme_words)]
        self.rng.shuffle(words)
        return words

    def short_title(self, theme: int) -> str:
        words = self.rng.sample(self.theme_words[theme], 3) + [self.rng.choice(self.filler)]
        self.rng.shuffle(words)
        return " ".join(words)

    # --- rendering of one item / one query for each task ---------------------------------

    def item_fields(self, theme: int, value: object) -> dict[str, str]:
        name, words = self.spec.name, self.text(theme)
        if name == "LaMP-1":
            return {"title": self.short_title(theme), "abstract": " ".join(words)}
        if name == "LaMP-2":
            return {"description": " ".join(words), "tag": str(value)}
        if name == "LaMP-3":
            score, words = self._review(value, words)
            return {"text": " ".join(words), "score": str(score)}
        if name == "LaMP-7":
            return {"text": self._tweet(words, value)}
        title = self._title(words, theme, value)
        if name == "LaMP-4":
            return {"text": " ".join(words), "title": title}
        return {"title": title, "abstract": " ".join(words)}   # LaMP-5

    def query(self, user: _User, theme: int, value: object) -> tuple[str, str]:
        name, words = self.spec.name, self.text(theme)
        tpl = self.spec.input_template
        if name == "LaMP-1":
            others = [t for t in range(self.cfg.n_themes) if t not in user.themes]
            wrong = self.rng.choice(others)
            right_title, wrong_title = self.short_title(theme), self.short_title(wrong)
            paper = " ".join(self.rng.sample(self.filler, 6))
            gold = self.rng.choice(("[1]", "[2]"))
            r1, r2 = (right_title, wrong_title) if gold == "[1]" else (wrong_title, right_title)
            return tpl.format(title=paper, ref1=r1, ref2=r2), gold
        if name == "LaMP-2":
            return tpl.format(description=" ".join(words)), str(value)
        if name == "LaMP-3":
            score, words = self._review(value, words)
            return tpl.format(text=" ".join(words)), str(score)
        if name == "LaMP-7":
            plain = " ".join(words)
            return tpl.format(tweet=plain), self._tweet(words, value)
        title = self._title(words, theme, value)
        key = "article" if name == "LaMP-4" else "abstract"
        return tpl.format(**{key: " ".join(words)}), title

    def _review(self, level: object, words: list[str]) -> tuple[int, list[str]]:
        # The user's rating level for the theme, nudged by a strong word now and then.
        score = int(level)
        r = self.rng.random()
        if r < 0.1 and score < 5:
            score, words = score + 1, words + ["loved"]
        elif r < 0.2 and score > 1:
            score, words = score - 1, words + ["disliked"]
        return score, words

    def _title(self, words: list[str], theme: int, style: object) -> str:
        keys = [w for w in words if w in self.theme_words[theme]][:2]
        return f"{style} {' '.join(keys)}"

    def _tweet(self, words: list[str], tag: object) -> str:
        return " ".join(words[:8]) + f" {tag}"


def _make_users(world: _World, cfg: SynthConfig, rng: random.Random) -> list[_User]:
    users = []
    for u in range(cfg.users):
        segment = u % cfg.n_segments
        pool = [t for t in range(cfg.n_themes) if t % cfg.n_segments == segment]
        k = rng.randint(*cfg.themes_per_user)
        themes = rng.sample(pool, min(k, len(pool)))
        personal = world.personal_values(rng)
        habit = {t: rng.choice(personal) for t in themes}
        new_habit = dict(habit)
        n_drift = rng.randint(*cfg.drift_themes) if len(world.values) > 1 else 0
        for t in rng.sample(themes, min(len(themes), n_drift)):
            others = [v for v in personal if v != habit[t]] or [v for v in world.values if v != habit[t]]
            new_habit[t] = rng.choice(others)
        start = date(2015, 1, 1) + timedelta(days=rng.randint(0, 4 * 365))
        n_items = rng.randint(cfg.profile_min, cfg.profile_max) + cfg.queries_per_user
        span = n_items * rng.randint(5, 20)
        change = start + timedelta(days=int(span * rng.uniform(0.4, 0.75)))
        user = _User(f"u{u:06d}", themes, habit, new_habit, change, start)
        day = start
        for _ in range(n_items):
            day += timedelta(days=rng.randint(1, 2 * span // n_items))
            if rng.random() < cfg.irrelevant_fraction:
                theme = rng.randrange(cfg.n_themes)
                value = rng.choice(world.values)
            else:
                theme = rng.choice(themes)
                value = (user.new_habit if day >= change else user.habit)[theme]
                if rng.random() < cfg.label_noise:
                    value = rng.choice(world.values)
            user.items.append((day, theme, value))
        users.append(user)
    return users


def generate_task(task: str, cfg: SynthConfig, out_dir: str | Path) -> dict:
    """Write `{train,dev,test}_{questions,outputs}.json` and `relevance.json` for one task."""
    spec = get_task(task)
    splits, relevance = synthesize(spec.name, cfg)
    out_dir = Path(out_dir)
    for split, (qs, outs) in splits.items():
        write_questions(out_dir / f"{split}_questions.json", qs)
        write_outputs(out_dir / f"{split}_outputs.json", spec, outs)
    write_json_atomic(out_dir / "relevance.json", relevance, indent=None)
    return {split: len(qs) for split, (qs, _) in splits.items()}


def synthesize(task: str, cfg: SynthConfig) -> tuple[dict[str, tuple[list[Question], list[Output]]], dict[str, dict]]:
    """One task's users in memory: {split: (questions, outputs)} and the relevance record."""
    spec = get_task(task)
    if spec.name not in SYNTH_TASKS:
        raise ValueError(f"no synthetic generator for {spec.name}; available: {', '.join(SYNTH_TASKS)}")
    rng = random.Random(f"{cfg.seed}-{spec.name}")
    world = _World(spec, cfg, rng)
    users = _make_users(world, cfg, rng)
    order = list(range(len(users)))
    rng.shuffle(order)
    n_train = int(cfg.split_fractions[0] * len(users))
    n_dev = int(cfg.split_fractions[1] * len(users))
    split_of = {}
    for rank, idx in enumerate(order):
        split_of[idx] = "train" if rank < n_train else "dev" if rank < n_train + n_dev else "test"

    splits: dict[str, tuple[list[Question], list[Output]]] = {s: ([], []) for s in ("train", "dev", "test")}
    relevance: dict[str, dict] = {}
    q_counter = 0
    prefix = spec.name.split("-")[1].rstrip("N")
    for idx, user in enumerate(users):
        n_profile = len(user.items) - cfg.queries_per_user
        texts: dict[int, dict[str, str]] = {}        # one text per history item, whatever question shows it
        for j in range(cfg.queries_per_user):
            visible = user.items[: n_profile + j]
            qdate = user.items[n_profile + j][0]
            habit = user.new_habit if qdate >= user.change else user.habit
            seen_themes = [t for _, t, _ in visible if t in user.themes]
            theme = rng.choice(seen_themes) if seen_themes and rng.random() < 0.9 else rng.choice(user.themes)
            text, gold = world.query(user, theme, habit[theme])
            qid = f"{prefix}{q_counter:06d}"
            q_counter += 1
            for i, (_, t, v) in enumerate(visible):
                if i not in texts:
                    texts[i] = world.item_fields(t, v)
            items = [ProfileItem(id=f"{prefix}{idx:05d}{i:04d}", fields=texts[i], date=d.isoformat())
                     for i, (d, _, _) in enumerate(visible)]
            relevant = [it.id for it, (d, t, v) in zip(items, visible) if t == theme and v == habit[theme]]
            question = Question(id=qid, input=text, profile=items, user_id=user.uid, date=qdate.isoformat())
            qs, outs = splits[split_of[idx]]
            qs.append(question)
            outs.append(Output(id=qid, output=gold))
            relevance[qid] = {"theme": theme, "relevant": relevant,
                              "drifted": user.habit[theme] != user.new_habit[theme]}
    return splits, relevance
