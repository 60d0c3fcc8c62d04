"""Rank a question's profile items. Each ranker returns item indices, best first."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from components.lamp.records import ProfileItem, Question
from components.lamp.tasks import TaskSpec

_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def rank_random(spec: TaskSpec, q: Question, seed: int = 0) -> list[int]:
    order = list(range(len(q.profile)))
    random.Random(f"{seed}-{q.id}").shuffle(order)
    return order


def rank_recency(spec: TaskSpec, q: Question, seed: int = 0) -> list[int]:
    """Newest first (items without a date count as oldest; ties keep file order, later first)."""
    return sorted(range(len(q.profile)), key=lambda i: (q.profile[i].date or "", i), reverse=True)


def rank_bm25(spec: TaskSpec, q: Question, seed: int = 0) -> list[int]:
    from rank_bm25 import BM25Okapi

    if not q.profile:
        return []
    corpus = [_words(spec.item_text(p.fields)) or ["<empty>"] for p in q.profile]
    scores = BM25Okapi(corpus).get_scores(_words(spec.query_text(q.input)))
    return sorted(range(len(q.profile)), key=lambda i: (-scores[i], -i))


class DenseRanker:
    """Cosine similarity of all-MiniLM-L6-v2 embeddings; vectors cached by content hash
    (on disk under `$PERSONA_VECTOR_CACHE` when set, see `components.retrieval.cache`)."""

    def __init__(self, encoder=None, cache_root=None):
        from components.retrieval.cache import default_cache_root

        self._encoder = encoder
        self._cache_root = cache_root if cache_root is not None else default_cache_root()
        self._cache = None

    @property
    def encoder(self):
        if self._encoder is None:
            from components.retrieval.encoder import SentenceEncoder

            self._encoder = SentenceEncoder.default()
        return self._encoder

    @property
    def cache(self):
        if self._cache is None:
            from components.retrieval.cache import VectorCache

            self._cache = VectorCache(self._cache_root, self.encoder.fingerprint)
        return self._cache

    def _vectors(self, texts: Sequence[str]):
        return self.cache.encode(texts, self.encoder)

    def prefetch(self, spec: TaskSpec, questions: Sequence[Question]) -> None:
        """Encode every item and query of a batch of questions in one go (large batches)."""
        texts = [spec.item_text(p.fields) for q in questions for p in q.profile]
        texts += [spec.query_text(q.input) for q in questions]
        if texts:
            self._vectors(texts)

    def __call__(self, spec: TaskSpec, q: Question, seed: int = 0) -> list[int]:
        if not q.profile:
            return []
        items = self._vectors([spec.item_text(p.fields) for p in q.profile])
        query = self._vectors([spec.query_text(q.input)])[0]
        scores = (items @ query).tolist()
        return sorted(range(len(q.profile)), key=lambda i: (-scores[i], -i))


RANKERS = {"random": rank_random, "recency": rank_recency, "bm25": rank_bm25}


def select_items(profile: Sequence[ProfileItem], ranked: list[int], k: int | None) -> list[ProfileItem]:
    """The top-k items, in date order (oldest first) so the newest sits next to the question;
    undated items keep their rank order, best last."""
    chosen = ranked if k is None else ranked[:k]
    if all(profile[i].date for i in chosen):
        chosen = sorted(chosen, key=lambda i: (profile[i].date, i))
    else:
        chosen = list(reversed(chosen))
    return [profile[i] for i in chosen]
