"""lmrec: recommendation with language models (AlphaRec, Reindex-Then-Adapt) with correct evaluation."""

__version__ = "0.1.0"
