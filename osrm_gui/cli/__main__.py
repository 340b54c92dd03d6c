"""``python -m osrm_gui.cli``: the same as the ``osrm`` command."""

import sys

from osrm_gui.cli import main

sys.exit(main())
