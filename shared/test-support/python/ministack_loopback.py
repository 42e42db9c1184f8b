"""Start ministack with every listening socket forced onto loopback.

ministack binds its HTTP gateway to BIND_HOST, but its MQTT-over-mTLS listener
binds 0.0.0.0 whatever is configured. Tests and local runs must never listen
beyond loopback, so this launcher rewrites any wildcard bind address to
127.0.0.1 before handing control to ministack's own entry point.
"""

import asyncio
import asyncio.base_events
import socket
import sys

_WILDCARDS = (None, "", "0.0.0.0", "::", "*")
_LOOPBACK = "127.0.0.1"

_create_server = asyncio.base_events.BaseEventLoop.create_server


async def _loopback_create_server(self, protocol_factory, host=None, port=None, *args, **kwargs):
    # A pre-bound socket (hypercorn passes `sock=`) already went through the
    # patched bind() below.
    if kwargs.get("sock") is None and host in _WILDCARDS:
        host = _LOOPBACK
    return await _create_server(self, protocol_factory, host, port, *args, **kwargs)


asyncio.base_events.BaseEventLoop.create_server = _loopback_create_server


class _LoopbackSocket(socket.socket):
    def bind(self, address):
        if isinstance(address, tuple) and address and address[0] in _WILDCARDS:
            family_loopback = "::1" if self.family == socket.AF_INET6 else _LOOPBACK
            address = (family_loopback,) + tuple(address[1:])
        return super().bind(address)


socket.socket = _LoopbackSocket

if __name__ == "__main__":
    from ministack.app import main

    sys.argv = ["ministack"]
    main()
