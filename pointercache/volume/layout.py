"""Names on disk, written once: the shared volume's contract and the node directory's layout.

Shared volume (``--root``; DESIGN.md section 2)::

    model        -> current/model          static relative link
    pointer.json -> current/pointer.json   static relative link
    current      -> versions/<model>/<version>-<digest12>      the single commit point
    versions/<model>/<version>-<digest12>/{model,pointer.json}
    .staging/    in-progress work;  .lock  single-writer lock
    .state/loaded.json   what the model container last reported loaded (the sidecar's memory)

Only ``model``, ``pointer.json`` and ``current`` are the API; the rest is an implementation detail.

Node directory (``--lkg-dir``, shared by every pod on the node; untrusted)::

    <model>.json                  node LKG pointer per model
    cas/sha256/<hex>/model        a verified artifact, by digest (with .size and .last-used)
    cas/.tmp/                     cache entries being written
    .locks/                       flock files
"""

from __future__ import annotations

CURRENT = "current"
"""The single commit point: a relative symlink to the published version directory."""
MODEL = "model"
"""The artifact inside a version directory, and the static link to it at the root."""
POINTER = "pointer.json"
"""The pointer inside a version directory, and the static link to it at the root."""
VERSIONS = "versions"
"""Installed versions: ``versions/<model>/<version>-<digest12>``."""
STAGING = ".staging"
"""In-progress work; never referenced by ``current``."""
LOCK = ".lock"
"""The shared volume's single-writer ``flock`` file."""
STATE = ".state"
"""The sidecar's own small documents, kept across its restarts (not across pods)."""
LOADED = "loaded.json"
"""Inside ``STATE``: the version the model container last reported loaded."""

CAS = "cas/sha256"
"""The node's content-addressed artifact cache, one directory per sha256 hex digest."""
CAS_TMP = "cas/.tmp"
"""Cache entries being assembled, renamed into ``CAS`` when complete."""
CAS_SIZE = ".size"
"""A cache entry's total bytes."""
CAS_USED = ".last-used"
"""A cache entry's LRU clock (its mtime)."""
NODE_LOCKS = ".locks"
"""flock files of the node directory (one per model pointer, one per digest)."""
