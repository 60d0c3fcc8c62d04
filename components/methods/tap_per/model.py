"""TAP-PER's prefix modules (`shared/reference/methods-and-lamp.md` §A2).

P = P_u + P_q, prepended as L soft tokens:

* P_u: a per-user embedding table, L x d scalars per user (`user_prefix`);
* P_q: s_j = MLP([z_q, z_h, z_q - z_h, z_q * z_h]) - lambda_t log(1 + dt_j) - lambda_o log(1 + do_j),
  alpha = softmax_j(s), P_q = Proj(sum_j alpha_j z_h_j), reshaped to L x d;
  z are mean-pooled *input* embeddings of the frozen backbone.

The modules only; training (with the bridge LoRA) is in `train.py`, the `Method`, its
on-disk form and the online user update in `method.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TapPerConfig:
    prefix_length: int = 8          # L
    temporal: bool = True           # lambda_t penalty on days between record and query
    order: bool = True              # lambda_o penalty on the order gap
    use_user_prefix: bool = True    # ablation "P_q only" turns this off
    use_record_prefix: bool = True  # ablation "P_u only" turns this off
    bridge_rank: int = 4
    bridge_roles: str = "qkv"       # the projections the published 2.36 M bridge covers
    record_pooling: str = "tokens"  # z_h: "tokens" = mean over the record's tokens (reference);
                                    # "fields" = mean over its fields of each field's token mean
    record_keys: str = "record"     # what the relevance MLP compares with the query: "record" = z_h
                                    # (reference); "text" = z_k, the record without its past output
    standardise: bool = True        # centre and scale z_q and z_h with statistics of the training
                                    # data (stored with the model) before relevance and projection


# the standardisation buffers: <z>_mean and <z>_scale for queries, records (values) and keys
STANDARDISED = ("q", "h", "k")
STANDARDISATION_BUFFERS = frozenset(f"{z}_{stat}" for z in STANDARDISED for stat in ("mean", "scale"))


class TapPerPrefix(nn.Module):
    def __init__(self, hidden_size: int, num_users: int, cfg: TapPerConfig = TapPerConfig()):
        super().__init__()
        d, L = hidden_size, cfg.prefix_length
        self.cfg, self.hidden_size = cfg, hidden_size
        self.user_prefix = nn.Embedding(num_users, d * L)
        nn.init.normal_(self.user_prefix.weight, std=0.02)
        self.relevance = nn.Sequential(nn.Linear(4 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.lambda_t = nn.Parameter(torch.randn(()) * 0.02)
        self.lambda_o = nn.Parameter(torch.randn(()) * 0.02)
        self.project = nn.Linear(d, d * L)
        # identity until `fit_standardisation`; saved with the model (state_dict buffers)
        for z in STANDARDISED:
            self.register_buffer(f"{z}_mean", torch.zeros(d))
            self.register_buffer(f"{z}_scale", torch.ones(d))

    @torch.no_grad()
    def fit_standardisation(self, z_q: torch.Tensor, z_h: torch.Tensor, mask: torch.Tensor,
                            z_k: torch.Tensor | None = None) -> None:
        """Per-dimension mean and std of the queries' and the valid records' z. Mean-pooled
        embeddings of one domain share a large common component and differ in a small one
        (the theme words of a text); without this the relevance MLP barely learns (measured in
        docs/tap-per.md)."""
        if not self.cfg.standardise:
            return
        samples = {"q": z_q, "h": z_h[mask], "k": z_k[mask] if z_k is not None else None}
        for z, x in samples.items():
            if x is not None and len(x) > 1:
                getattr(self, f"{z}_mean").copy_(x.mean(0))
                getattr(self, f"{z}_scale").copy_(x.std(0).clamp(min=1e-6))

    def _standard(self, z: str, x: torch.Tensor) -> torch.Tensor:
        return (x - getattr(self, f"{z}_mean")) / getattr(self, f"{z}_scale")

    def per_user_parameters(self) -> int:
        return self.user_prefix.embedding_dim

    def shared_parameters(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("user_prefix"))

    def attention(self, z_q: torch.Tensor, z_h: torch.Tensor, days: torch.Tensor, order: torch.Tensor,
                  mask: torch.Tensor, z_k: torch.Tensor | None = None) -> torch.Tensor:
        """alpha [B,K]: softmax over the valid records of relevance minus the penalties
        (all zeros for a user with no valid record). The relevance reads z_k when given."""
        z_q = self._standard("q", z_q)
        keys = self._standard("h", z_h) if z_k is None else self._standard("k", z_k)
        q = z_q.unsqueeze(1).expand_as(keys)
        s = self.relevance(torch.cat([q, keys, q - keys, q * keys], -1)).squeeze(-1)
        if self.cfg.temporal:
            s = s - self.lambda_t * torch.log1p(days.clamp(min=0))
        if self.cfg.order:
            s = s - self.lambda_o * torch.log1p(order.clamp(min=0))
        s = s.masked_fill(~mask, float("-inf"))
        return torch.softmax(s, -1).nan_to_num(0.0) * mask

    def record_prefix(self, z_q: torch.Tensor, z_h: torch.Tensor, days: torch.Tensor, order: torch.Tensor,
                      mask: torch.Tensor, z_k: torch.Tensor | None = None) -> torch.Tensor:
        """z_q [B,d], z_h [B,K,d], days/order [B,K] (>= 0), mask [B,K] -> P_q [B,L,d].

        A user with no valid record gets the projection's bias as P_q (all weights are 0)."""
        alpha = self.attention(z_q, z_h, days, order, mask, z_k)
        pooled = (alpha.unsqueeze(-1) * self._standard("h", z_h)).sum(1)
        return self.project(pooled).view(-1, self.cfg.prefix_length, self.hidden_size)

    def forward(self, user_rows: torch.Tensor, z_q, z_h, days, order, mask, z_k=None) -> torch.Tensor:
        """P for a batch; a row of -1 is a user with no P_u row of their own (serving's guests)."""
        b = user_rows.shape[0]
        prefix = torch.zeros(b, self.cfg.prefix_length, self.hidden_size, device=z_q.device, dtype=z_q.dtype)
        if self.cfg.use_user_prefix:
            rows = self.user_prefix(user_rows.clamp(min=0))
            guests = user_rows < 0           # a user without a row (a guest): the population's mean
            if guests.any():
                rows = torch.where(guests.unsqueeze(-1), self.user_prefix.weight.mean(0), rows)
            prefix = prefix + rows.view(b, self.cfg.prefix_length, self.hidden_size)
        if self.cfg.use_record_prefix:
            prefix = prefix + self.record_prefix(z_q, z_h, days, order, mask, z_k)
        return prefix
