"""Schedulers: dynamic batching for encoders (continuous batching for LLMs comes next)."""
