"""Utilities every layer may use: JSON-lines logging, redaction, time stamps, retries.

Imports nothing from pointercache but ``pointercache.errors``.
"""
