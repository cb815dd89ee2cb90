"""Conversational recommenders (importing this package registers them)."""
