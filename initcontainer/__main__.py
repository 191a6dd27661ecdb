"""``python -m initcontainer`` runs the init container role."""

import sys

from initcontainer.main import main

sys.exit(main())
