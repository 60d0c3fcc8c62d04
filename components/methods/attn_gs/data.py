"""Attn-GS training data: the training users' questions and their history items."""

from __future__ import annotations

import random
from pathlib import Path

from components.lamp.tasks import TaskSpec


def training_data(spec: TaskSpec, data_root: str | Path, max_examples: int, split: str = "time/train",
                  seed: int = 0) -> list:
    """(question, gold) pairs: every question of `split`, then its users' history items
    turned into questions (`history_examples`), at most `max_examples` in all."""
    from components.lamp.history import history_examples
    from components.lamp.io import read_golds, read_questions
    from components.lamp.splits import split_files

    qfile, ofile = split_files(spec.name, split, Path(data_root))
    questions = read_questions(qfile, spec)
    golds = read_golds(ofile, spec)
    pairs = [(q, golds[q.id]) for q in questions if q.id in golds and q.profile]
    extra = list(history_examples(spec, questions))
    random.Random(seed).shuffle(extra)
    return (pairs + extra)[:max_examples]
