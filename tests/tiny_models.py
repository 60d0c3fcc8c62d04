"""Microscopic decoder-only (Llama) and encoder-decoder (T5) backbones built from config."""

from __future__ import annotations

from pathlib import Path

import torch

from components.backbone.embedded import build_tokenizer
from components.backbone.model import Backbone, load_backbone, save_backbone
from components.lamp.tasks import TASKS


def tiny_corpus(extra: list[str]) -> list[str]:
    return [t.input_template for t in TASKS.values()] + extra + [
        "the tag for the movie: is , and . Following the given patterns are written by a person",
        "is the score for is the title for is a title for <empty>"]


def tiny_backbone(kind: str, corpus: list[str], directory: Path, seed: int = 0) -> Backbone:
    """Build, save (safetensors) and reload through the public by-path loader."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    tok = build_tokenizer(tiny_corpus(corpus), max_length=256)
    if kind == "decoder":
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id))
    else:
        tok.padding_side = "right"
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.pad_token_id))
    save_backbone(Backbone(model, tok), directory)
    return load_backbone(directory, dtype="float32")   # exact comparisons; on a GPU too


def tiny_encoder(corpus: list[str], directory: Path, seed: int = 0) -> Path:
    """A BERT-style encoder (no LM head) saved with its tokenizer: a marking model that cannot
    generate, as the pretrained all-MiniLM-L6-v2 is. Returns the directory."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    tok = build_tokenizer(tiny_corpus(corpus), max_length=128)
    tok.padding_side = "right"
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id))
    save_backbone(Backbone(model, tok), directory)
    return directory
