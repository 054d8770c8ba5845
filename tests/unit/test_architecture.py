"""The import contract in pyproject.toml holds for the tree, and fails on a forbidden import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = _lint(ROOT / "server")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_a_capability_importing_another_s_store_breaks_the_build(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "server" / "nexus_server", tmp_path / "nexus_server")
    rules = tmp_path / "nexus_server" / "billing" / "wiring.py"
    rules.write_text(rules.read_text() + "\nfrom nexus_server.tenants import store as _reach_in  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "Capabilities meet only through ports handed over by app/wiring.py BROKEN" in result.stdout
    assert "nexus_server.billing.wiring -> nexus_server.tenants.store" in result.stdout


def test_sql_in_a_rules_module_breaks_the_build(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "server" / "nexus_server", tmp_path / "nexus_server")
    rules = tmp_path / "nexus_server" / "tenants" / "rules.py"
    rules.write_text(rules.read_text() + "\nimport sqlalchemy as _sql  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "Rules are pure: no grpc, no SQLAlchemy BROKEN" in result.stdout
