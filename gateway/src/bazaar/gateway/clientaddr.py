"""Who the client is on the network: the socket peer, or X-Forwarded-For from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """Believes X-Forwarded-For only from configured proxies (else a client resets its count)."""

    def __init__(self, trusted: Sequence[str]) -> None:
        self._trusted: list[Network] = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client address: walk X-Forwarded-For right to left past trusted proxies."""
        peer = peer or "unknown"
        if not self._trusted or forwarded_for is None or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def forwarded_for(self, peer: str | None, forwarded_for: str | None) -> str:
        """The X-Forwarded-For to send upstream: the trusted chain plus the peer, or the peer."""
        peer = peer or "unknown"
        if forwarded_for and self._trusted and self._is_trusted(peer):
            return f"{forwarded_for}, {peer}"
        return peer
