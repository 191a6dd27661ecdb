"""Values and pure rules: the pointer, selectors and candidates, the manifest, signatures,
digests, and the revision rule. No I/O beyond reading a file a caller names; no network.
"""
