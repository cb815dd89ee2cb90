"""Collaborative-filtering models; importing this package registers them by name."""

from lmrec.models.cf import alpharec, lightgcn, pop  # noqa: F401
