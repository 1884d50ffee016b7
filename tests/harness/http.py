"""Plain HTTP GETs against the gateway's metrics endpoint, from trio tests."""

from __future__ import annotations

import urllib.error
import urllib.request

import trio


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def get(port: int, path: str) -> tuple[int, str]:
    return await trio.to_thread.run_sync(_get, port, path)
