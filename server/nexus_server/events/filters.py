"""Which events a reader wants: type patterns (`deal.*`) and sources, checked and matched.

A type pattern is an exact type (`deal.won`), a prefix of whole segments followed by `.*`
(`deal.*` matches `deal.won` and `deal.stage.changed`, never `deal` nor `dealer.won`), or
`*`. Sources are exact names. An event matches when it matches any pattern and any source
(an empty list matches everything), and it is not among what the reader may not see
(`hidden`, visibility.py). The same Filter drives SQL (store.py) and memory
(the live fan-out), so replay and live can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from nexus_server.common.validation import Violations
from nexus_server.events.visibility import is_hidden

TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
SOURCE_RE = re.compile(r"^[a-z][a-z0-9._/-]*$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
MAX_PATTERNS = 20
MAX_PATTERN_LEN = 128
MAX_SOURCE_LEN = 128


def type_problem(value: str) -> str | None:
    """Why `value` is not a valid event type, or None."""
    if not 3 <= len(value) <= 128:
        return "must be 3 to 128 characters"
    if not TYPE_RE.match(value):
        return "must be dot-separated lowercase segments such as `deal.won`"
    return None


def source_problem(value: str) -> str | None:
    """Why `value` is not a valid source name, or None."""
    if not 1 <= len(value) <= MAX_SOURCE_LEN:
        return f"must be 1 to {MAX_SOURCE_LEN} characters"
    if not SOURCE_RE.match(value):
        return "must match ^[a-z][a-z0-9._/-]*$, for example `nexus-sales`"
    return None


def _pattern_problem(value: str) -> str | None:
    if value == "*":
        return None
    if len(value) > MAX_PATTERN_LEN:
        return f"must be at most {MAX_PATTERN_LEN} characters"
    if value.endswith(".*") and _PREFIX_RE.match(value[:-2]):
        return None
    if TYPE_RE.match(value):
        return None
    return "must be an event type (`deal.won`), a segment prefix followed by `.*` (`deal.*`), or `*`"


@dataclass(frozen=True)
class Filter:
    """A checked filter. `exact` and `prefixes` (each ending in '.') are empty when every
    type matches (`any_type`); `sources` is empty when every source matches."""

    any_type: bool = True
    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    sources: frozenset[str] = frozenset()
    # Type prefixes of Nexus's own events the reader may not see (visibility.py).
    hidden: tuple[str, ...] = ()

    def matches(self, type: str, source: str) -> bool:
        if self.sources and source not in self.sources:
            return False
        if self.hidden and is_hidden(type, source, self.hidden):
            return False
        if self.any_type or type in self.exact:
            return True
        return type.startswith(self.prefixes) if self.prefixes else False


def build_filter(types: Sequence[str], sources: Sequence[str], bad: Violations) -> Filter:
    """The Filter for request fields `types` and `sources`; problems go to `bad`."""
    if len(types) > MAX_PATTERNS:
        bad.add("types", f"at most {MAX_PATTERNS} patterns")
    if len(sources) > MAX_PATTERNS:
        bad.add("sources", f"at most {MAX_PATTERNS} sources")
    exact: set[str] = set()
    prefixes: list[str] = []
    any_type = not types
    for i, pattern in enumerate(types[: MAX_PATTERNS + 1]):
        problem = _pattern_problem(pattern)
        if problem:
            bad.add(f"types[{i}]", problem)
        elif pattern == "*":
            any_type = True
        elif pattern.endswith(".*"):
            prefixes.append(pattern[:-1])
        else:
            exact.add(pattern)
    for i, source in enumerate(sources[: MAX_PATTERNS + 1]):
        problem = source_problem(source)
        if problem:
            bad.add(f"sources[{i}]", problem)
    if any_type:
        return Filter(sources=frozenset(sources))
    return Filter(False, frozenset(exact), tuple(sorted(set(prefixes))), frozenset(sources))
