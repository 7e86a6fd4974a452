"""``python -m sasa.cli``: the ``sasa`` command (what ``torchrun ... -m sasa.cli`` runs)."""

import sys

from sasa.cli.app import main

sys.exit(main())
