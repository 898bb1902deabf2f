"""Webhook targets: the SSRF corpus, each URL form refused at creation and at connect time by
default and allowed when the allowlist names it; DNS answers that change between the two
checks (rebinding); what the connection is made to.

The connect-time checks drive a real ``httpx.Client`` over ``GuardedTransport``; only
httpcore's final ``SyncBackend.connect_tcp`` (the socket) is replaced, to record the address
it is asked for instead of reaching a private network. The same URL forms against a real
receiver on the loopback interface: ``tests/integration/test_webhooks.py``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import httpcore
import httpx
import pytest
from pydantic import ValidationError

from voicemail.errors import BadRequest
from voicemail.settings import Settings
from voicemail.webhooks import targets
from voicemail.webhooks.service import check_url
from voicemail.webhooks.targets import (
    NOT_ALLOWED,
    AddressNotAllowed,
    GuardedTransport,
    TargetPolicy,
    is_public,
)


@dataclass(frozen=True)
class Case:
    url: str
    allow: str  # the allowlist that names it
    why: str

    def __str__(self) -> str:
        return self.why


# Every way of writing a non-public address that reaches the connect: decimal, hex, octal
# and short IPv4 forms, IPv6 loopback, mapped, NAT64, 6to4, ULA, link-local, unspecified,
# private, shared, reserved, multicast, metadata, and names the system resolver maps to
# loopback.
CORPUS = [
    Case("http://127.0.0.1/hook", "127.0.0.1/32", "loopback"),
    Case("https://127.0.0.1:8443/hook", "127.0.0.0/8", "loopback https, other port"),
    Case("http://127.0.0.2/", "127.0.0.0/8", "loopback, not .1"),
    Case("http://2130706433/", "127.0.0.1/32", "decimal"),
    Case("http://0x7f000001/", "127.0.0.1/32", "hex"),
    Case("http://0x7f.1/", "127.0.0.1/32", "hex, short"),
    Case("http://0x7f.0x0.0x0.0x1/", "127.0.0.1/32", "hex, dotted"),
    Case("http://017700000001/", "127.0.0.1/32", "octal"),
    Case("http://127.1/", "127.0.0.1/32", "short"),
    Case("http://localhost/", "127.0.0.1/32,::1/128", "localhost"),
    Case("http://[::1]/", "::1/128", "IPv6 loopback"),
    Case("http://[::ffff:127.0.0.1]/", "127.0.0.1/32", "IPv4-mapped"),
    Case("http://[::ffff:7f00:1]/", "127.0.0.1/32", "IPv4-mapped, hex"),
    Case("http://[0:0:0:0:0:ffff:127.0.0.1]/", "127.0.0.1/32", "IPv4-mapped, long"),
    Case("http://[64:ff9b::7f00:1]/", "127.0.0.1/32", "NAT64 of loopback"),
    Case("http://[2002:7f00:1::1]/", "127.0.0.1/32", "6to4 of loopback"),
    Case("http://[fd00::1]/", "fd00::/8", "IPv6 unique local"),
    Case("http://[fe80::1]/", "fe80::/10", "IPv6 link-local"),
    Case("http://[fe80::1%25eth0]/", "fe80::/10", "IPv6 link-local with zone"),
    Case("http://[::]/", "::/128", "IPv6 unspecified"),
    Case("http://0.0.0.0/", "0.0.0.0/32", "unspecified"),
    Case("http://0/", "0.0.0.0/32", "unspecified, short"),
    Case("http://10.0.0.1/", "10.0.0.0/8", "private 10/8"),
    Case("http://10.1/", "10.0.0.0/8", "private, short"),
    Case("http://172.16.5.4/", "172.16.0.0/12", "private 172.16/12"),
    Case("http://192.168.1.1/", "192.168.0.0/16", "private 192.168/16"),
    Case("http://3232235777/", "192.168.1.1/32", "private, decimal"),
    Case("http://100.64.0.1/", "100.64.0.0/10", "shared (CGNAT)"),
    Case("http://169.254.169.254/latest/meta-data/", "169.254.169.254/32", "metadata"),
    Case("http://0xa9fea9fe/", "169.254.169.254/32", "metadata, hex"),
    Case("http://[::ffff:a9fe:a9fe]/", "169.254.169.254/32", "metadata, mapped"),
    Case("http://[fd00:ec2::254]/", "fd00:ec2::254/128", "metadata, AWS IPv6"),
    Case("http://168.63.129.16/", "168.63.129.16/32", "metadata, Azure (public address)"),
    Case("http://100.100.100.200/", "100.100.100.200/32", "metadata, Alibaba"),
    Case("http://192.0.0.192/", "192.0.0.192/32", "metadata, Oracle"),
    Case("http://169.254.1.1/", "169.254.0.0/16", "link-local"),
    Case("http://224.0.0.1/", "224.0.0.0/4", "multicast"),
    Case("http://[ff02::1]/", "ff00::/8", "IPv6 multicast"),
    Case("http://240.0.0.1/", "240.0.0.0/4", "reserved"),
    Case("http://255.255.255.255/", "255.255.255.255/32", "broadcast"),
    Case("http://192.0.2.1/", "192.0.2.0/24", "documentation"),
    Case("http://198.18.0.1/", "198.18.0.0/15", "benchmarking"),
]
PUBLIC = ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The addresses the socket layer is asked to connect to (it then refuses, as an
    unreachable host would)."""
    asked: list[str] = []

    def connect_tcp(self: object, host: str, port: int, *args: object, **kw: object) -> None:
        asked.append(host)
        raise httpcore.ConnectError("recorded, not connected")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    return asked


def post(url: str, policy: TargetPolicy) -> Exception:
    with httpx.Client(transport=GuardedTransport(policy), timeout=2) as client:
        try:
            client.post(url, content=b"{}")
        except Exception as exc:
            return exc
    raise AssertionError("the request went through")


def in_networks(host: str, allow: str) -> bool:
    address = ipaddress.ip_address(host.replace("%25", "%"))
    policy = TargetPolicy.from_text(allow)
    return policy.allows(address) and not is_public(address)


@pytest.mark.parametrize("case", CORPUS, ids=str)
def test_refused_by_default_at_creation(case: Case) -> None:
    with pytest.raises(BadRequest) as raised:
        check_url(case.url)
    assert "public address" in raised.value.message
    assert "VOICEMAIL_WEBHOOK_ALLOWED_NETWORKS" in raised.value.message


@pytest.mark.parametrize("case", CORPUS, ids=str)
def test_refused_by_default_at_connect_without_touching_the_network(
    case: Case, connects: list[str]
) -> None:
    error = post(case.url, TargetPolicy())
    assert isinstance(error, AddressNotAllowed) and str(error) == NOT_ALLOWED
    assert connects == []


@pytest.mark.parametrize("case", CORPUS, ids=str)
def test_allowed_when_the_allowlist_names_it(case: Case, connects: list[str]) -> None:
    policy = TargetPolicy.from_text(case.allow)
    assert check_url(case.url, policy) == case.url
    error = post(case.url, policy)
    assert isinstance(error, httpx.ConnectError)  # got as far as the (recorded) socket
    assert connects, "no connection was attempted"
    # The socket is asked for a checked address, never for the name again.
    assert all(in_networks(host, case.allow) for host in connects), connects


@pytest.mark.parametrize("case", CORPUS, ids=str)
def test_an_allowlist_naming_something_else_allows_nothing_more(
    case: Case, connects: list[str]
) -> None:
    policy = TargetPolicy.from_text("203.0.113.0/24,2001:db8::/32")  # TEST-NETs, unused
    with pytest.raises(BadRequest):
        check_url(case.url, policy)
    assert isinstance(post(case.url, policy), AddressNotAllowed)
    assert connects == []


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str, connects: list[str]) -> None:
    parsed = ipaddress.ip_address(address)
    assert is_public(parsed)
    host = f"[{address}]" if parsed.version == 6 else address
    assert check_url(f"https://{host}/hook") == f"https://{host}/hook"
    assert isinstance(post(f"https://{host}/hook", TargetPolicy()), httpx.ConnectError)
    assert [ipaddress.ip_address(host) for host in connects] == [parsed]


def test_a_url_form_httpx_does_not_parse_is_refused_as_a_bad_url() -> None:
    with pytest.raises(BadRequest, match="not a valid URL"):
        check_url("http://0177.0.0.1/")  # octal per octet


# DNS: names resolved by the system resolver, here stood in for by a fake ---------------------


class FakeDNS:
    """Answers ``targets.resolve`` from a script: one list of addresses per call."""

    def __init__(self, *answers: Iterable[str]) -> None:
        self.answers = [list(answer) for answer in answers]
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[targets.IPAddress]:
        self.asked.append(host)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if not answer:
            raise OSError("no such name")
        return [ipaddress.ip_address(address) for address in answer]


def test_a_name_that_rebinds_to_loopback_after_creation_is_refused_at_connect(
    monkeypatch: pytest.MonkeyPatch, connects: list[str]
) -> None:
    dns = FakeDNS(["93.184.216.34"], ["127.0.0.1"])
    monkeypatch.setattr(targets, "resolve", dns)
    url = "https://hooks.rebind.test/hook"
    assert check_url(url) == url  # public when created
    assert isinstance(post(url, TargetPolicy()), AddressNotAllowed)  # loopback when sent
    assert dns.asked == ["hooks.rebind.test", "hooks.rebind.test"]  # once each
    assert connects == []


def test_the_connect_goes_to_the_address_that_was_checked(
    monkeypatch: pytest.MonkeyPatch, connects: list[str]
) -> None:
    dns = FakeDNS(["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
    monkeypatch.setattr(targets, "resolve", dns)
    assert isinstance(post("https://hooks.example.test/", TargetPolicy()), httpx.ConnectError)
    # One resolution; each address tried in turn (as socket.create_connection does).
    assert dns.asked == ["hooks.example.test"]
    assert connects == ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]


def test_a_name_with_one_inward_address_among_public_ones_is_refused(
    monkeypatch: pytest.MonkeyPatch, connects: list[str]
) -> None:
    monkeypatch.setattr(targets, "resolve", FakeDNS(["93.184.216.34", "10.0.0.5"]))
    with pytest.raises(BadRequest):
        check_url("https://split.example.test/")
    assert isinstance(post("https://split.example.test/", TargetPolicy()), AddressNotAllowed)
    assert connects == []


def test_a_name_that_does_not_resolve_is_accepted_and_fails_to_connect(
    monkeypatch: pytest.MonkeyPatch, connects: list[str]
) -> None:
    monkeypatch.setattr(targets, "resolve", FakeDNS([]))
    assert check_url("https://not-yet.example.test/") == "https://not-yet.example.test/"
    error = post("https://not-yet.example.test/", TargetPolicy())
    assert isinstance(error, httpx.ConnectError) and connects == []


def test_the_real_resolver_maps_localhost_and_numeric_forms() -> None:
    assert ipaddress.ip_address("127.0.0.1") in targets.resolve("localhost", 80)
    assert targets.resolve("0x7f.1", 80) == [ipaddress.ip_address("127.0.0.1")]


# The setting --------------------------------------------------------------------------------


def test_the_allowlist_setting_is_parsed_and_checked() -> None:
    settings = Settings(_env_file=None, webhook_allowed_networks=" 10.1.2.3/8, 127.0.0.1 ,::1")
    assert settings.webhook_allowed_networks == "10.0.0.0/8,127.0.0.1/32,::1/128"
    assert Settings(_env_file=None).webhook_allowed_networks == ""
    with pytest.raises(ValidationError, match="not an IP network"):
        Settings(_env_file=None, webhook_allowed_networks="10.0.0.0/8,intranet.local")
