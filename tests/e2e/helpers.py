"""Helpers for end-to-end tests: artifacts, manifests, and CLI processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from pointercache.model.candidate import DEFAULT_SELECTOR
from pointercache.volume import layout
from tests.helpers import MODEL, cli, make_artifact, wait_until, write_manifest

ENTRY = layout.lkg_entry(MODEL, DEFAULT_SELECTOR)
"""The node LKG entry of the default selector."""

__all__ = [
    "MODEL",
    "Sidecar",
    "clean_env",
    "cli",
    "make_artifact",
    "run_init",
    "wait_until",
    "write_manifest",
]


def run_init(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``pointercache init`` to completion."""
    return subprocess.run(
        cli("init", *args), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class Sidecar:
    """A real ``pointercache sidecar`` subprocess with its stderr captured line by line."""

    def __init__(self, env: dict[str, str], args: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            cli("sidecar", "--listen", "127.0.0.1:0", *args),
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        event = wait_until(lambda: self.find("listening") or self._dead(), timeout=30)
        if self.proc.poll() is not None:
            raise AssertionError(f"sidecar exited {self.proc.returncode}: {self.lines[-5:]}")
        self.url = f"http://127.0.0.1:{event['port']}"

    def _dead(self) -> bool:
        return self.proc.poll() is not None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line so far."""
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def find(self, event: str) -> dict[str, Any] | None:
        """The last log event named ``event``, or None."""
        for record in reversed(self.events()):
            if record.get("event") == event:
                return record
        return None

    def get(
        self,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        timeout: float = 10,
        body: bytes | None = None,
    ) -> tuple[int, bytes]:
        """An HTTP request to the status server: (status, body)."""
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:  # closed here, not by the garbage collector (a ResourceWarning)
                return exc.code, exc.read()

    def status(self) -> dict[str, Any]:
        """The parsed ``/status`` document."""
        code, body = self.get("/status")
        assert code == 200, body
        data: dict[str, Any] = json.loads(body)
        return data

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signal the process and wait for it; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


def clean_env(base: dict[str, str]) -> dict[str, str]:
    """A copy of ``base`` without POINTERCACHE_* settings."""
    return (
        {k: v for k, v in base.items() if not k.startswith("POINTERCACHE_")}
        | {"PYTHONUNBUFFERED": "1"}
        | ({"PATH": os.environ["PATH"]} if "PATH" not in base else {})
    )
