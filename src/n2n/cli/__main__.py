"""``python -m n2n.cli``: the ``n2n`` command (the benchmarks call it with the running interpreter)."""

import sys

from n2n.cli.table import main

sys.exit(main())
