"""PPlug's user embedder (`shared/reference/methods-and-lamp.md` §A1).

    h_i = Enc_his(item_i)                 frozen encoder, vectors cached on disk by content hash
    x   = Enc_input(instruction + query)  a trainable copy of the same encoder
    w_i = softmax_i(x . k_i)              padding masked (mean pooling in the ablation); k_i = h_i,
                                          or with `history_keys: text` the item without its output
    P_u = sum_i w_i Proj(h_i)             Proj: Linear(e->d) GELU Linear(d->d)
    I   = Proj_inst(inst)                 one learnable e-vector through its own MLP

[I; P_u] go in as two soft tokens before the prompt of the frozen backbone.

Scale (our choice; the reference code multiplies by unexplained constants, 539.97 and
539.97/7): each soft token is rescaled to the mean L2 norm of the backbone's own input
token embeddings, computed once from the embedding matrix and stored with the model. So a
soft token has the size of a real token whatever the backbone, and the projector only has
to learn a direction.

Empty history (documented fallback): no item to weigh, so the user token is the projection
of a learned `empty_history` vector (the same for every such user) and all weights are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.retrieval.encoder import pool


@dataclass(frozen=True)
class PPlugConfig:
    max_history: int = 64            # most recent items kept (the reference keeps 512)
    use_attention: bool = True       # ablation "mean": mean pooling instead of input-aware weights
    use_instruction: bool = True     # ablation "no-instruction": the user token only
    retrieve_top1: bool = False      # ablation "PPlug + retrieval": top-1 BM25 item in the prompt
    history_with_output: bool = True  # encode each item with its past output (tag, score, title)
    history_keys: str = "record"     # what the input is compared with: "record" = h_i (the paper);
                                     # "text" = the item encoded without its past output (TAP-PER's keys)
    query_instruction: str = "Represent this sentence for searching relevant passages: "
    projection: str = "mlp"          # "mlp": the paper's Linear-GELU-Linear into the hidden size;
                                     # "vocab": the MLP gives a distribution over the backbone's
                                     # vocabulary and the token is that mixture of its embeddings
    attention_scale: float = 1.0     # x.h is multiplied by this before the softmax (the paper: 1, i.e.
                                     # cosines in [-1, 1], nearly uniform weights over long histories)
    learn_attention_scale: bool = False  # train the scale (initialised at `attention_scale`)
    bridge_rank: int = 0             # 0: the paper's frozen LLM; r > 0: a shared LoRA (q,k,v) that
                                     # teaches a small backbone to read the soft tokens (our option)


def mlp(e: int, d: int, out: int | None = None) -> nn.Sequential:
    return nn.Sequential(nn.Linear(e, d), nn.GELU(), nn.Linear(d, out or d))


class PPlugEmbedder(nn.Module):
    def __init__(self, input_encoder: nn.Module, encoder_dim: int, hidden_size: int, token_norm: float,
                 cfg: PPlugConfig = PPlugConfig(), pooling: str = "mean", vocab: torch.Tensor | None = None):
        super().__init__()
        self.cfg, self.pooling, self.hidden_size = cfg, pooling, hidden_size
        self.input_encoder = input_encoder
        if cfg.projection == "vocab":
            if vocab is None:
                raise ValueError("projection 'vocab' needs the backbone's input embedding matrix")
            self.register_buffer("vocab", vocab.detach().float().cpu().clone(), persistent=False)  # on the embedder side
            out = vocab.shape[0]
        elif cfg.projection == "mlp":
            out = hidden_size
        else:
            raise ValueError(f"projection must be 'mlp' or 'vocab', not {cfg.projection!r}")
        self.project = mlp(encoder_dim, hidden_size, out)
        self.instruction = nn.Parameter(torch.randn(encoder_dim) * 0.02)
        self.project_instruction = mlp(encoder_dim, hidden_size, out)
        self.empty_history = nn.Parameter(torch.randn(encoder_dim) * 0.02)
        log_scale = torch.tensor(float(cfg.attention_scale)).log()
        if cfg.learn_attention_scale:
            self.log_attention_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_attention_scale", log_scale)
        self.register_buffer("token_norm", torch.tensor(float(token_norm)))
        # standardisation of the item vectors before the projector (set by `fit_standardizer`)
        self.register_buffer("history_mean", torch.zeros(encoder_dim))
        self.register_buffer("history_std", torch.ones(encoder_dim))

    def fit_standardizer(self, vectors: torch.Tensor) -> None:
        """Centre and scale the projector's input on the training items' vectors: sentence
        vectors share a large common component, and what tells users apart (their past
        outputs, their vocabulary) lives in small deviations from it."""
        if len(vectors) > 1:
            self.history_mean.copy_(vectors.mean(0))
            self.history_std.copy_(vectors.std(0).clamp(min=1e-4))

    @property
    def num_tokens(self) -> int:
        return 2 if self.cfg.use_instruction else 1

    def encode_inputs(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, e] unit vectors of the (instruction-prefixed) task inputs; trainable."""
        hidden = self.input_encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return pool(hidden, enc["attention_mask"], self.pooling)

    def weights(self, x: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, N]: softmax of x . h_i over real items (0 on padding; all 0 for an empty history)."""
        if self.cfg.use_attention:
            scores = torch.einsum("be,bne->bn", x, history) * self.log_attention_scale.exp()
            scores = scores.masked_fill(~mask, float("-inf"))
            return torch.softmax(scores, -1).nan_to_num(0.0) * mask
        m = mask.to(history.dtype)
        return m / m.sum(-1, keepdim=True).clamp(min=1)

    def to_hidden(self, out: torch.Tensor) -> torch.Tensor:
        """A projector's output as a vector of the backbone's input space ("vocab": a mixture
        of the backbone's own token embeddings)."""
        return torch.softmax(out, -1) @ self.vocab if self.cfg.projection == "vocab" else out

    def scaled(self, v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(v, dim=-1) * self.token_norm

    def forward(self, enc: dict[str, torch.Tensor], history: torch.Tensor, mask: torch.Tensor,
                keys: torch.Tensor | None = None):
        """enc: tokenized inputs; history [B, N, e] frozen item vectors; mask [B, N]; keys
        [B, N, e] what the weights compare the input with (default: history).
        Returns (soft tokens [B, T, d], weights [B, N])."""
        w = self.weights(self.encode_inputs(enc), history if keys is None else keys, mask)
        items = (history - self.history_mean) / self.history_std
        user = torch.einsum("bn,bnd->bd", w, self.to_hidden(self.project(items)))
        empty = ~mask.any(-1)
        if empty.any():
            default = self.to_hidden(self.project(self.empty_history))
            user = torch.where(empty.unsqueeze(-1), default.expand_as(user), user)
        tokens = [self.scaled(user)]
        if self.cfg.use_instruction:
            inst = self.to_hidden(self.project_instruction(self.instruction))
            tokens.insert(0, self.scaled(inst).expand_as(user))
        return torch.stack(tokens, 1), w

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def token_norm(backbone) -> float:
    """Mean L2 norm of the backbone's input token embeddings (the soft tokens' target norm)."""
    with torch.no_grad():
        return float(backbone.model.get_input_embeddings().weight.float().norm(dim=-1).mean())
