"""The address a request came from: the TCP peer, or what a trusted proxy forwarded. Pure.

A forwarded header (``X-Forwarded-For``, RFC 7239 ``Forwarded``, ``X-Real-IP``) is anyone's
to write, so it is read only when the peer is one of the operator's proxies
(``WRIT_TRUSTED_PROXIES``; the default trusts none), and only the one header the operator
names (``WRIT_FORWARDED_HEADER``): two headers that disagree never pick the answer. The list
is walked from the right, skipping trusted proxies; the first other address is the client's
(RFC 7239 §5.2: the last proxy appends). A malformed value is not guessed at: the peer is
reported.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Source = Literal["peer", "forwarded"]
FORWARDED_HEADERS: Final = ("x-forwarded-for", "forwarded", "x-real-ip")
MAX_HOPS: Final = 32

# RFC 7239 §6: node = nodename [ ":" node-port ]; IPv6 in brackets, the whole value quoted
_NODE: Final = re.compile(r'"?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<v4>[0-9.]+))(?::\d{1,5})?"?')


class Malformed(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ClientAddress:
    ip: str | None
    source: Source  # rctx.gateway_ip_source


def _ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError as err:
        raise Malformed(text[:64]) from err


def _forwarded_for(values: Sequence[str]) -> list[IPAddress]:
    """RFC 7239 §4: the ``for=`` of each element, in order."""
    hops = []
    for element in ",".join(values).split(","):
        pairs = [p.strip() for p in element.split(";")]
        found = [p.split("=", 1)[1] for p in pairs if p.lower().startswith("for=")]
        if len(found) != 1:
            raise Malformed("forwarded element without exactly one for=")
        node = _NODE.fullmatch(found[0])
        if node is None:  # "unknown" and obfuscated identifiers (§6.2, §6.3) name no address
            raise Malformed("forwarded for= names no address")
        hops.append(_ip(node["v6"] or node["v4"]))
    return hops


def _hops(header: str, values: Sequence[str]) -> list[IPAddress]:
    if header == "forwarded":
        return _forwarded_for(values)
    if header == "x-real-ip" and len(values) != 1:
        raise Malformed("x-real-ip repeated")
    return [_ip(part.strip()) for part in ",".join(values).split(",")]


@dataclass(frozen=True, slots=True)
class ProxyPolicy:
    trusted: tuple[IPNetwork, ...] = ()
    header: str = "x-forwarded-for"

    @classmethod
    def of(cls, networks: Iterable[str], header: str = "x-forwarded-for") -> ProxyPolicy:
        if header not in FORWARDED_HEADERS:
            raise ValueError(f"forwarded header must be one of {', '.join(FORWARDED_HEADERS)}")
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks), header)

    def _trusts(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.trusted)

    def client_address(self, peer: str | None, values: Sequence[str]) -> ClientAddress:
        """``values``: every field of the configured header, in order."""
        as_peer = ClientAddress(peer, "peer")
        if not self.trusted or peer is None or not values:
            return as_peer
        try:
            if not self._trusts(_ip(peer)):
                return as_peer  # anyone may write the header: never read from an untrusted peer
            hops = _hops(self.header, values)
        except Malformed:
            return as_peer
        if not hops or len(hops) > MAX_HOPS:
            return as_peer
        for hop in reversed(hops[1:]):
            if not self._trusts(hop):
                return ClientAddress(str(hop), "forwarded")
        return ClientAddress(str(hops[0]), "forwarded")
