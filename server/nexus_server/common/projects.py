"""The catalog of the ecosystem's projects that access can be granted to.

The operator may replace it with NEXUS_PROJECTS (see config.py); order is catalog order. It is
installation configuration, checked when settings load, so it lives in the shared kernel; the
tenants capability grants access to its projects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KEY = re.compile(r"^[a-z][a-z0-9-]{0,62}$")

# Lowest first: a higher role includes the lower ones.
ROLE_ORDER = ("read_only", "user", "admin")


@dataclass(frozen=True)
class Project:
    key: str
    display_name: str
    description: str = ""


DEFAULT_PROJECTS: tuple[Project, ...] = (
    Project("nexus-sales", "Nexus Sales", "CRM: contacts, deals and the sales pipeline."),
    Project("dream-people", "Dream People", "People and portfolio management."),
    Project("testing-hub", "Testing Hub", "Quality assurance: test plans, runs and reports."),
    Project("liminal", "Liminal", "Psychology practice and journaling."),
    Project("resonance", "Resonance", "Research notes and collaboration."),
    Project("agi-safety", "AGI Safety", "Research on the safety of advanced AI."),
    Project("liminal-shelter", "Liminal Shelter", "Support and shelter services."),
)


def parse_catalog(raw: str) -> tuple[Project, ...]:
    """`key[=Display Name],…` → projects; raises ValueError naming the bad entry."""
    projects: list[Project] = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        key, _, name = entry.partition("=")
        key = key.strip()
        if not KEY.fullmatch(key) or key.endswith("-"):
            raise ValueError(f"project key {key!r} must be 1-63 of a-z, 0-9, '-', starting with a letter")
        if key in {p.key for p in projects}:
            raise ValueError(f"project key {key!r} appears twice")
        projects.append(Project(key, name.strip()[:100] or key))
    if not projects:
        raise ValueError("the project catalog is empty")
    return tuple(projects)


def role_at_least(held: str, needed: str | None) -> bool:
    return needed is None or ROLE_ORDER.index(held) >= ROLE_ORDER.index(needed)
