"""Which addresses Writ may connect to when it fetches a tool's metadata. Pure: no I/O.

draft-ietf-oauth-client-id-metadata-document, "Server Side Request Forgery (SSRF)
Attacks": the document URL must not resolve to special-use addresses (RFC 6890 and the
IANA special-purpose registries). An address that embeds an IPv4 address (IPv4-mapped,
IPv4-compatible, 6to4, Teredo, NAT64) is judged by what it embeds. An operator may allow
private addresses for internal tools, by network or by host name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), name) for net, name in pairs)


# First match names the range; the more specific entries come first.
_V4: Final = _nets(
    ("0.0.0.0/8", "unspecified"),  # RFC 791 "this network"
    ("10.0.0.0/8", "private"),  # RFC 1918
    ("100.64.0.0/10", "cgnat"),  # RFC 6598 shared address space
    ("127.0.0.0/8", "loopback"),  # RFC 1122
    ("169.254.169.254/32", "metadata"),  # cloud instance metadata
    ("169.254.0.0/16", "link_local"),  # RFC 3927
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "ietf_protocol"),  # RFC 6890
    ("192.0.2.0/24", "documentation"),  # RFC 5737
    ("192.88.99.0/24", "relay_anycast"),  # RFC 7526 (deprecated 6to4 relays)
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),  # RFC 2544
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),  # RFC 5771
    ("255.255.255.255/32", "broadcast"),  # RFC 919
    ("240.0.0.0/4", "reserved"),  # RFC 1112
)
_V6: Final = _nets(
    ("::/128", "unspecified"),  # RFC 4291
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "ipv4_mapped"),  # RFC 4291 §2.5.5.2
    ("::/96", "ipv4_compatible"),  # RFC 4291 §2.5.5.1 (deprecated)
    ("64:ff9b:1::/48", "nat64_local"),  # RFC 8215
    ("100::/64", "discard"),  # RFC 6666
    ("2001:db8::/32", "documentation"),  # RFC 3849
    ("3fff::/20", "documentation"),  # RFC 9637
    ("5f00::/16", "segment_routing"),  # RFC 9602
    ("fc00::/7", "unique_local"),  # RFC 4193
    ("fe80::/10", "link_local"),  # RFC 4291
    ("fec0::/10", "site_local"),  # RFC 3879 (deprecated)
    ("ff00::/8", "multicast"),
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_TEREDO: Final = ipaddress.ip_network("2001::/32")  # RFC 4380
_IETF_V6: Final = ipaddress.ip_network("2001::/23")  # RFC 2928
_SIX_TO_FOUR: Final = ipaddress.ip_network("2002::/16")  # RFC 3056
_GLOBAL_UNICAST: Final = ipaddress.ip_network("2000::/3")  # RFC 4291 §2.4

#: Never a destination, whatever the allow-list says.
NEVER: Final = frozenset({"unspecified", "multicast", "broadcast", "ipv4_compatible"})
#: What a host on the allow-list may resolve to (not link-local, so never cloud metadata).
HOST_ALLOWED: Final = frozenset({"private", "loopback", "unique_local", "cgnat"})


class BlockedAddress(Exception):
    def __init__(self, category: str, address: str) -> None:
        super().__init__(f"{address} is a special-use address ({category})")
        self.category = category
        self.address = address


def parse_address(text: str) -> IPAddress:
    """An address as ``getaddrinfo`` returns it; an IPv6 zone (``%eth0``) is dropped."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def display(address: IPAddress) -> str:
    """RFC 4291 §2.2: an IPv4-mapped address shown with its IPv4 part dotted."""
    mapped = getattr(address, "ipv4_mapped", None)
    return f"::ffff:{mapped}" if mapped is not None else str(address)


def special_use(address: IPAddress) -> str | None:
    """The special-use range ``address`` lies in, or None for a global unicast address."""
    if isinstance(address, ipaddress.IPv4Address):
        for net, name in _V4:
            if address in net:
                return name
        return None if address.is_global else "reserved"
    for net, name in _V6:
        if address in net:
            if name == "ipv4_mapped":
                inner = special_use(address.ipv4_mapped)  # type: ignore[arg-type]
                return f"ipv4_mapped:{inner}" if inner else "ipv4_mapped"
            return name
    embedded: ipaddress.IPv4Address | None = None
    kind = ""
    if address in _NAT64:
        embedded, kind = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "nat64"
    elif address in _TEREDO:
        embedded, kind = address.teredo[1] if address.teredo else None, "teredo"
    elif address in _SIX_TO_FOUR:
        embedded, kind = address.sixtofour, "6to4"
    if embedded is not None:
        inner = special_use(embedded)
        return f"{kind}:{inner}" if inner else None
    if address in _IETF_V6:
        return "ietf_protocol"
    if address not in _GLOBAL_UNICAST:
        return "reserved"
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Deny special-use addresses unless the operator allowed them."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, networks: Iterable[str] = (), hosts: Iterable[str] = ()) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks),
                   frozenset(h.lower().rstrip(".") for h in hosts))

    def check(self, host: str, address: IPAddress) -> None:
        """Raise ``BlockedAddress`` unless ``host`` may be reached at ``address``."""
        category = special_use(address)
        if category is None:
            return
        if category in NEVER:
            raise BlockedAddress(category, display(address))
        if any(address.version == n.version and address in n for n in self.allowed_networks):
            return
        if host.lower().rstrip(".") in self.allowed_hosts and category in HOST_ALLOWED:
            return
        raise BlockedAddress(category, display(address))
