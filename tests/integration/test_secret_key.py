"""The sealing key: `nexus serve` refuses the built-in development key unless a development
setting allows it, what Nexus writes is owner-only, and a rotated key re-seals what the
previous one sealed."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.exceptions import InvalidTag
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from nexus_server.common.private_files import private_dir, write_private
from nexus_server.common.sealing import Sealer
from nexus_server.config import ROOT, ConfigError, check_secret_key, load_settings
from nexus_server.db.engine import create_async
from nexus_server.db.migrate import upgrade
from nexus_server.db.uow import Database
from nexus_server.identity import keys
from nexus_server.identity.mail import Mailer
from nexus_server.identity.resealing import reseal_all
from nexus_server.identity.tables import mail_outbox, signing_keys
from tests.conftest import POSTGRES_URL, _drop_postgres_database, _fresh_postgres_database
from tests.support import free_port

OLD_KEY, NEW_KEY = "old-key-" + "a" * 32, "new-key-" + "b" * 32


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env.update(
        NEXUS_VAR_DIR=str(tmp_path / "var"),
        NEXUS_PORT=str(free_port()),
        NEXUS_METRICS_PORT="off",
        NEXUS_LOG_LEVEL="INFO",
        **extra,
    )
    return env


# --- refusal ---------------------------------------------------------------------------------


def test_the_development_key_is_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="NEXUS_SECRET_KEY"):
        check_secret_key(load_settings({}))
    with pytest.raises(ConfigError, match="NEXUS_SECRET_KEY"):
        check_secret_key(load_settings({"NEXUS_DATABASE_URL": "postgresql://db/nexus"}))
    check_secret_key(load_settings({"NEXUS_ALLOW_DEV_SECRET_KEY": "1"}))
    check_secret_key(load_settings({"NEXUS_SECRET_KEY": NEW_KEY}))
    with pytest.raises(ConfigError, match="NEXUS_ALLOW_DEV_SECRET_KEY"):
        load_settings({"NEXUS_ALLOW_DEV_SECRET_KEY": "maybe"})


def test_serve_with_the_development_key_exits_non_zero_saying_why(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nexus_server.cli", "serve"],
        env=serve_env(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "NEXUS_SECRET_KEY" in result.stderr, result.stderr
    assert "NEXUS_ALLOW_DEV_SECRET_KEY=1" in result.stderr


async def test_serve_with_the_development_setting_starts_and_warns(tmp_path: Path) -> None:
    env = serve_env(tmp_path, NEXUS_ALLOW_DEV_SECRET_KEY="1")
    upgrade(load_settings(env).database_url)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nexus_server.cli", "serve", env=env, stdout=out, stderr=out
        )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{env['NEXUS_PORT']}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
    assert "DEVELOPMENT SECRET KEY" in log.read_text()
    var = Path(env["NEXUS_VAR_DIR"])
    assert mode(var) == 0o700
    assert mode(var / "nexus.db") == 0o600


# --- permissions -----------------------------------------------------------------------------


async def test_the_sqlite_file_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "nexus.db"
    url = f"sqlite+aiosqlite:///{path}"
    old_umask = os.umask(0o022)
    try:
        upgrade(url)
        engine = create_async(url)
        async with Database(engine).unit_of_work() as uow:
            await uow.session.execute(select(signing_keys.c.kid))
        await engine.dispose()
    finally:
        os.umask(old_umask)
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600
    for sidecar in path.parent.glob("nexus.db-*"):
        assert mode(sidecar) == 0o600, sidecar


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "nexus.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    os.chmod(path, 0o644)
    upgrade(url)
    assert mode(path) == 0o600


async def test_the_mail_sink_is_owner_only(tmp_path: Path) -> None:
    sink = tmp_path / "mail"
    sink.mkdir(mode=0o755)
    os.chmod(sink, 0o755)
    mailer = Mailer(Any, Sealer(NEW_KEY, "mail-outbox"), sender="x@y", smtp_url=None, var_dir=tmp_path)  # type: ignore[arg-type]
    old_umask = os.umask(0o022)
    try:
        await mailer._deliver("mail_1", b"Subject: hi\r\n\r\nbody")
    finally:
        os.umask(old_umask)
    assert mode(sink) == 0o700
    assert mode(sink / "mail_1.eml") == 0o600
    assert (sink / "mail_1.eml").read_bytes() == b"Subject: hi\r\n\r\nbody"


def test_private_helpers_hold_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        made = private_dir(tmp_path / "a" / "b")
        write_private(made / "envoy.yaml", b"listeners: []")
    finally:
        os.umask(old_umask)
    assert mode(tmp_path / "a") == 0o700 and mode(made) == 0o700
    assert mode(made / "envoy.yaml") == 0o600


# --- rotation --------------------------------------------------------------------------------


def test_a_sealer_opens_what_the_previous_key_sealed_and_seals_with_the_new() -> None:
    old = Sealer(OLD_KEY, "signing-keys")
    rotated = Sealer(NEW_KEY, "signing-keys", previous=OLD_KEY)
    sealed = old.seal(b"secret")
    assert rotated.open(sealed) == b"secret"
    fresh = rotated.reseal(sealed)
    assert fresh is not None and Sealer(NEW_KEY, "signing-keys").open(fresh) == b"secret"
    assert rotated.reseal(fresh) is None
    with pytest.raises(InvalidTag):
        Sealer(NEW_KEY, "signing-keys").open(sealed)


@pytest.fixture(params=["sqlite", "postgres"])
async def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database of this test's own: re-sealing touches every row."""
    name = ""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'nexus.db'}"
    else:
        if not POSTGRES_URL:
            pytest.skip("NEXUS_TEST_POSTGRES_URL is not set")
        url, name = _fresh_postgres_database(POSTGRES_URL)
    upgrade(url)
    db = Database(create_async(url))
    try:
        yield db
    finally:
        await db.dispose()
        if name:
            _drop_postgres_database(POSTGRES_URL, name)


async def test_start_up_after_a_rotation_re_seals_every_stored_secret(
    fresh_db: Database, tmp_path: Path
) -> None:
    old_signing, old_mail = Sealer(OLD_KEY, "signing-keys"), Sealer(OLD_KEY, "mail-outbox")
    async with fresh_db.unit_of_work() as uow:
        kid = await keys.create_key(uow, old_signing, uow.clock.now())
        await Mailer(fresh_db, old_mail, sender="x@y", smtp_url=None, var_dir=tmp_path).queue(
            uow, "someone@example.com", "hello", "body"
        )
    rotated = {
        purpose: Sealer(NEW_KEY, purpose, previous=OLD_KEY)
        for purpose in ("signing-keys", "totp-secrets", "mail-outbox")
    }
    resealed = await reseal_all(
        fresh_db, signing=rotated["signing-keys"], totp=rotated["totp-secrets"], mail=rotated["mail-outbox"]
    )
    assert resealed == 2
    async with fresh_db.unit_of_work(readonly=True) as uow:
        private = (
            await uow.session.execute(select(signing_keys.c.private_key).where(signing_keys.c.kid == kid))
        ).scalar_one()
        message = (await uow.session.execute(select(mail_outbox.c.message))).scalar_one()
    # The new key alone opens them now: the previous one can be dropped.
    Sealer(NEW_KEY, "signing-keys").open(private)
    assert b"hello" in Sealer(NEW_KEY, "mail-outbox").open(message)
    assert (
        await reseal_all(
            fresh_db,
            signing=rotated["signing-keys"],
            totp=rotated["totp-secrets"],
            mail=rotated["mail-outbox"],
        )
        == 0
    )


def test_an_existing_database_file_is_tightened_without_being_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing any descriptor of a file drops this process's POSIX locks on it: SQLite's, on a
    database the in-process server has open (that surfaced as `disk I/O error`)."""
    path = tmp_path / "nexus.db"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    opened: list[str] = []
    real_open = os.open

    def recording_open(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(file, flags, *args, **kwargs)  # O_EXCL on an existing file raises
        opened.append(str(file))
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    from nexus_server.db.engine import private_sqlite_file

    private_sqlite_file(f"sqlite+aiosqlite:///{path}")
    assert mode(path) == 0o600
    assert str(path) not in opened
