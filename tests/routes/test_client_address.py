"""Which address ``rctx.gateway_ip`` reports: the TCP peer, unless a trusted proxy forwarded
one (broker/routes/client_address.py). Forwarded headers from anyone else are ignored."""

from __future__ import annotations

import pytest

from broker.routes.client_address import ClientAddress, ProxyPolicy

PROXY = "10.0.0.5"
TRUSTED = ProxyPolicy.of(["10.0.0.0/24", "fd00::/64"])

# (id, policy, peer, header values, expected address, expected source)
CASES = [
    ("default-trusts-none", ProxyPolicy(), PROXY, ["203.0.113.9"], PROXY, "peer"),
    ("default-trusts-not-even-loopback", ProxyPolicy(), "127.0.0.1", ["203.0.113.9"],
     "127.0.0.1", "peer"),
    ("untrusted-peer", TRUSTED, "198.51.100.7", ["203.0.113.9"], "198.51.100.7", "peer"),
    ("untrusted-peer-many", TRUSTED, "198.51.100.7", ["1.1.1.1, 10.0.0.9"], "198.51.100.7",
     "peer"),
    ("trusted-no-header", TRUSTED, PROXY, [], PROXY, "peer"),
    ("trusted-one-hop", TRUSTED, PROXY, ["203.0.113.9"], "203.0.113.9", "forwarded"),
    ("spoofed-left-entry", TRUSTED, PROXY, ["6.6.6.6, 203.0.113.9"], "203.0.113.9",
     "forwarded"),
    ("two-trusted-proxies", TRUSTED, PROXY, ["203.0.113.9, 10.0.0.7"], "203.0.113.9",
     "forwarded"),
    ("two-fields", TRUSTED, PROXY, ["6.6.6.6", "203.0.113.9"], "203.0.113.9", "forwarded"),
    ("all-trusted", TRUSTED, PROXY, ["10.0.0.8, 10.0.0.7"], "10.0.0.8", "forwarded"),
    ("ipv6", TRUSTED, "fd00::1", ["2001:db8::9"], "2001:db8::9", "forwarded"),
    ("garbage", TRUSTED, PROXY, ["not-an-ip"], PROXY, "peer"),
    ("garbage-right", TRUSTED, PROXY, ["203.0.113.9, evil"], PROXY, "peer"),
    ("empty-entry", TRUSTED, PROXY, ["203.0.113.9,"], PROXY, "peer"),
    ("port-in-xff", TRUSTED, PROXY, ["203.0.113.9:443"], PROXY, "peer"),
    ("too-many-hops", TRUSTED, PROXY, [", ".join(["10.0.0.1"] * 40)], PROXY, "peer"),
    ("peer-not-an-ip", TRUSTED, "testclient", ["203.0.113.9"], "testclient", "peer"),
    ("no-peer", TRUSTED, None, ["203.0.113.9"], None, "peer"),
]

FORWARDED = ProxyPolicy.of(["10.0.0.0/24"], "forwarded")
REAL_IP = ProxyPolicy.of(["10.0.0.0/24"], "x-real-ip")
CASES += [
    ("rfc7239", FORWARDED, PROXY, ["for=203.0.113.9;proto=https"], "203.0.113.9", "forwarded"),
    ("rfc7239-v6-port", FORWARDED, PROXY, ['for="[2001:db8::9]:4711"'], "2001:db8::9",
     "forwarded"),
    ("rfc7239-chain", FORWARDED, PROXY, ["for=6.6.6.6, for=203.0.113.9;by=10.0.0.5"],
     "203.0.113.9", "forwarded"),
    ("rfc7239-case", FORWARDED, PROXY, ["For=203.0.113.9"], "203.0.113.9", "forwarded"),
    ("rfc7239-unknown", FORWARDED, PROXY, ["for=unknown"], PROXY, "peer"),
    ("rfc7239-obfuscated", FORWARDED, PROXY, ["for=_hidden"], PROXY, "peer"),
    ("rfc7239-no-for", FORWARDED, PROXY, ["proto=https"], PROXY, "peer"),
    ("rfc7239-two-for", FORWARDED, PROXY, ["for=1.1.1.1;for=2.2.2.2"], PROXY, "peer"),
    ("real-ip", REAL_IP, PROXY, ["203.0.113.9"], "203.0.113.9", "forwarded"),
    ("real-ip-repeated", REAL_IP, PROXY, ["203.0.113.9", "6.6.6.6"], PROXY, "peer"),
    ("real-ip-untrusted", REAL_IP, "198.51.100.7", ["203.0.113.9"], "198.51.100.7", "peer"),
]


@pytest.mark.parametrize(("policy", "peer", "values", "ip", "source"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_client_address(policy: ProxyPolicy, peer: str | None, values: list[str],
                        ip: str | None, source: str) -> None:
    assert policy.client_address(peer, values) == ClientAddress(ip, source)  # type: ignore[arg-type]


def test_only_the_configured_header_is_named() -> None:
    assert ProxyPolicy.of([]).header == "x-forwarded-for"
    assert FORWARDED.header == "forwarded"
    with pytest.raises(ValueError, match="forwarded header must be one of"):
        ProxyPolicy.of([], "x-client-ip")
