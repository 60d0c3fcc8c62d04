"""Attn-GS: attention-guided marking and compression of user profiles."""
