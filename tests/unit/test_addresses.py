"""Which address a call comes from: x-forwarded-for only from a trusted proxy."""

from __future__ import annotations

import pytest

from nexus_server.common.addresses import DEFAULT_TRUSTED, client_address, parse_networks, peer_address
from nexus_server.config import ConfigError, load_settings

LOCAL = parse_networks(DEFAULT_TRUSTED)


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("ipv4:127.0.0.1:5000", "203.0.113.7", LOCAL, "203.0.113.7"),  # Envoy beside us
        ("ipv4:127.0.0.1:5000", "6.6.6.6, 203.0.113.7", LOCAL, "203.0.113.7"),  # Envoy's hop is last
        ("ipv6:[::1]:5000", "2001:db8::1", LOCAL, "2001:db8::1"),
        ("ipv6:[::ffff:127.0.0.1]:5000", "203.0.113.7", LOCAL, "203.0.113.7"),  # dual-stack listener
        ("ipv6:[::ffff:192.0.2.10]:5000", "203.0.113.7", LOCAL, "192.0.2.10"),
        ("ipv4:192.0.2.10:5000", "203.0.113.7", LOCAL, "192.0.2.10"),  # a direct caller
        ("ipv4:127.0.0.1:5000", "203.0.113.7", (), "127.0.0.1"),  # nobody trusted
        ("ipv4:127.0.0.1:5000", "", LOCAL, "127.0.0.1"),
        ("ipv4:127.0.0.1:5000", "not-an-address", LOCAL, "127.0.0.1"),
        ("ipv4:10.1.2.3:5000", "198.51.100.4", parse_networks("10.0.0.0/8"), "198.51.100.4"),
        ("unix:/tmp/sock", "203.0.113.7", LOCAL, ""),
    ],
)
def test_the_caller_address(peer: str, forwarded: str, trusted: tuple, expected: str) -> None:  # type: ignore[type-arg]
    assert client_address(peer, forwarded, trusted) == expected


def test_peer_strings() -> None:
    assert peer_address("ipv4:127.0.0.1:5555") == "127.0.0.1"
    assert peer_address("ipv6:[::1]:5555") == "::1"
    assert peer_address("") == ""


def test_trusted_proxies_setting() -> None:
    assert load_settings({}).trusted_proxies == DEFAULT_TRUSTED
    assert parse_networks(load_settings({"NEXUS_TRUSTED_PROXIES": "none"}).trusted_proxies) == ()
    with pytest.raises(ConfigError, match="NEXUS_TRUSTED_PROXIES"):
        load_settings({"NEXUS_TRUSTED_PROXIES": "10.0.0.0/33"})


def test_envoy_sets_the_address_itself_with_the_trusted_hops_configured() -> None:
    from nexus_server.gateway.envoy_config import render_envoy_config

    default = render_envoy_config(load_settings({}), upstream_port=50051)
    behind_one = render_envoy_config(
        load_settings({"NEXUS_ENVOY_XFF_TRUSTED_HOPS": "1"}), upstream_port=50051
    )
    assert "use_remote_address: true" in default and "xff_num_trusted_hops: 0" in default
    assert "xff_num_trusted_hops: 1" in behind_one
    # What reaches Nexus is the one address Envoy settled on, not the client's list.
    assert 'key: x-forwarded-for, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"' in default
    with pytest.raises(ConfigError, match="NEXUS_ENVOY_XFF_TRUSTED_HOPS"):
        load_settings({"NEXUS_ENVOY_XFF_TRUSTED_HOPS": "-1"})
