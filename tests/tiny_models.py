"""Microscopic decoder-only (Llama) and encoder-decoder (T5) backbones built from config."""

from __future__ import annotations

from pathlib import Path

import torch

from components.backbone.model import Backbone, load_backbone, save_backbone
from components.lamp.tasks import TASKS


def build_tokenizer(corpus: list[str], max_length: int):
    """A word-level tokenizer over whitespace-separated words (quotes split off)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split('"', behavior="isolated")])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                        special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", model_max_length=max_length)
    fast.padding_side = "left"
    return fast


def tiny_reader() -> Path:
    """An untrained one-layer reader (the embedded backbone's start), saved as the shipped one
    is; built once per version of the reader's code and shared by the tests that need one."""
    import hashlib
    import os
    import shutil
    import tempfile

    from components.backbone import reader

    code = hashlib.sha256(Path(reader.__file__).read_bytes()).hexdigest()[:12]
    directory = Path(tempfile.gettempdir()) / f"persona-tiny-reader-{code}"
    if not (directory / "config.json").exists():
        model, tokenizer = reader.build_reader(layers=1)
        staging = Path(tempfile.mkdtemp(prefix="tiny-reader-", dir=directory.parent))
        reader.save_reader(model, tokenizer, {"untrained": True}, staging)
        try:
            os.rename(staging, directory)
        except OSError:                       # another process built it first
            shutil.rmtree(staging, ignore_errors=True)
    return directory


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
