"""Runtimes that execute a model on token-id batches (never on strings)."""
