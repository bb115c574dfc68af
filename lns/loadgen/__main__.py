"""``python -m lns.loadgen``: the same as the ``lns-loadgen`` command."""

import sys

from lns.loadgen.cli import main

sys.exit(main())
