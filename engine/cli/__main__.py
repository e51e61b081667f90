"""``python -m engine.cli``: the ``veritas`` command."""

import sys

from engine.cli import main

sys.exit(main())
