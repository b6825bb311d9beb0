"""Tokens, usage records and costs (SQLAlchemy)."""
