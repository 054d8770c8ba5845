"""`nexus usage import` and `nexus usage current`: an operator loads a JSON-lines file of
records for a tenant, resumes it by running it again, and reads the tenant's usage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nexus_server.app.server import NexusServer
from nexus_server.common.ids import new_id
from tests.integration.test_apikeys_command import _run
from tests.support import make_tenant, unique


async def test_import_is_resumable_and_reports_bad_lines_then_current_shows_the_usage(
    server: tuple[NexusServer, int],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slug = unique("use")
    await make_tenant(server[0], new_id("usr"), slug=slug)
    now = datetime.now(UTC).isoformat()
    lines = [
        json.dumps({"metric": "ai_tokens", "quantity": 10, "idempotency_key": f"imp-{i}", "timestamp": now})
        for i in range(2500)
    ]
    lines.insert(7, "{not json")
    lines.insert(20, json.dumps({"metric": "api_calls", "quantity": 1, "idempotency_key": "reserved"}))
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(lines[:1200]) + "\n")  # an import cut short
    monkeypatch.setenv("NEXUS_DATABASE_URL", database_url)
    assert await _run(["usage", "import", "--tenant", slug, str(path), "--batch", "500"]) == 1
    err = capsys.readouterr().err
    assert "line 8: INVALID_REQUEST" in err and "line 21: METRIC_RESERVED" in err
    assert "1198 accepted, 0 duplicates, 2 rejected" in err

    path.write_text("\n".join(lines) + "\n")  # the whole file: the first part again, then the rest
    assert await _run(["usage", "import", "--tenant", slug, str(path)]) == 1
    assert "1302 accepted, 1198 duplicates, 2 rejected" in capsys.readouterr().err

    assert await _run(["usage", "current", "--tenant", slug, "--json"]) == 0
    shown = {m["metric"]: m for m in map(json.loads, capsys.readouterr().out.splitlines())}
    assert (shown["ai_tokens"]["used"], shown["ai_tokens"]["remaining"]) == (25_000, 75_000)
    assert await _run(["usage", "current", "--tenant", slug]) == 0
    assert "ai_tokens" in capsys.readouterr().out
    assert await _run(["usage", "current", "--tenant", "nobody-here"]) == 1
