"""Which hosts and ports webhooks may reach: the Admin's allow-list, `STUDIO_WEBHOOK_ALLOWED_HOSTS`.

Entries are host names (`hooks.example.com`), name wildcards (`*.example.com`), `*` for any host, IP
addresses or networks (`10.1.2.3`, `10.1.2.0/24`, `[fd00::/8]`), each optionally with a port
(`hooks.example.com:9000`, `127.0.0.1:8001`, `10.0.0.0/8:9000`). An entry without a port permits the
usual web ports only (80, 443, 8080, 8443). A URL's host and port must match an entry.

Addresses that are not public (private, loopback, link-local such as the cloud metadata address, shared,
multicast, reserved, unspecified: the control plane's own neighbourhood) are refused unless an address or
network entry contains them, on that port. Names never open them, not even a name listed exactly: a name
is only as trustworthy as whoever answers for it in DNS. An IPv6 address that carries an IPv4 one
(IPv4-mapped or -compatible, 6to4, Teredo, NAT64) is judged by the IPv4 address it reaches.

The default, `*`, thus means: any public address, on the usual web ports.

`check_url` is for saving a subscription (no DNS lookup: the name may legitimately resolve later);
`resolve_permitted` is for sending, and checks every address the name resolves to at that moment.
"""

import ipaddress
import re
import socket
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from django.conf import settings

DEFAULT_PORTS = frozenset({80, 443, 8080, 8443})
# NAT64 prefixes: the well-known one carries the IPv4 address in its last 32 bits; the local-use one
# (RFC 8215) reaches only the operator's own network and is never public.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})\Z")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostRefused(Exception):
    """The URL's host is not permitted; the message says why and what an Admin can change."""


@dataclass(frozen=True)
class Entry:
    """One allow-list entry: a name pattern or a network, and a port (None: the default ports)."""

    pattern: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    def permits_port(self, port: int) -> bool:
        return port == self.port if self.port is not None else port in DEFAULT_PORTS

    def contains(self, address: Address) -> bool:
        return self.network is not None and any(
            candidate.version == self.network.version and candidate in self.network
            for candidate in (address, *_carried(address))
        )


def parse_entry(text: str) -> Entry:
    """An entry as written in the setting; ValueError when it is none of the accepted forms."""
    text = text.strip().lower()
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: write [address]:port")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        network = None
        if host != "*" and not is_name(host.removeprefix("*.")):
            raise ValueError(f"{text!r} is neither a host name, a *.name wildcard, an address nor a network")
    return Entry(host, network, int(port) if port is not None else None)


def is_name(host: str) -> bool:
    """Whether host is an ASCII DNS name: dot-separated labels of letters, digits, hyphens (and _)."""
    labels = host.lower().removesuffix(".").split(".")
    return len(host) <= 253 and all(LABEL_RE.match(label) for label in labels)


def _entries() -> list[Entry]:
    return [parse_entry(entry) for entry in settings.STUDIO_WEBHOOK_ALLOWED_HOSTS if entry.strip()]


def _carried(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches through a transition mechanism (none for plain IPv6)."""
    if address.version == 4:
        return []
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)  # the relay server and the client behind it
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


def is_public(address: Address) -> bool:
    """Whether the address, or every IPv4 address it carries, is a public unicast one."""
    if address.version == 6 and address in LOCAL_NAT64:
        return False
    carried = _carried(address)
    if carried:
        return all(is_public(inner) for inner in carried)
    return address.is_global and not address.is_multicast


def literal(host: str) -> Address | None:
    """The address a URL's host names, if it is one, in any form the resolver accepts: `127.0.0.1`,
    `::1`, and the numeric IPv4 forms `2130706433`, `0x7f000001`, `127.1`."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and ":" not in host and " " not in host:
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _permitted(host: str, port: int) -> Entry | None:
    """The first entry that permits host (a name or an address) on port."""
    name = host.lower().rstrip(".")
    address = literal(name)
    for entry in _entries():
        if not entry.permits_port(port):
            continue
        if entry.network is not None:
            if address is not None and entry.contains(address):
                return entry
        elif entry.pattern == "*" or (address is None and fnmatchcase(name, entry.pattern)):
            return entry
    return None


def _address_permitted(address: Address, port: int) -> bool:
    return is_public(address) or any(
        entry.contains(address) and entry.permits_port(port) for entry in _entries()
    )


def _refusal(host: str, port: int) -> HostRefused:
    return HostRefused(
        f"Webhooks may not be sent to {host} on port {port}: it is not in the allow-list "
        "(STUDIO_WEBHOOK_ALLOWED_HOSTS; entries without a port permit 80, 443, 8080 and 8443). "
        "Ask an Admin to add it."
    )


def _private(host: str, address: Address, port: int, resolved: bool) -> HostRefused:
    how = "resolves to" if resolved else "is"
    entry = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    return HostRefused(
        f"Webhooks may not be sent to {host}: it {how} {address}, a private, loopback or link-local address. "
        f"An Admin can allow it by adding the address or its network, with the port ({entry}), to "
        "STUDIO_WEBHOOK_ALLOWED_HOSTS."
    )


def check_url(url: str) -> None:
    """Refuse a URL that is not http(s), or whose host or port the allow-list does not permit."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HostRefused("A webhook URL must be an http:// or https:// URL with a host.")
    if parts.username or parts.password:
        raise HostRefused(
            "Put no credentials in a webhook URL: deliveries are signed with the webhook's secret."
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise HostRefused("The URL's port must be a number from 1 to 65535.") from None
    host = parts.hostname
    address = literal(host)
    if address is None and not is_name(host):
        if not host.isascii():
            raise HostRefused(
                f"Write the host name {host} in its ASCII form (IDNA, xn--...), as DNS knows it."
            )
        raise HostRefused(f"{host} is not a host name: use letters, digits, hyphens and dots.")
    if _permitted(host, port) is None:
        raise _refusal(host, port)
    if address is not None and not _address_permitted(address, port):
        raise _private(host, address, port, resolved=False)


def resolve_permitted(host: str, port: int) -> list[str]:
    """Resolve host now; its addresses, to connect to, if the host and every one of them are permitted."""
    if _permitted(host, port) is None:
        raise _refusal(host, port)
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostRefused(f"Could not resolve {host}: {exc}.") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        parsed = ipaddress.ip_address(address.split("%")[0])
        if not _address_permitted(parsed, port):
            raise _private(host, parsed, port, resolved=True)
    if not addresses:
        raise HostRefused(f"{host} resolves to no address.")
    return addresses
