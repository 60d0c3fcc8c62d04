"""Evaluation: run a method on a split, score, count costs, keep the standings."""
