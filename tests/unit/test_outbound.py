"""The guard on URLs tenants give Nexus to call: only public https targets, checked when
stored (literal addresses in every spelling) and again when resolved (every address)."""

from __future__ import annotations

import pytest

from nexus_server.common import outbound


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://user:pass@example.com/",
        "https://example.com:0/",
        "https://example.com:99999/",
        "https://example.com/" + "a" * 2050,
        "https:///nohost",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://10.0.0.1/",
        "https://192.168.1.20/",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://0177.0.0.1/",
        "https://[::ffff:127.0.0.1]/",
        "https://[fd00::1]/",
        "https://localhost/",
        "https://127.0.0.1./",
        "https://\uff11\uff12\uff17.0.0.1/",
        "https://%31%32%37.0.0.1/",
        "https://192.0.0.8/",
        "https://[3fff::1]/",
        "https://10.1/",
        "ftp://example.com/",
    ],
)
def test_urls_that_could_reach_a_private_network_are_refused(url: str) -> None:
    with pytest.raises(outbound.UrlNotAllowed):
        outbound.check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url", ["https://example.com/hook", "https://93.184.216.34/", "https://[2606:4700::1111]/x"]
)
def test_public_https_urls_are_allowed(url: str) -> None:
    assert outbound.check_url(url, allow_private=False).scheme == "https"


def test_the_development_setting_allows_http_and_loopback() -> None:
    assert outbound.check_url("http://127.0.0.1:8000/hook", allow_private=True).port == 8000
    assert outbound.check_url("http://localhost/hook", allow_private=True).hostname == "localhost"


def _resolver(*addresses: str) -> outbound.Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def _fails(host: str, port: int) -> list[str]:
    raise OSError("no such host")


async def test_a_name_resolving_only_to_public_addresses_is_allowed() -> None:
    found = await outbound.resolve_public(
        "hooks.example", 443, allow_private=False, resolver=_resolver("93.184.216.34", "2606:4700::1111")
    )
    assert found == ["93.184.216.34", "2606:4700::1111"]


async def test_one_private_address_among_public_ones_is_refused() -> None:
    with pytest.raises(outbound.UrlNotAllowed):
        await outbound.resolve_public(
            "rebind.example", 443, allow_private=False, resolver=_resolver("93.184.216.34", "10.1.2.3")
        )


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    for resolver in (_resolver(), _fails):
        with pytest.raises(outbound.UrlNotAllowed):
            await outbound.resolve_public("nowhere.example", 443, allow_private=False, resolver=resolver)


async def test_the_development_setting_allows_private_resolutions() -> None:
    assert await outbound.resolve_public("db", 5432, allow_private=True, resolver=_resolver("10.0.0.5")) == [
        "10.0.0.5"
    ]


async def test_names_idna_cannot_encode_are_refused_not_crashed_on() -> None:
    for host in ("x" * 64 + ".example", "a..b"):
        with pytest.raises(outbound.UrlNotAllowed):
            await outbound.resolve_public(host, 443, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://[abc]/",
        "https://127.0.0.1]:9/",
        "https://example.com/a\x00b",
        "https://example.com/\n",
    ],
    ids=repr,
)
def test_urls_the_parser_cannot_read_are_refused_not_crashed_on(url: str) -> None:
    with pytest.raises(outbound.UrlNotAllowed):
        outbound.check_url(url, allow_private=True)
