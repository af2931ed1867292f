"""``python -m brainseg``: see :mod:`brainseg.cli`."""

import sys

from .cli import main

sys.exit(main())
