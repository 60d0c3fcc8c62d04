"""Rankers over a user's profile: random, recency, BM25, dense (all-MiniLM-L6-v2)."""
