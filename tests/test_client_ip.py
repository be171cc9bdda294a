import ipaddress

from service.client_ip import resolve_client_ip

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
