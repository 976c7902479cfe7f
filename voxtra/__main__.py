"""``python -m voxtra``: the same as the ``voxtra`` command."""

import sys

from voxtra.cli import main

sys.exit(main())
