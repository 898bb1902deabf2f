"""Free ports for the servers a test starts."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port on ``host`` that nothing is bound to now (SIP and RTP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_sip_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` free for both UDP and TCP (a SIP listener binds both), below the
    kernel's ephemeral range, so that no outgoing connection takes it meanwhile: a process
    restarted on its port (a killed SIP process coming back) finds it free again."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(20_000, low)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
                udp.bind((host, port))
                tcp.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free SIP port on {host} between 20000 and {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
