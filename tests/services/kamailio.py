"""Kamailio, Debian's SIP proxy, running ``deploy/kamailio/kamailio.cfg`` (the worked
configuration of docs/deployment.md) as a subprocess on a free port, with its dispatcher
list written for the test's SIP processes.

The shipped configuration is run as it is: the test's values (listening address, list,
ping interval, timers) are given with kamailio's ``-A NAME=VALUE`` pre-processor defines,
which the file takes as its defaults' overrides. Kamailio logs to its own file.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.net import free_udp_port
from tests.services import unavailable

CONFIG = Path(__file__).parents[2] / "deploy" / "kamailio" / "kamailio.cfg"
START_TIMEOUT = 20.0


@dataclass
class Kamailio:
    address: str  # host:port, UDP
    log: Path
    popen: subprocess.Popen[bytes]

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def require_kamailio() -> None:
    """Skip (or, with services required, fail) the test when Kamailio is not installed."""
    if shutil.which("kamailio") is None:
        unavailable("kamailio is not installed (Debian package kamailio)")


def options_answered(address: str, *, source: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether ``address`` (host:port) answers an OPTIONS over UDP with 200."""
    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        local = f"{source}:{sock.getsockname()[1]}"
        request = (
            f"OPTIONS sip:{address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local};branch=z9hG4bK{secrets.token_hex(8)}\r\n"
            f"From: <sip:probe@{local}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{address}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@{source}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (host, int(port)))
        try:
            reply, _ = sock.recvfrom(65535)
        except OSError:
            return False
    return reply.startswith(b"SIP/2.0 200")


@contextmanager
def kamailio(
    home: Path,
    destinations: list[str],
    *,
    host: str = "127.0.0.1",
    ping_interval: int = 1,
    fr_timer_ms: int = 1000,
) -> Iterator[Kamailio]:
    """Kamailio dispatching calls round-robin to ``destinations`` (host:port each), ready
    (it answers OPTIONS); stopped at the end."""
    require_kamailio()
    home.mkdir(parents=True, exist_ok=True)
    listing = home / "dispatcher.list"
    listing.write_text("".join(f"1 sip:{destination} 0 0\n" for destination in destinations))
    address = f"{host}:{free_udp_port(host)}"
    log = home / "kamailio.log"
    command = [
        "kamailio", "-f", str(CONFIG), "-DD", "-E", "-Y", str(home), "-w", str(home),
        "-m", "32", "-M", "8",
        "-A", f"LISTEN=udp:{address}",
        "-A", f'DISPATCHER_LIST="{listing}"',
        "-A", f"PING_INTERVAL={ping_interval}",
        "-A", f"FR_TIMER={fr_timer_ms}",
        "-A", "CHILDREN=2",
    ]  # fmt: skip
    with log.open("wb") as handle:
        popen = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=home)
    proxy = Kamailio(address, log, popen)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not options_answered(address, source=host):
            assert popen.poll() is None, f"kamailio exited:\n{proxy.tail()}"
            assert time.monotonic() < deadline, f"kamailio did not answer:\n{proxy.tail()}"
            time.sleep(0.1)
        yield proxy
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=10)
