"""Conversational recommenders (importing this package registers them)."""

from lmrec.models.crs import (  # noqa: F401,E402
    dense,
    fism,
    pop,
    sasrec,
    zero_shot_llm,  # noqa: F401,E402
)
from lmrec.models.crs.rta import adapt, reindex  # noqa: F401,E402
