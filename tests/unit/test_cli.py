"""The `nexus` command lives in nexus_server/cli/ and nowhere else, and offers every
subcommand the docs name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nexus_server
from nexus_server import cli

PACKAGE = Path(nexus_server.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_command_line_code_is_only_in_the_cli_package() -> None:
    outside = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "cli" not in path.relative_to(PACKAGE).parts[:1] and "argparse" in _imports(path)
    )
    assert outside == []
    assert not list(PACKAGE.glob("*/commands.py"))


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["migrate"],
        ["dev"],
        ["events", "tail"],
        ["webhooks", "listen"],
        ["admin", "create"],
        ["keys", "rotate"],
        ["apikey", "issue"],
    ],
    ids=" ".join,
)
def test_every_subcommand_is_offered(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main([*argv, "--help"])
    assert raised.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: nexus {' '.join(argv)}")
