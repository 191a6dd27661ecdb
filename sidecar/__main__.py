"""``python -m sidecar`` runs the sidecar role."""

import sys

from sidecar.main import main

sys.exit(main())
