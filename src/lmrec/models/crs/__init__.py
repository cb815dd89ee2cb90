"""Conversational recommenders (importing this package registers them)."""

from lmrec.models.crs import dense, fism, pop, sasrec  # noqa: F401,E402
