"""Interrupted transfers resumed by chat-tui, against the real server.

The client (``tests/tui_driver.py``) reaches ``python -m chat`` through a
``CutProxy`` that breaks the network at a chosen byte of a transfer: the
whole connection for an upload (the client must reconnect, register and
then resume), the transfer connection alone for a download, and a stall
for a ``/cancel``. What the server stores and what lands on disk is
compared byte for byte; the proxy's record of what the client sent shows
that only the rest went the second time.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RealServer
from tests.tui_support import DEADLINE, CutProxy, TuiDriver

MIB = 1024 * 1024
PAYLOAD = random.Random(17).randbytes(4 * MIB)
CRC = f"{zlib.crc32(PAYLOAD):08x}"


@pytest.fixture
def proxy(real: RealServer) -> Iterator[CutProxy]:
    relay = CutProxy(real.port)
    yield relay
    relay.close()


def start(drivers: list[TuiDriver], proxy: CutProxy, cwd: Path) -> TuiDriver:
    tui = TuiDriver(f"127.0.0.1:{proxy.port}", "--name", "alice", cwd=cwd)
    drivers.append(tui)
    tui.wait(state="online")
    return tui


def test_an_upload_cut_by_an_outage_resumes_after_the_reconnect(
    real: RealServer, proxy: CutProxy, drivers: list[TuiDriver], tmp_path: Path
) -> None:
    (tmp_path / "big.bin").write_bytes(PAYLOAD)
    bob = real.client("bob", json_mode=True)
    tui = start(drivers, proxy, tmp_path)
    proxy.cut(up=2 * MIB, everything=True)  # the network goes, halfway through

    tui.type("/send big.bin")
    tui.wait(line=r"send big\.bin interrupted at \d+%")
    tui.wait(line="Back online: reconnected")
    snap = tui.wait(line=r"Resuming big\.bin at [1-9]\d?%: the server holds")
    shared = bob.expect_event("file", sender="alice", name="big.bin")
    assert shared["size"] == len(PAYLOAD) and shared["crc32"] == CRC
    assert (real.data_dir / "files" / shared["file_id"]).read_bytes() == PAYLOAD
    snap = tui.wait(
        line=r"Sent big\.bin \(4\.0 MiB, resumed at .*\), id " + shared["file_id"], idle=True
    )
    assert not any("failed" in ln for ln in snap["lines"])

    # The second attempt asked first, then sent only what the server did not hold.
    first, second = [link for link in proxy.transfers() if b"/send big.bin" in link.up]
    assert first.up.startswith(b"/attach ")
    assert f"/resume big.bin {len(PAYLOAD)} {CRC}\n".encode() in first.up
    assert f"\n/send big.bin {len(PAYLOAD)} {CRC}\n".encode() in first.up  # a CRC, always
    header = re.search(rb"\n/send big\.bin (\d+) ([0-9a-f]{8}) (\d+)\n", second.up)
    assert header is not None and header.group(1, 2) == (str(len(PAYLOAD)).encode(), CRC.encode())
    offset = int(header[3])
    assert 0 < offset <= 2 * MIB
    assert second.up.index(b"/resume big.bin ") < header.start()
    rest = second.up[header.end() :]
    assert rest[: len(PAYLOAD) - offset] == PAYLOAD[offset:]
    assert rest[len(PAYLOAD) - offset :] in (b"", b"/quit\n")


def test_a_cancelled_upload_goes_on_when_sent_again(
    real: RealServer, proxy: CutProxy, drivers: list[TuiDriver], tmp_path: Path
) -> None:
    (tmp_path / "big.bin").write_bytes(PAYLOAD)
    bob = real.client("bob", json_mode=True)
    tui = start(drivers, proxy, tmp_path)
    proxy.cut(up=2 * MIB, stall=True)
    tui.type("/send big.bin")
    assert proxy.fired.wait(DEADLINE)
    tui.type("/cancel")
    tui.wait(line=r"send big\.bin failed: cancelled \(the server keeps what it got", idle=True)
    real.wait_for_log(r"Upload big\.bin kept to be resumed")

    tui.type("/send big.bin")
    tui.wait(line=r"Resuming big\.bin at [1-9]\d?%: the server holds")
    shared = bob.expect_event("file", sender="alice", name="big.bin")
    assert (real.data_dir / "files" / shared["file_id"]).read_bytes() == PAYLOAD
    tui.wait(line=r"Sent big\.bin \(4\.0 MiB, resumed at ", idle=True)
    assert len(list((real.data_dir / "files").iterdir())) == 1


def share(real: RealServer) -> str:
    """bob shares ``PAYLOAD`` as big.bin; its file id."""
    bob = real.client("bob", json_mode=True)
    bob.send_line(f"/send big.bin {len(PAYLOAD)} {CRC}")
    bob.send(PAYLOAD)
    return str(bob.expect_event("uploaded")["file"]["file_id"])


def test_a_cut_download_resumes_and_a_corrupt_part_is_caught(
    real: RealServer, proxy: CutProxy, drivers: list[TuiDriver], tmp_path: Path
) -> None:
    file_id = share(real)
    down = tmp_path / "down"
    down.mkdir()
    tui = start(drivers, proxy, tmp_path)

    # The transfer connection breaks halfway: the client goes on from its .part by itself.
    proxy.cut(down=2 * MIB)
    tui.type(f"/get {file_id} {down}")
    tui.wait(line=r"get big\.bin interrupted at \d+% \(connection lost\)")
    tui.wait(line=r"Resuming big\.bin from big\.bin\.part at [1-9]\d?%")
    snap = tui.wait(line=r"Saved big\.bin \(4\.0 MiB, resumed at .*\) to ", idle=True)
    assert (down / "big.bin").read_bytes() == PAYLOAD
    assert sorted(p.name for p in down.iterdir()) == ["big.bin"]
    assert not any("failed" in ln for ln in snap["lines"])
    asked = [bytes(link.up) for link in proxy.transfers() if b"/get " in link.up]
    assert re.search(rb"\n/get " + file_id.encode() + rb"\n", asked[0])
    assert re.search(rb"\n/get " + file_id.encode() + rb" [1-9]\d*\n", asked[1])

    # A download stalls; /cancel keeps its .part, in which a byte then goes bad.
    proxy.cut(down=MIB, stall=True)
    copy = down / "copy.bin"
    tui.type(f"/get {file_id} {copy}")
    tui.wait(status=r"get big\.bin \S+ +24% ")
    tui.type("/cancel")
    tui.wait(line=r"get big\.bin failed: cancelled \(copy\.bin\.part is kept", idle=True)
    part = down / "copy.bin.part"
    held = bytearray(part.read_bytes())
    assert len(held) > MIB // 2 and bytes(held) == PAYLOAD[: len(held)]
    held[1000] ^= 0xFF
    part.write_bytes(held)

    # /get again continues it; the CRC-32 over the whole file catches the bad byte.
    tui.type(f"/get {file_id} {copy}")
    tui.wait(line=r"Resuming big\.bin from copy\.bin\.part at 24%")
    tui.wait(
        line=r"get big\.bin failed: CRC-32 mismatch for big\.bin \(continuing "
        r"copy\.bin\.part\): got [0-9a-f]{8}, expected " + CRC,
        idle=True,
    )
    assert sorted(p.name for p in down.iterdir()) == ["big.bin"]  # no copy.bin, no .part

    tui.type(f"/get {file_id} {copy}")
    tui.wait(line=r"Saved big\.bin \(4\.0 MiB\) to .*copy\.bin$", idle=True)
    assert copy.read_bytes() == PAYLOAD
