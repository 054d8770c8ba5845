"""Every ErrorInfo reason the server raises is declared in an ErrorReason enum of the contract."""

from __future__ import annotations

import re
from pathlib import Path

from nexus_server.common.descriptors import load_descriptor_set, nexus_files

SERVER = Path(__file__).resolve().parents[2] / "server" / "nexus_server"
# reason="X" / reason='X' in calls, and `default_reason = "X"` in error classes.
_RAISED = re.compile(r"""reason\s*=\s*["']([A-Z][A-Z0-9_]+)["']""")


def _declared() -> set[str]:
    fds = load_descriptor_set()
    return {
        value.name
        for f in nexus_files(fds)
        for enum in f.enum_type
        if enum.name == "ErrorReason"
        for value in enum.value
    }


def test_raised_reasons_are_declared_in_the_contract() -> None:
    declared = _declared()
    undeclared: dict[str, list[str]] = {}
    for path in sorted(SERVER.rglob("*.py")):
        for reason in _RAISED.findall(path.read_text(encoding="utf-8")):
            if reason not in declared:
                undeclared.setdefault(reason, []).append(str(path.relative_to(SERVER)))
    assert not undeclared, f"reasons raised but not in any ErrorReason enum: {undeclared}"


def test_the_scan_sees_reasons() -> None:
    # Guards the regex: the error classes alone raise several declared reasons.
    text = (SERVER / "common" / "errors.py").read_text(encoding="utf-8")
    assert {"INVALID_REQUEST", "RATE_LIMITED", "NOT_IMPLEMENTED"} <= set(_RAISED.findall(text))
