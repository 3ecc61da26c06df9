"""``python -m saga_store``: the ``saga-store`` command line."""

from __future__ import annotations

import sys

from saga_store.cli import main

sys.exit(main())
