"""``lmrec serve``: trained run folders as an HTTP service (FastAPI) with a web page."""

from lmrec.serve.app import create_app

__all__ = ["create_app"]
