"""The bounded LRU the statement caches share (the parse cache, the classification caches).

Shared by every session of the process (behind a lock: the tests run gateways in threads);
bounded by entries and by a cost the caller gives per entry (characters held), so a flood of
distinct texts evicts, never grows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class BoundedLRU:
    """A least-recently-used map bounded by entries and by the sum of the entries' costs.

    Args:
        max_entries: the most entries it keeps.
        max_cost: the most total cost it keeps.
        cost_name: the name :meth:`info` gives the total cost.
    """

    def __init__(self, max_entries: int, max_cost: int, cost_name: str = "cost") -> None:
        self.max_entries = max_entries
        self.max_cost = max_cost
        self.cost_name = cost_name
        self._data: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._cost = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any:
        """The value kept for *key* (now the most recently used), or None."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: str, value: Any, cost: int) -> None:
        """Keep *value* for *key* (a key already kept keeps its first value)."""
        with self._lock:
            if key in self._data:
                return
            self._data[key] = (value, cost)
            self._cost += cost
            while len(self._data) > self.max_entries or self._cost > self.max_cost:
                _, (_, old_cost) = self._data.popitem(last=False)
                self._cost -= old_cost

    def clear(self) -> None:
        """Forget every entry and zero the counters."""
        with self._lock:
            self._data.clear()
            self._cost = 0
            self.hits = self.misses = 0

    def info(self) -> dict[str, int]:
        """Entries, total cost (under ``cost_name``), hits and misses."""
        with self._lock:
            return {"entries": len(self._data), self.cost_name: self._cost,
                    "hits": self.hits, "misses": self.misses}
