"""The init container role: resolve, stage, verify, publish, exit."""
