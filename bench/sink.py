"""Trivial servers that the runner measures the generator and the disk against.

``relay``: every chunk a connection sends is written, as it is, to every other
connection: no parsing, no registration, one write per recipient per chunk.
Fan-out through it costs the server next to nothing, so its figure is the
load generator's own ceiling.

``file``: a plain TCP sink. Each connection's bytes go into a new file in
``--dir``; after ``--size`` bytes the file is fsynced, ``OK`` is sent back and
the file is removed (in a thread, as a server should). Its MB/s is what the
disk and loopback allow, next to which an upload through the chat server is
judged.

Usage: ``python bench/sink.py relay|file [--dir D] [--size N]``; prints
``listening PORT`` and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
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


class FileSink(asyncio.Protocol):
    directory = "."
    size = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        fd, self.path = tempfile.mkstemp(prefix="sink-", dir=self.directory)
        self.f = os.fdopen(fd, "wb", buffering=0)
        self.left = self.size

    def data_received(self, data: bytes) -> None:
        if self.left <= 0:
            return
        self.f.write(data[: self.left])
        self.left -= len(data)
        if self.left <= 0:
            self.finishing = asyncio.ensure_future(self._finish())

    async def _finish(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, os.fsync, self.f.fileno())
        self.f.close()
        self.transport.write(b"OK\r\n")
        await loop.run_in_executor(None, os.unlink, self.path)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.f.closed:
            self.f.close()
            os.unlink(self.path)


async def serve(mode: str, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    if mode == "relay":
        factory: Any = Relay
    else:
        FileSink.directory = args.dir
        FileSink.size = args.size
        factory = FileSink
    server = await loop.create_server(factory, "127.0.0.1", args.port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["relay", "file"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--dir", default=".")
    p.add_argument("--size", type=int, default=0)
    args = p.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.run(serve(args.mode, args))
    except ImportError:
        asyncio.run(serve(args.mode, args))


if __name__ == "__main__":
    main()
