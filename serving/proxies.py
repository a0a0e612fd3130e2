"""Which peers may speak for a client, and so which address a request really comes from.

`STUDIO_TRUSTED_PROXIES` lists the reverse proxies whose `X-Forwarded-For` is believed: comma-separated
IP addresses or CIDR networks (`10.0.0.5, 10.1.0.0/16, fd00::/8`), none by default. This module is
Django-free so that the gateway and the control plane read the variable with the same code: one value
means the same thing to both.

What is guaranteed:
- With no trusted proxy, a request's address is its TCP peer; no header can change it.
- From a trusted peer, `X-Forwarded-For` is read from the right, skipping trusted proxies, and the first
  address that is not one is the client. Entries to its left were written by the client itself and are
  never read. An entry that is not an IP address ends the walk at the last trusted hop, so a client cannot
  mint a new address by sending garbage.
- Addresses come back in one spelling (`ipaddress`'s text form, IPv4-mapped IPv6 as IPv4), so one client
  is counted under one name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from serving.envparse import ConfigError

VARIABLE = "STUDIO_TRUSTED_PROXIES"
FORWARDED_FOR = "X-Forwarded-For"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> Address | None:
    """An address as a peer or an `X-Forwarded-For` entry spells it (`1.2.3.4`, `1.2.3.4:5678`, `::1`,
    `[::1]:80`), IPv4-mapped IPv6 unwrapped; None when it is not an IP address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port, as some proxies write it
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class TrustedProxies:
    """The parsed list; an empty one trusts nobody."""

    networks: tuple[Network, ...] = ()

    def trusts(self, address: Address | None) -> bool:
        """Whether `address` is one of the trusted proxies."""
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> str:
        """The client's address for a request from `peer` that carried these `X-Forwarded-For` values
        (in the order received). `peer` itself unless it is a trusted proxy; "unknown" without a peer."""
        address = parse_address(peer) if peer else None
        if address is None:
            return peer or "unknown"
        if not self.trusts(address):
            return str(address)
        entries = [entry for value in forwarded_for for entry in value.split(",")]
        for entry in reversed(entries):
            hop = parse_address(entry)
            if hop is None:
                break
            address = hop
            if not self.trusts(hop):
                break
        return str(address)


def parse_trusted_proxies(value: str | None, name: str = VARIABLE) -> TrustedProxies:
    """Parse a comma-separated list of IP addresses and CIDR networks; raises ConfigError naming `name`
    and the item that is neither."""
    networks = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            # Host bits are forgiven: 10.0.0.1/8 means 10.0.0.0/8.
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"{name}: {item!r} is not an IP address or network ({exc}); list the reverse proxies in "
                "front of this server, comma-separated, e.g. 10.0.0.5,10.1.0.0/16."
            ) from None
    return TrustedProxies(tuple(networks))


def client_subject(address: str) -> str:
    """What failures from a client address are counted under: the address, or for IPv6 its /64 (one host
    commonly holds a whole /64, and could otherwise pick a fresh address per attempt)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
