"""Collaborative-filtering models; importing this package registers them by name."""

from lmrec.models.cf import alpharec, lightgcn, pop  # noqa: F401
from lmrec.models.cf import bc_loss, kar, multvae, rlmrec, sgl, xsimgcl  # noqa: F401
