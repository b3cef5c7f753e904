"""``python -m cpvd``: the same as the ``cpvd`` script."""

from cpvd.cli import main

raise SystemExit(main())
