"""A bounded memo for values derived from a few inputs on hot paths."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """A dict that forgets everything once it holds `capacity` entries.

    For what the hot path derives again and again from a handful of inputs (a quota's GCRA
    period, a limit's policy text, a key record's serialized answer): lookups are plain
    dict.get, and the bound only stops an unusual mix of inputs from growing it for ever.
    Clearing whole costs one re-derivation per live input, and no bookkeeping per hit, as
    an LRU would."""

    def __init__(self, capacity: int = 10_000):
        super().__init__()
        self.capacity = capacity

    def put(self, key: K, value: V) -> V:
        if len(self) >= self.capacity:
            self.clear()
        self[key] = value
        return value
