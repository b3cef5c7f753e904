"""``python -m cpvctl``: the same entry point as the ``cpvctl`` console script."""

import sys

from cpvctl.cli import main

sys.exit(main())
