"""``python -m lmrec``: the ``lmrec`` command."""

import sys

from lmrec.cli import main

sys.exit(main())
