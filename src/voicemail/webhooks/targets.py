"""Which addresses webhooks may reach: public ones only, unless an operator allows more.

A webhook URL is chosen by whoever holds ``Manage Webhooks`` on a bot; without a check, the
workers would POST wherever it points (the loopback interface, the private network, a
cloud's metadata service), and the delivery log's status codes, errors and durations would
tell the subscriber what answers there. So:

- An address is allowed when it is globally routable: not loopback, private (RFC 1918,
  ULA), link-local, unspecified, multicast, reserved, shared (CGNAT, 100.64.0.0/10), nor a
  known cloud metadata address. IPv6 forms that carry an IPv4 address (IPv4-mapped,
  IPv4-compatible, 6to4, Teredo, NAT64) are judged by the IPv4 address they carry as well.
- ``VOICEMAIL_WEBHOOK_ALLOWED_NETWORKS`` names networks (CIDRs) that are allowed anyway,
  for receivers on premises; it overrides every rule above, metadata addresses included.
- Checked twice. When a subscription is created, its host is resolved (numeric forms such
  as ``2130706433`` or ``0x7f.1`` resolve to the address they spell) and refused if any
  address is not allowed; a name that does not resolve yet is accepted. At every delivery,
  ``GuardedBackend`` resolves the host once, refuses the connection if any address is not
  allowed, and connects to those very addresses: the name is not resolved again, so a DNS
  answer that changes in between (DNS rebinding) cannot slip past. The Host header and the
  TLS server name stay the URL's host, as httpcore builds them from the request, not from
  the socket. Redirects are never followed (``follow_redirects=False``).

The connect path is httpcore's (``SyncBackend.connect_tcp``) with a resolved address in
place of the name; only the resolution is ours.

httpx's timeouts bound each network operation, not a request: a receiver that answers one
byte at a time, each within the read timeout, would hold a sender for as long as it likes
(and, past the delivery's lease, get it sent again on another sender). ``attempt_deadline``
bounds every operation of the requests made within it by one deadline, enforced by the
streams ``GuardedBackend`` returns, and by its connects. The name's resolution itself is
bounded only by the system resolver's own timeouts (and the delivery's lease).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpcore
import httpx

from voicemail.settings import parse_networks

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The message a refused target gets, at creation and in the delivery log: nothing about
# what (if anything) answers at that address.
NOT_ALLOWED = "address not allowed"

# Cloud instance metadata services. Most are link-local, private or shared addresses anyway;
# Azure's wire server (168.63.129.16) is a public address and needs naming.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean…
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "168.63.129.16",  # Azure wire server
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class AddressNotAllowed(Exception):
    """A webhook target resolved to an address that the policy refuses."""

    def __init__(self) -> None:
        super().__init__(NOT_ALLOWED)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64),
    which is where a packet to it may end up."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # (server, client): the client is where it lands
    if any(address in network for network in _NAT64) or (
        address in _IPV4_COMPATIBLE and int(address) > 1
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """Globally routable, and not a metadata service: what a webhook may reach by default."""
    if address.version == 6:
        assert isinstance(address, ipaddress.IPv6Address)
        if address.scope_id:  # fe80::1%eth0: link-local by definition
            return False
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d on the wire
            return is_public(address.ipv4_mapped)
        inner = embedded_ipv4(address)
        if inner is not None and not is_public(inner):
            return False
    return not (
        address in METADATA_ADDRESSES
        or not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (address.version == 4 and address in _SHARED)
    )


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, as the system resolver answers (the hosts file,
    then DNS); numeric forms resolve to what they spell. The one place names are resolved,
    so a test can stand in for DNS here. Raises OSError (socket.gaierror) when it does not
    resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0])
        address = ipaddress.ip_address(text)
        if isinstance(address, ipaddress.IPv6Address) and len(sockaddr) > 3 and sockaddr[3]:
            address = ipaddress.IPv6Address(f"{text.split('%')[0]}%{sockaddr[3]}")
        found[address] = None
    return list(found)


@dataclass(frozen=True)
class TargetPolicy:
    """The addresses webhook deliveries may connect to (see module doc)."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_text(cls, text: str) -> TargetPolicy:
        return cls(parse_networks(text))

    def allows(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            if address.scope_id:
                candidates.append(ipaddress.IPv6Address(str(address).split("%")[0]))
            inner = embedded_ipv4(address)
            if inner is not None:
                candidates.append(inner)
        for candidate in candidates:
            for network in self.allowed_networks:
                if candidate.version == network.version and candidate in network:
                    return True
        return is_public(address)

    def resolve_allowed(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host`` (written as an address, or a name
        resolved once): all of them allowed, or AddressNotAllowed (one refused address
        refuses the host: a name that also points inward is not one to trust). OSError when
        it does not resolve."""
        literal = _literal_address(host)
        addresses = [literal] if literal is not None else resolve(host, port)
        if not addresses or not all(self.allows(address) for address in addresses):
            raise AddressNotAllowed()
        return addresses

    def check_host(self, host: str, port: int) -> None:
        """At creation: refuse a host whose addresses (now) include one not allowed. A name
        that does not resolve is let through: the check at delivery decides then."""
        try:
            self.resolve_allowed(host, port)
        except OSError:
            return


def _literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is written as one in standard form (an IPv6 zone
    index may be percent-encoded, as URLs write it)."""
    try:
        return ipaddress.ip_address(host.replace("%25", "%"))
    except ValueError:
        return None


_deadline = threading.local()  # (sync httpx does a request's I/O in the caller's thread)


@contextmanager
def attempt_deadline(seconds: float) -> Iterator[None]:
    """Every network operation of requests made in this block, in this thread, over
    ``GuardedTransport``, ends ``seconds`` from now at the latest (a timeout error then)."""
    _deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _deadline.at = None


def _clamped(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout``, shortened to what is left before the deadline (if one is set)."""
    at: float | None = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the attempt ran out of time")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose operations respect ``attempt_deadline``."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _clamped(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> object:
        return self._stream.get_extra_info(info)


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's network backend, with the host resolved by us, checked, and the socket
    connected to the checked address (never to a second resolution of the name)."""

    def __init__(self, policy: TargetPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self.policy.resolve_allowed(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"could not resolve the host: {exc}") from exc
        error: Exception | None = None
        for address in addresses:  # as socket.create_connection: the first that answers
            try:
                left = _clamped(timeout, httpcore.ConnectTimeout)
                stream = super().connect_tcp(
                    str(address), port, left, local_address, socket_options
                )
                return DeadlineStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error


DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool connects through ``GuardedBackend``.

    httpx 0.28 builds its pool without a way to pass a network backend, so the pool is
    rebuilt here with the same arguments plus ``network_backend`` (httpcore's public
    parameter); ``handle_request`` is httpx's own. No proxy from the environment is used:
    a proxy would connect to the target for us, past the check.
    """

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        context = httpx.create_ssl_context(verify=verify, trust_env=False)  # made once
        super().__init__(verify=context, limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )
