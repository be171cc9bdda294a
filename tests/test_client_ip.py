import ipaddress
import os

import pytest
from litestar import Request

from service.api.client_identity import client_identity
from service.core.settings import SettingsError, settings_from_env
from service.limiter.client_ip import counted_network, forwarded_for, resolve_client_ip
from service.limiter.identity import identity_of
from tests.support.cli import run_cli

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


def test_an_untrusted_peer_is_the_client_whatever_it_claims():
    assert resolve_client_ip("198.51.100.9", ["203.0.113.7"], PROXIES) == "198.51.100.9"


def test_no_trusted_proxies_means_no_header_is_believed():
    assert resolve_client_ip("127.0.0.1", ["203.0.113.7"], ()) == "127.0.0.1"


def test_a_trusted_peer_hands_over_to_the_rightmost_untrusted_hop():
    # The client forged "1.2.3.4"; the ingress appended the address it saw.
    header = ["1.2.3.4, 203.0.113.7, 10.1.2.3"]
    assert resolve_client_ip("10.0.0.5", header, PROXIES) == "203.0.113.7"


def test_several_header_lines_are_one_list():
    assert resolve_client_ip("127.0.0.1", ["1.2.3.4", "203.0.113.7"], PROXIES) == "203.0.113.7"


def test_a_chain_of_only_trusted_hops_ends_at_the_leftmost():
    assert resolve_client_ip("127.0.0.1", ["10.0.0.1, 10.0.0.2"], PROXIES) == "10.0.0.1"


def test_garbage_in_the_header_stops_the_walk():
    assert resolve_client_ip("127.0.0.1", ["203.0.113.7, garbage"], PROXIES) == "127.0.0.1"
    assert resolve_client_ip("127.0.0.1", [""], PROXIES) == "127.0.0.1"


def test_ipv6_clients():
    assert resolve_client_ip("127.0.0.1", ["2001:db8::1"], PROXIES) == "2001:db8::1"


def test_ipv4_with_a_port_as_some_load_balancers_write_it():
    assert resolve_client_ip("127.0.0.1", ["203.0.113.7:5555"], PROXIES) == "203.0.113.7"
    assert resolve_client_ip("127.0.0.1", ["198.51.100.1, 203.0.113.7:5555, 10.0.0.1:80"], PROXIES) == (
        "203.0.113.7"
    )


def test_ipv6_in_brackets_with_or_without_a_port():
    for hop in ("[2001:db8:7::1]:443", "[2001:db8:7::1]", " [2001:DB8:7:0::1]:443 "):
        assert resolve_client_ip("127.0.0.1", [hop], PROXIES) == "2001:db8:7::1", hop


def test_a_bare_ipv6_address_is_never_read_as_address_and_port():
    assert resolve_client_ip("127.0.0.1", ["2001:db8::1:443"], PROXIES) == "2001:db8::1:443"


def test_ipv4_mapped_addresses_are_their_ipv4_address():
    for hop in ("::ffff:203.0.113.7", "[::ffff:203.0.113.7]:80", "::ffff:cb00:7107"):
        assert resolve_client_ip("127.0.0.1", [hop], PROXIES) == "203.0.113.7", hop
    # A dual-stack listener sees IPv4 peers so: a trusted proxy stays trusted, a client stays itself.
    assert resolve_client_ip("::ffff:10.0.0.5", ["203.0.113.7"], PROXIES) == "203.0.113.7"
    assert resolve_client_ip("::ffff:198.51.100.9", ["203.0.113.7"], PROXIES) == "198.51.100.9"


@pytest.mark.parametrize(
    "hop",
    [
        "203.0.113.7:",
        "203.0.113.7:http",
        "203.0.113.7:123456",
        "[2001:db8::1",
        "[2001:db8::1]443",
        "[2001:db8::1]:",
        "fe80::1%eth0",  # a zone of the proxy's own interfaces; any name would be another bucket
        "unknown",
        "_hidden",
    ],
)
def test_a_hop_that_names_no_address_ends_the_walk_at_the_proxy(hop):
    assert resolve_client_ip("127.0.0.1", [f"198.51.100.1, {hop}"], PROXIES) == "127.0.0.1"


def _forwarded(*lines, peer="127.0.0.1"):
    return resolve_client_ip(peer, list(lines), PROXIES, forwarded=True)


def test_forwarded_for_in_its_rfc_7239_forms():
    assert _forwarded("for=203.0.113.7") == "203.0.113.7"
    assert _forwarded('for="[2001:db8:cafe::17]:4711"') == "2001:db8:cafe::17"
    assert _forwarded('For="203.0.113.7:80";proto=https;by=10.0.0.1') == "203.0.113.7"
    assert _forwarded('for="203.0.113.7:_p1"') == "203.0.113.7"  # an obfuscated port hides no address
    assert _forwarded("for=203.0.113.7:4711") == "203.0.113.7"  # unquoted, as some proxies write it
    assert _forwarded('for="::ffff:203.0.113.7"') == "203.0.113.7"
    assert _forwarded(r'for="\[2001:db8::1\]"') == "2001:db8::1"  # quoted-pair escapes


def test_forwarded_walks_from_the_right_over_elements_and_lines():
    # The client forged the first element; the proxies appended theirs.
    assert _forwarded("for=1.2.3.4, for=203.0.113.7;proto=https, for=10.1.2.3") == "203.0.113.7"
    assert _forwarded("for=1.2.3.4", 'for="[2001:db8::9]"', "for=10.1.2.3") == "2001:db8::9"
    assert _forwarded("for=203.0.113.7", peer="198.51.100.9") == "198.51.100.9", "untrusted peer"


@pytest.mark.parametrize(
    "line",
    [
        "for=unknown",
        'for="_gazonk"',
        "proto=https;by=10.0.0.1",  # no for= at all
        'for="203.0.113.7',  # an unbalanced quote
        "for=203.0.113.7;for=198.51.100.1",  # a parameter twice in one element
        "for=203.0.113.7 junk",
        "for",
    ],
)
def test_forwarded_that_names_no_client_counts_as_the_proxy(line):
    assert _forwarded(f"for=198.51.100.1, {line}") == "127.0.0.1"


def test_forwarded_for_reads_each_element_of_a_line():
    assert forwarded_for('for=192.0.2.43, for="[2001:db8:cafe::17]";by=x, proto=http') == [
        "192.0.2.43",
        "[2001:db8:cafe::17]",
        None,
    ]


@pytest.mark.parametrize(
    ("address", "prefix", "network"),
    [
        ("2001:db8:1:2::c", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2ff::1", 56, "2001:db8:1:200::/56"),
        ("2001:db8:1:2::c", 128, None),
        ("203.0.113.7", 64, None),
        ("testclient", 64, None),
    ],
)
def test_ipv6_clients_are_counted_by_network_and_ipv4_ones_alone(address, prefix, network):
    assert counted_network(address, prefix) == network


def _identity(peer, headers, **env):
    settings = settings_from_env({"FLASHSALE_TRUSTED_PROXIES": "127.0.0.1/32", **env})
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    request = Request({"type": "http", "client": (peer, 4711), "headers": raw, "path": "/buy"})
    return client_identity(request, settings)


def _ip_bucket(peer, forwarded_for=None, prefix="64"):
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    return identity_of("ip", _identity(peer, headers, **_prefix(prefix)))


def _prefix(prefix):
    return {"FLASHSALE_RATE_IPV6_PREFIX": prefix}


def test_many_ipv4_mapped_clients_never_share_a_bucket():
    """express-rate-limit's IPv6 subnet default once put every ::ffff:a.b.c.d client into one
    bucket (CVE-2026-30827): here each is its IPv4 address, counted alone, at any prefix."""
    mapped = [f"::ffff:198.51.100.{i}" for i in range(20)]
    alone = {f"ip:198.51.100.{i}" for i in range(20)}
    for prefix in ("64", "56", "1"):
        assert {_ip_bucket(address, prefix=prefix) for address in mapped} == alone  # dual-stack peers
        assert {_ip_bucket("127.0.0.1", address, prefix) for address in mapped} == alone  # via the proxy


def test_one_network_one_bucket_and_the_exact_address_kept():
    clients = [_identity("127.0.0.1", {"x-forwarded-for": f"2001:db8:1:2::{i:x}"}) for i in range(1, 13)]
    assert {identity_of("ip", client) for client in clients} == {"ip:2001:db8:1:2::/64"}
    assert clients[11].ip == "2001:db8:1:2::c", "orders and Idempotency-Keys keep the address itself"
    assert _ip_bucket("127.0.0.1", "2001:db8:1:2::1", prefix="128") == "ip:2001:db8:1:2::1"


def test_only_the_header_the_proxies_write_is_read():
    headers = {"x-forwarded-for": "203.0.113.7", "forwarded": "for=198.51.100.1"}
    assert _identity("127.0.0.1", headers).ip == "203.0.113.7"
    assert _identity("127.0.0.1", headers, FLASHSALE_CLIENT_IP_HEADER="forwarded").ip == "198.51.100.1"


@pytest.mark.parametrize("value", ["0", "129", "-1", "64.5", "/64", "sixty-four"])
def test_the_ipv6_prefix_must_be_1_to_128(value):
    with pytest.raises(SettingsError, match="FLASHSALE_RATE_IPV6_PREFIX: must be an IPv6 prefix length"):
        settings_from_env(_prefix(value))


def test_the_client_ip_header_is_one_of_two():
    with pytest.raises(
        SettingsError, match="FLASHSALE_CLIENT_IP_HEADER: must be x-forwarded-for or forwarded"
    ):
        settings_from_env({"FLASHSALE_CLIENT_IP_HEADER": "x-real-ip"})
    assert settings_from_env({"FLASHSALE_CLIENT_IP_HEADER": "Forwarded"}).client_ip_header == "forwarded"
    assert settings_from_env({}).rate_ipv6_prefix == 64


def test_flashsale_api_refuses_a_bad_prefix_at_start():
    result = run_cli({**os.environ, "FLASHSALE_RATE_IPV6_PREFIX": "200"}, "api", timeout=30)
    assert result.returncode != 0
    assert "FLASHSALE_RATE_IPV6_PREFIX: must be an IPv6 prefix length" in result.stderr
    assert "Traceback" not in result.stderr
