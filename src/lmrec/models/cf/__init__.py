"""Collaborative-filtering models; importing this package registers them by name."""

from lmrec.models.cf import alpharec, bc_loss, kar, lightgcn, multvae, pop, rlmrec, sgl, xsimgcl  # noqa: F401  # noqa: F401
