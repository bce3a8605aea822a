"""The trivial relay that the runner measures the load generator against.

``relay``: every chunk a connection sends is written, as it is, to every other
connection: no parsing, no registration, one write per recipient per chunk.
Fan-out through it costs the server next to nothing, so its figure is the
load generator's own ceiling.

The upload's reference (a blocking ``recv_into`` + ``write`` + ``fsync``
process) is ``bench/bulk.py sink``.

Usage: ``python bench/sink.py relay [--port P]``; prints ``listening PORT``
and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


class Relay(asyncio.Protocol):
    conns: set[Any] = set()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conns.add(transport)
        transport.write(b"=hi=\r\n")  # 'registered': the generator waits for it

    def connection_lost(self, exc: Exception | None) -> None:
        self.conns.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        me = self.transport
        for t in self.conns:
            if t is not me:
                t.write(data)


async def serve(mode: str, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Relay, "127.0.0.1", args.port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["relay"])
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.run(serve(args.mode, args))
    except ImportError:
        asyncio.run(serve(args.mode, args))


if __name__ == "__main__":
    main()
