"""Load any Hugging Face causal or seq2seq LM by name or path; batched generation;
soft-token (inputs_embeds) injection for both architectures.

`Backbone` is the one object every method talks to: it knows the architecture, pads on
the left for decoder-only models, and prepends soft tokens the same way for both kinds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)
# transformers builds models under a process-wide meta-device/default-dtype context while
# loading; two threads loading at once corrupt each other's modules, so loads are serialised.
_LOAD_LOCK = threading.Lock()


class BackboneError(ValueError):
    pass


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


_TOKEN_CACHE_SIZE = 200_000


@dataclass
class Backbone:
    model: torch.nn.Module
    tokenizer: object
    name: str = "backbone"
    _token_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def max_length(self) -> int:
        cfg = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_length"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                limit = value
                break
        else:
            limit = 512                      # T5 uses relative positions: LaMP's own limit
        tok_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_limit, int) and 0 < tok_limit < limit:
            limit = tok_limit
        return limit

    # --- tokens -------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids without special tokens. Memoised: prompt building tokenizes the same
        history items over and over (every training step, every method), and one call of a
        Hugging Face tokenizer costs tens of microseconds of Python overhead."""
        ids = self._token_cache.get(text)
        if ids is None:
            if len(self._token_cache) >= _TOKEN_CACHE_SIZE:
                self._token_cache.clear()
            ids = self._token_cache[text] = tuple(self.tokenizer(text, add_special_tokens=False,
                                                                 verbose=False)["input_ids"])
        return list(ids)

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def encode_batch(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize with the model's special tokens, pad (left for decoder-only), check limits."""
        enc = self.tokenizer(list(prompts), padding=True, return_tensors="pt")
        lengths = enc["attention_mask"].sum(1)
        too_long = [(i, int(n)) for i, n in enumerate(lengths) if n > self.max_length]
        if too_long:
            i, n = too_long[0]
            raise BackboneError(f"prompt #{i} has {n} tokens, more than the model's limit of "
                                f"{self.max_length}; build prompts with components.lamp.prompts")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    # --- soft tokens ----------------------------------------------------------------------

    def embed_with_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          prefix: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings with `prefix` ([B, P, d] soft tokens) placed before the prompt.

        Each row reads [left pads | <bos> | prefix | prompt | right pads]: the prefix goes
        right after the tokenizer's BOS when the prompt starts with one (so BOS stays at the
        first position, where the model always saw it), else at the first real token;
        positions stay contiguous. Works for left and right padding and both architectures.
        Inputs may live on another device than the model (a method's small trainable parts
        often stay on the CPU): everything is moved to the model's device and dtype, with
        gradients flowing back through the move.
        """
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        embeds = self.model.get_input_embeddings()(input_ids)
        if prefix is None:
            return embeds, attention_mask
        prefix = prefix.to(device=embeds.device, dtype=embeds.dtype)
        b, p = prefix.shape[:2]
        out_e = torch.cat([embeds.new_zeros(b, p, embeds.shape[-1]), embeds], 1)
        out_m = torch.cat([attention_mask.new_zeros(b, p), attention_mask], 1)
        for i in range(b):
            at = self.prefix_position(input_ids[i], attention_mask[i])
            out_e[i, :at] = embeds[i, :at]
            out_e[i, at:at + p] = prefix[i]
            out_e[i, at + p:] = embeds[i, at:]
            out_m[i, :at] = attention_mask[i, :at]
            out_m[i, at:at + p] = 1
            out_m[i, at + p:] = attention_mask[i, at:]
        return out_e, out_m

    def prefix_position(self, ids: torch.Tensor, mask: torch.Tensor) -> int:
        """Where soft tokens go in one row: after the left padding and after a leading BOS."""
        real = mask.nonzero()
        first = int(real[0]) if len(real) else 0
        bos = self.tokenizer.bos_token_id
        return first + int(bos is not None and len(real) > 0 and int(ids[first]) == bos)

    # --- generation -------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], max_new_tokens: int, num_beams: int = 1,
                 prefix: torch.Tensor | None = None, batch_size: int | None = None) -> list[str]:
        """Greedy (or beam) generation; returns the new text only, in the order given.

        With `batch_size`, prompts are sorted by length and generated in batches of similar
        length (little padding), then put back in order.
        """
        if batch_size is None or len(prompts) <= batch_size:
            return self._generate_batch(prompts, max_new_tokens, num_beams, prefix)
        lengths = [len(self.tokenize(p)) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        out: list[str] = [""] * len(prompts)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            sub_prefix = prefix[idx] if prefix is not None else None
            for i, text in zip(idx, self._generate_batch([prompts[i] for i in idx], max_new_tokens,
                                                         num_beams, sub_prefix)):
                out[i] = text
        return out

    @torch.no_grad()
    def _generate_batch(self, prompts: Sequence[str], max_new_tokens: int, num_beams: int = 1,
                        prefix: torch.Tensor | None = None) -> list[str]:
        self.model.eval()
        enc = self.encode_batch(prompts)
        kwargs = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                      pad_token_id=self.tokenizer.pad_token_id)
        if prefix is None:
            out = self.model.generate(**enc, **kwargs)
        else:
            embeds, mask = self.embed_with_prefix(enc["input_ids"], enc["attention_mask"], prefix)
            out = self.model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        if not self.is_encoder_decoder and prefix is None:
            out = out[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, as `generate` derives them: a
    decoder-only model called directly on a left-padded batch needs them (with absolute
    position embeddings, BERT's, padding would otherwise shift every position)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def prefix_loss(backbone: Backbone, prefix: torch.Tensor, prompts: Sequence[str], answers: Sequence[str]):
    """Next-token loss on the answers only; the prefix and the prompt are masked (-100).
    The prefix sits where `generate` puts it (`Backbone.embed_with_prefix`)."""
    tok, model = backbone.tokenizer, backbone.model
    b, L = prefix.shape[:2]
    if backbone.is_encoder_decoder:
        enc = tok(list(prompts), padding=True, return_tensors="pt")
        embeds, mask = backbone.embed_with_prefix(enc["input_ids"], enc["attention_mask"], prefix)
        labels = tok(list(answers), padding=True, return_tensors="pt")["input_ids"]
        labels[labels == tok.pad_token_id] = -100
        return model(inputs_embeds=embeds, attention_mask=mask, labels=labels.to(embeds.device)).loss
    seqs, n_prompt = [], []
    for p, a in zip(prompts, answers):
        p_ids = tok(p)["input_ids"]            # with the tokenizer's specials (BOS), as in generate
        seqs.append(p_ids + backbone.tokenize(a) + [tok.eos_token_id])
        n_prompt.append(len(p_ids))
    width = max(len(s) for s in seqs)
    ids = torch.full((b, width), tok.pad_token_id)
    attn = torch.zeros(b, width, dtype=torch.long)
    labels = torch.full((b, L + width), -100)
    for i, s in enumerate(seqs):                # right padding while training
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        labels[i, L + n_prompt[i]: L + len(s)] = torch.tensor(s[n_prompt[i]:])
    embeds, mask = backbone.embed_with_prefix(ids, attn, prefix)
    return model(inputs_embeds=embeds, attention_mask=mask, labels=labels.to(embeds.device)).loss


def answer_loss(backbone: Backbone, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
    """Next-token loss on the answers only, no soft tokens (`prefix_loss` with an empty prefix)."""
    empty = torch.zeros(len(prompts), 0, backbone.hidden_size, device=backbone.device)
    return prefix_loss(backbone, empty, prompts, answers)


def _check_tokenizer(tokenizer, source: str) -> None:
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
            log.info("tokenizer of %s has no pad token: using its eos token %r", source, tokenizer.eos_token)
        else:
            raise BackboneError(f"the tokenizer of {source} has neither a pad nor an eos token; "
                                "add one (tokenizer.add_special_tokens({'pad_token': '<pad>'})) and save it")


def load_backbone(name_or_path: str | os.PathLike, device: str = "auto", dtype: str = "auto",
                  attn_implementation: str | None = None) -> Backbone:
    """Load a causal or seq2seq LM (auto class chosen from its config) and its tokenizer."""
    from transformers import AutoConfig

    source = str(name_or_path)
    looks_local = source.startswith((".", "/", "~")) or os.sep in source and Path(source).exists()
    if looks_local and not Path(source).expanduser().exists():
        raise BackboneError(f"model path {source} does not exist")
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"cannot load a model config from {source!r}: {exc}. Give a local directory "
                            "saved with save_pretrained, or a hub name on a machine that can reach the hub") from None
    with _LOAD_LOCK:
        return _load(source, config, device, dtype, attn_implementation)


def _load(source: str, config, device: str, dtype: str, attn_implementation: str | None) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    dev = pick_device(device)
    kwargs = {"dtype": pick_dtype(dev, dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if getattr(config, "is_encoder_decoder", False):
        model = AutoModelForSeq2SeqLM.from_pretrained(source, **kwargs)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except ValueError:
            raise BackboneError(f"{source} is a {config.model_type!r} model, not a causal or seq2seq "
                                "language model") from None
    tokenizer = AutoTokenizer.from_pretrained(source)
    _check_tokenizer(tokenizer, source)
    if not model.config.is_encoder_decoder:
        tokenizer.padding_side = "left"
    return Backbone(model.to(dev), tokenizer, name=source)


def save_backbone(backbone: Backbone, out_dir: str | os.PathLike) -> Path:
    """`save_pretrained` (safetensors) for model and tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backbone.model.save_pretrained(out, safe_serialization=True)
    backbone.tokenizer.save_pretrained(out)
    return out
