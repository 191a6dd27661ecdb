"""``python -m pointercache_cli`` is the ``pointercache`` command."""

import sys

from pointercache_cli import main

sys.exit(main())
