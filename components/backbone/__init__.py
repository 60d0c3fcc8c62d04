"""Backbones: load or build any HF causal / seq2seq LM, batched generation, soft tokens, LoRA."""
