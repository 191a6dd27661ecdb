"""Names on disk, written once: the shared volume's contract and the node directory's layout.

Shared volume (``--root``; DESIGN.md section 2)::

    model        -> current/model          static relative link
    pointer.json -> current/pointer.json   static relative link
    current      -> versions/<model>/<version>-<digest12>      the single commit point
    versions/<model>/<version>-<digest12>/{model,pointer.json,claim.json}
    .staging/    in-progress work;  .lock  single-writer lock
    .state/loaded.json   what the model container last reported loaded (the sidecar's memory)

Only ``model``, ``pointer.json`` and ``current`` are the API; the rest is an implementation detail.
``<model>`` here and below is ``disk_name(model)``: a registry may call a model ``Credit Risk``.

Node directory (``--lkg-dir``, shared by every pod on the node; untrusted)::

    <model>.<kind>-<value>.json   node LKG pointer per model and selector (``lkg_entry``)
    <model>.json                  the same, as releases before per-selector entries wrote it
    cas/sha256/<hex>/model        a verified artifact, by digest (with .size and .last-used)
    cas/.tmp/                     cache entries being written
    .locks/                       flock files
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pointercache.model.candidate import Selector

CURRENT = "current"
"""The single commit point: a relative symlink to the published version directory."""
MODEL = "model"
"""The artifact inside a version directory, and the static link to it at the root."""
POINTER = "pointer.json"
"""The pointer inside a version directory, and the static link to it at the root."""
CLAIM = "claim.json"
"""Beside a version's pointer: the registry claim (registry, revision) the served version holds
against later answers (``model.revision``). Internal; readers never need it."""
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

LKG_SUFFIX = ".json"
"""Node LKG files and cluster LKG ConfigMap keys end with this."""
DEFAULT_SELECTOR = "alias:production"
"""The selector whose LKG may still be read from a pre-selector ``<model>.json`` entry."""

_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_HASH_HEX = 20
"""Hex digits of sha256 in a derived name (80 bits)."""


def disk_name(name: str, *, dots: bool = True) -> str:
    """A file name and ConfigMap key standing for the registry name ``name``; injective.

    A plain name (``[A-Za-z0-9._-]``, 1-100, starting with a letter or digit, no ``--``) is used
    as it is, so the names of earlier releases stay the same. Any other name becomes
    ``<slug>--<20 hex of sha256(name)>``, where the slug keeps the name's ASCII letters and digits
    for people reading the directory (``Credit Risk`` → ``Credit-Risk--3b1f…``). Plain names have
    no ``--``, so the two forms never meet. With ``dots=False`` the result has no ``.`` either
    (the selector part of ``lkg_entry``). The result matches ``[-._a-zA-Z0-9]{1,122}``: a valid
    file name and ConfigMap data key (Kubernetes: ``[-._a-zA-Z0-9]+``, at most 253).
    """
    plain = _PLAIN if dots else _PLAIN_TOKEN
    if plain.fullmatch(name) and "--" not in name:
        return name
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:48].strip("-") or "x"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    return f"{slug}--{digest}"


def lkg_entry(model: str, selector: Selector) -> str:
    """The node LKG file name and cluster LKG key of ``model`` served by ``selector``.

    ``<disk_name(model)>.<kind>-<value>.json``: ``recommender.alias-production.json``,
    ``Credit-Risk--3b1f….alias-candidate.json``. The selector part has no dot, so the name
    splits back unambiguously at its last two dots: different (model, selector) pairs never
    share an entry, and a canary never overwrites production's last-known-good.
    """
    value = disk_name(selector.value, dots=False)
    return f"{disk_name(model)}.{selector.kind}-{value}{LKG_SUFFIX}"


def legacy_lkg_entry(model: str, selector: Selector) -> str | None:
    """The pre-selector entry (``<model>.json``) that ``selector`` may still read, or None.

    Releases before per-selector entries wrote ``<model>.json`` from every pod, whatever its
    selector. Only the default selector (``alias:production``, what those pods used unless told
    otherwise) reads it, and only while its own entry does not exist yet; docs/chain.md says
    how to migrate a node that also ran other selectors.
    """
    if str(selector) != DEFAULT_SELECTOR or not _PLAIN.fullmatch(model):
        return None
    return f"{model}{LKG_SUFFIX}"


def version_dir(model: str, short: str) -> str:
    """``versions/<disk_name(model)>/<short>``, relative to the shared volume's root."""
    return f"{VERSIONS}/{disk_name(model)}/{short}"
