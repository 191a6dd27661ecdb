"""Bringing an artifact onto the volume: fetchers, the URI allowlist, archive extraction,
progress, and prestage (fetch → extract → verify).
"""
