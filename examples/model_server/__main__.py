"""``python -m model_server``: run the example model server."""

import sys

from model_server.server import main

sys.exit(main())
