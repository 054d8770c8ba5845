from __future__ import annotations

from datetime import timedelta

import pytest

from nexus_server.config import ConfigError, load_settings


def test_defaults_use_embedded_sqlite_under_var() -> None:
    settings = load_settings({})
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.database_url.endswith("/var/nexus.db")
    assert settings.port == 50051


def test_plain_postgresql_url_gets_the_psycopg_driver() -> None:
    settings = load_settings({"NEXUS_DATABASE_URL": "postgresql://u@h/db"})
    assert settings.database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"NEXUS_PORT": "http"}, "NEXUS_PORT"),
        ({"NEXUS_PORT": "70000"}, "NEXUS_PORT"),
        ({"NEXUS_DATABASE_URL": "mysql://x"}, "NEXUS_DATABASE_URL"),
        ({"NEXUS_REDIS_URL": "http://x"}, "NEXUS_REDIS_URL"),
        ({"NEXUS_LOG_LEVEL": "LOUD"}, "NEXUS_LOG_LEVEL"),
        ({"NEXUS_ACCESS_TOKEN_TTL_SECONDS": "-5"}, "NEXUS_ACCESS_TOKEN_TTL_SECONDS"),
        ({"NEXUS_SECRET_KEY": "short"}, "NEXUS_SECRET_KEY"),
        ({"NEXUS_EVENT_LOOP": "trio"}, "NEXUS_EVENT_LOOP"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(env)


def test_durations_and_metrics_off() -> None:
    settings = load_settings({"NEXUS_ACCESS_TOKEN_TTL_SECONDS": "60", "NEXUS_METRICS_PORT": "off"})
    assert settings.access_token_ttl == timedelta(seconds=60)
    assert settings.metrics_port is None


def test_the_event_loop_is_uvloop_unless_asked_for_asyncio() -> None:
    assert load_settings({}).event_loop == "uvloop"
    assert load_settings({"NEXUS_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
