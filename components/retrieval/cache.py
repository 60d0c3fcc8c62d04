"""Item vectors cached by content hash: in memory, and on disk when given a directory.

Used by the dense retriever and by PPlug's history encoder, so a profile item is encoded
once per encoder, whatever method asks for it, and a second run with unchanged data
encodes nothing.

On disk: `<root>/<encoder fingerprint>/shard-<hash>.safetensors`, each shard one
`vectors` tensor [n, dim] with its n keys (sha1 of the text) in the file's metadata.
Every `encode` call that had to compute something writes one new shard (atomically, by
rename), so an interrupted run loses at most the batch in flight and never leaves a
half-written shard. `remove` (forgetting a user's items) rewrites the shards without them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def default_cache_root() -> Path | None:
    """`$PERSONA_VECTOR_CACHE` (the flows set it to `.state/vectors`); None keeps vectors in memory."""
    root = os.environ.get("PERSONA_VECTOR_CACHE")
    return Path(root) if root else None


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class VectorCache:
    def __init__(self, root: str | Path | None = None, namespace: str = "default"):
        self.dir = Path(root) / namespace if root is not None else None
        self.vectors: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0
        if self.dir is not None and self.dir.exists():
            self._load()

    def _load(self) -> None:
        from safetensors import safe_open

        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="pt") as f:
                keys = json.loads(f.metadata()["keys"])
                for k, v in zip(keys, f.get_tensor("vectors")):
                    self.vectors[k] = v

    def __len__(self) -> int:
        return len(self.vectors)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self.vectors

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def encode(self, texts: Sequence[str], encoder, progress: bool = False, count: bool = True) -> torch.Tensor:
        """[N, dim] vectors for `texts`, encoding (and storing) only the ones not cached.
        Hits and misses count distinct texts (`count=False`: a lookup of what was just
        encoded, not counted)."""
        keys = [text_key(t) for t in texts]
        missing: dict[str, str] = {}
        for t, k in zip(texts, keys):
            if k not in self.vectors and k not in missing:
                missing[k] = t
        if count:
            self.misses += len(missing)
            self.hits += len(set(keys)) - len(missing)
        if missing:
            new = encoder.encode(list(missing.values()), progress=progress)
            for k, v in zip(missing, new):
                self.vectors[k] = v
            self._write_shard(list(missing), new)
        if not keys:
            return torch.zeros(0, getattr(encoder, "dim", 0))
        return torch.stack([self.vectors[k] for k in keys])

    def _write_shard(self, keys: list[str], vectors: torch.Tensor) -> Path | None:
        if self.dir is None:
            return None
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1("".join(keys).encode()).hexdigest()[:16]
        tmp = self.dir / f".tmp-{name}-{os.getpid()}"
        save_file({"vectors": vectors.contiguous()}, str(tmp), metadata={"keys": json.dumps(keys)})
        path = self.dir / f"shard-{name}.safetensors"
        os.replace(tmp, path)
        return path

    def remove(self, texts: Iterable[str]) -> int:
        """Drop the vectors of these texts, in memory and on disk; returns how many were cached."""
        drop = {text_key(t) for t in texts} & set(self.vectors)
        if not drop:
            return 0
        for k in drop:
            del self.vectors[k]
        if self.dir is not None:
            old = sorted(self.dir.glob("shard-*.safetensors"))
            keys = list(self.vectors)
            fresh = self._write_shard(keys, torch.stack([self.vectors[k] for k in keys])) if keys else None
            for shard in old:
                if shard != fresh:
                    shard.unlink()
        log.info("removed %d cached vectors", len(drop))
        return len(drop)
