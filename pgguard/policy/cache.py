"""The classification caches: bounded LRUs keyed by statement text or literal-blind key.

Shared by every session of the process (behind a lock: the tests run gateways in threads);
bounded by entries and by characters, so a flood of distinct texts evicts, never grows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class TextCache:
    """A bounded LRU of classifications keyed by statement text (or by literal-blind
    key, holding :data:`_KeyEntry` values)."""

    def __init__(self, max_entries: int, max_chars: int) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: Any) -> None:
        # Statement texts are slices of the key: count the key twice.
        cost = 2 * len(key)
        with self._lock:
            if key in self._data:
                return
            self._data[key] = value
            self._chars += cost
            while len(self._data) > self.max_entries or self._chars > self.max_chars:
                old, _ = self._data.popitem(last=False)
                self._chars -= 2 * len(old)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._chars = 0
            self.hits = self.misses = 0

    def info(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._data), "chars": self._chars, "hits": self.hits,
                    "misses": self.misses}
