"""`make gen` is idempotent, and a stale gen/ is caught (make test runs `gen.py --check`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("repo")
    for part in ("proto", "tools", "gen", "docs", "server"):
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _gen(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo / "tools" / "gen.py"), *args], capture_output=True, text=True, timeout=120
    )


def test_committed_gen_is_fresh_and_regenerating_changes_nothing(copy: Path) -> None:
    assert _gen(copy, "--check").returncode == 0
    before = {p: p.read_bytes() for p in (copy / "gen").rglob("*") if p.is_file()}
    assert _gen(copy).returncode == 0
    after = {p: p.read_bytes() for p in (copy / "gen").rglob("*") if p.is_file()}
    assert before == after


def test_a_proto_edit_without_regenerating_is_caught(copy: Path) -> None:
    access = copy / "proto" / "nexus" / "common" / "v1" / "access.proto"
    access.write_text(
        access.read_text().replace("Anyone, with no credentials", "Anybody, with no credentials")
    )
    result = _gen(copy, "--check")
    assert result.returncode == 1
    assert "gen/ is stale" in result.stderr
