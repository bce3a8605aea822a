"""Resuming transfers, as chat-tui speaks it, on in-memory transports.

Each test runs a ``TransferQueue`` on a ``task.Clock`` whose endpoint hands
every attach connection a ``StringTransport``: the test reads what the
client wrote and answers as the server would (docs/protocol.md, "Resuming
an upload" and "Downloads"). The CRC-32 is computed through a ``Cooperator``
that the clock drives, so nothing here waits on real time.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from client_tui.download import Download
from client_tui.jobs import TransferQueue
from client_tui.transfer import TransferProtocol, Upload

FILE_ID = "0123456789abcdef0123456789abcdef"
DATA = bytes(range(256)) * 4 + b"0123456789" * 100  # 2024 bytes
CRC = f"{zlib.crc32(DATA):08x}"


class Wire:
    """One attach connection: what the client wrote, and the server's side of it."""

    def __init__(self, proto: TransferProtocol) -> None:
        self.proto = proto
        self.transport = StringTransport()
        proto.makeConnection(self.transport)

    def lines(self) -> list[str]:
        return [ln for ln in self.transport.value().split(b"\n") if ln.startswith(b"/")]

    def say(self, **event: Any) -> None:
        self.proto.dataReceived(json.dumps(event).encode() + b"\r\n")

    def pump(self) -> bytes:
        """Let the upload's pull producer run dry; the bytes written after the last line."""
        while self.transport.producer is not None:
            self.transport.producer.resumeProducing()
        return self.transport.value().split(b"\n", len(self.lines()))[-1]

    def drop(self) -> None:
        self.proto.connectionLost(Failure(ConnectionError("reset")))


class Harness:
    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.key: str | None = "k1"
        self.wires: list[Wire] = []
        self.said: list[tuple[str | None, str]] = []
        self.queue = TransferQueue(
            lambda: self, lambda: self.key, lambda e, m: self.said.append((e, m)), reactor=clock
        )

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        proto = factory.buildProtocol(None)
        self.wires.append(Wire(proto))
        return defer.succeed(proto)

    @property
    def wire(self) -> Wire:
        return self.wires[-1]

    def run(self) -> None:
        """Let cooperative work (CRC-32 reading) finish."""
        for _ in range(1000):
            if not self.clock.getDelayedCalls():
                return
            self.clock.advance(0)

    def texts(self) -> list[str]:
        return [m for _, m in self.said]


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    clock = task.Clock()
    coop = task.Cooperator(scheduler=lambda f: clock.callLater(0, f))
    monkeypatch.setattr(task, "cooperate", coop.cooperate)
    harness = Harness(clock)
    yield harness
    harness.queue.abort_all("the test is over")
    coop.stop()


def upload(h: Harness, tmp_path: Path) -> Upload:
    path = tmp_path / "report.pdf"
    path.write_bytes(DATA)
    job = Upload(path, h.clock)
    h.queue.add(job)
    h.run()
    assert h.wire.lines() == [b"/attach k1"]
    h.wire.say(type="attached", name="alice")
    return job


def test_an_upload_asks_resume_then_sends_the_rest(h: Harness, tmp_path: Path) -> None:
    upload(h, tmp_path)
    assert h.wire.lines()[-1] == f"/resume report.pdf {len(DATA)} {CRC}".encode()
    h.wire.say(type="resume", name="report.pdf", size=len(DATA), crc32=CRC, offset=1012)
    assert h.wire.lines()[-1] == f"/send report.pdf {len(DATA)} {CRC} 1012".encode()
    assert h.queue.status().startswith("send report.pdf [######------]  50% ")  # type: ignore[union-attr]
    assert h.wire.pump() == DATA[1012:]
    assert h.texts() == ["Resuming report.pdf at 50%: the server holds 1012 B of 2.0 KiB."]
    h.wire.say(
        type="uploaded",
        file={
            "type": "fileinfo",
            "file_id": FILE_ID,
            "name": "report.pdf",
            "size": len(DATA),
            "crc32": CRC,
            "sha256": "0" * 64,
            "uploader": "alice",
            "ts": "2026-11-23T16:37:22.046Z",
            "url": None,
        },
    )
    assert h.said[-1] == (None, f"Sent report.pdf (2.0 KiB, resumed at 1012 B), id {FILE_ID}")
    assert h.queue.status() is None


def test_nothing_held_sends_the_whole_file_with_its_crc(h: Harness, tmp_path: Path) -> None:
    upload(h, tmp_path)
    h.wire.say(type="resume", name="report.pdf", size=len(DATA), crc32=CRC, offset=0)
    assert h.wire.lines()[-1] == f"/send report.pdf {len(DATA)} {CRC}".encode()
    assert h.wire.pump() == DATA


def test_a_cut_upload_goes_on_by_itself_from_what_the_server_holds(
    h: Harness, tmp_path: Path
) -> None:
    upload(h, tmp_path)
    h.wire.say(type="resume", name="report.pdf", size=len(DATA), crc32=CRC, offset=0)
    h.wire.transport.producer.resumeProducing()  # type: ignore[union-attr]
    first = h.wire
    first.drop()  # 64 KiB chunks: the whole file went out, but no answer came
    assert h.said[-1][1].startswith("send report.pdf interrupted at 100% (connection lost)")
    assert h.queue.status() == "send report.pdf resumes in 1s"  # a back-off, then again
    h.clock.advance(1)
    h.run()
    assert h.wire is not first
    h.wire.say(type="attached", name="alice")
    # The server may still be winding the cut attempt up (it answers 0 meanwhile): ask again.
    h.wire.say(type="resume", name="report.pdf", size=len(DATA), crc32=CRC, offset=0)
    assert h.wire.lines()[-1].startswith(b"/resume ")
    h.clock.advance(0.25)
    assert h.wire.lines()[-2:] == [f"/resume report.pdf {len(DATA)} {CRC}".encode()] * 2
    h.wire.say(type="resume", name="report.pdf", size=len(DATA), crc32=CRC, offset=700)
    assert h.wire.lines()[-1] == f"/send report.pdf {len(DATA)} {CRC} 700".encode()
    assert h.wire.pump() == DATA[700:]


def test_after_an_outage_the_upload_waits_for_the_new_session(h: Harness, tmp_path: Path) -> None:
    upload(h, tmp_path)
    h.wire.say(type="resume", name="report.pdf", size=len(DATA), crc32=CRC, offset=0)
    h.key = None  # the chat connection went
    h.queue.interrupt_all("the chat connection was lost")
    assert "interrupted" in h.said[-1][1] and "the chat connection was lost" in h.said[-1][1]
    assert h.queue.status() == "send report.pdf resumes once reconnected"
    count = len(h.wires)
    h.clock.advance(60)
    assert len(h.wires) == count  # nothing is tried while offline
    h.key = "k2"
    h.queue.resume()  # welcome: a new session key
    h.run()
    assert h.wire.lines() == [b"/attach k2"]
    h.wire.say(type="attached", name="alice")
    assert h.wire.lines()[-1] == f"/resume report.pdf {len(DATA)} {CRC}".encode()


def test_bad_offset_goes_on_from_the_offset_the_server_names(h: Harness, tmp_path: Path) -> None:
    upload(h, tmp_path)
    h.wire.say(type="resume", name="report.pdf", size=len(DATA), crc32=CRC, offset=1000)
    assert h.wire.lines()[-1].endswith(b" 1000")
    h.wire.say(
        type="error",
        code="bad_offset",
        text="The server holds 1200 bytes",
        command="send",
        offset=1200,
        size=len(DATA) - 1000,
    )
    # The server discards what follows that header: a fresh connection, no bytes wasted.
    assert h.wire.transport.disconnecting
    h.run()
    assert len(h.wires) == 2
    h.wire.say(type="attached", name="alice")
    assert h.wire.lines() == [b"/attach k1", f"/send report.pdf {len(DATA)} {CRC} 1200".encode()]
    assert h.wire.pump() == DATA[1200:]
    assert not [e for e, _ in h.said if e]  # no error shown: it just went on


def test_an_upload_still_coming_in_elsewhere_is_tried_again(h: Harness, tmp_path: Path) -> None:
    upload(h, tmp_path)
    h.wire.say(type="resume", name="report.pdf", size=len(DATA), crc32=CRC, offset=0)
    h.wire.say(
        type="error",
        code="refused",
        text="in progress",
        command="send",
        reason="in_progress",
        size=len(DATA),
    )
    count = len(h.wires)
    h.clock.advance(1)
    h.run()
    assert len(h.wires) == count + 1


def test_a_server_that_keeps_cutting_is_given_up(h: Harness, tmp_path: Path) -> None:
    upload(h, tmp_path)
    for _ in range(10):
        h.wire.drop()
        h.clock.advance(60)
        h.run()
    assert h.said[-1][0] is not None and "gave up after 6 tries" in h.said[-1][1]
    assert h.queue.status() is None


def test_cancel_of_an_upload_waiting_to_resume(h: Harness, tmp_path: Path) -> None:
    upload(h, tmp_path)
    h.wire.drop()
    assert h.queue.cancel()
    assert h.said[-1] == ("cancelled", "send report.pdf cancelled")
    h.clock.advance(60)
    assert h.queue.status() is None and len(h.wires) == 1


# --- downloads ---


def fileinfo(size: int = len(DATA), crc: str = CRC) -> dict[str, Any]:
    return {
        "type": "fileinfo",
        "file_id": FILE_ID,
        "name": "report.pdf",
        "size": size,
        "crc32": crc,
        "sha256": "0" * 64,
        "uploader": "bob",
        "ts": "2026-11-23T16:37:22.046Z",
        "url": None,
    }


def test_a_download_continues_its_part_file(h: Harness, tmp_path: Path) -> None:
    (tmp_path / "report.pdf.part").write_bytes(DATA[:500])
    h.queue.add(Download(FILE_ID, tmp_path / "report.pdf"))
    h.run()
    h.wire.say(type="attached", name="alice")
    assert h.wire.lines()[-1] == f"/get {FILE_ID} 500".encode()
    h.wire.say(type="download", file=fileinfo(), offset=500, length=len(DATA) - 500)
    assert h.said[-1] == (
        None,
        "Resuming report.pdf from report.pdf.part at 24% (500 B of 2.0 KiB).",
    )
    h.wire.proto.dataReceived(DATA[500:])
    assert (tmp_path / "report.pdf").read_bytes() == DATA
    assert not (tmp_path / "report.pdf.part").exists()
    assert h.said[-1][1].startswith("Saved report.pdf (2.0 KiB, resumed at 500 B) to ")


def test_a_corrupt_part_file_is_caught_and_removed(h: Harness, tmp_path: Path) -> None:
    (tmp_path / "report.pdf.part").write_bytes(b"X" + DATA[1:500])
    h.queue.add(Download(FILE_ID, tmp_path / "report.pdf"))
    h.run()
    h.wire.say(type="attached", name="alice")
    h.wire.say(type="download", file=fileinfo(), offset=500, length=len(DATA) - 500)
    h.wire.proto.dataReceived(DATA[500:])
    error, text = h.said[-1]
    assert error is not None and "CRC-32 mismatch for report.pdf" in text
    assert f"expected {CRC}" in text and "/get " + FILE_ID in text
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_download_into_a_folder_finds_its_part_from_the_header(
    h: Harness, tmp_path: Path
) -> None:
    (tmp_path / "report.pdf.part").write_bytes(DATA[:800])
    h.queue.add(Download(FILE_ID, tmp_path))
    h.run()
    h.wire.say(type="attached", name="alice")
    assert h.wire.lines()[-1] == f"/get {FILE_ID}".encode()  # the name is not known yet
    h.wire.say(type="download", file=fileinfo(), offset=0, length=len(DATA))
    assert h.wire.transport.disconnecting  # that attempt ends at once
    h.run()
    assert len(h.wires) == 2
    h.wire.say(type="attached", name="alice")
    assert h.wire.lines()[-1] == f"/get {FILE_ID} 800".encode()
    h.wire.say(type="download", file=fileinfo(), offset=800, length=len(DATA) - 800)
    h.wire.proto.dataReceived(DATA[800:])
    assert (tmp_path / "report.pdf").read_bytes() == DATA
    assert not [e for e, _ in h.said if e]


def test_a_cut_download_keeps_its_part_and_goes_on(h: Harness, tmp_path: Path) -> None:
    h.queue.add(Download(FILE_ID, tmp_path))
    h.run()
    h.wire.say(type="attached", name="alice")
    h.wire.say(type="download", file=fileinfo(), offset=0, length=len(DATA))
    h.wire.proto.dataReceived(DATA[:1500])
    h.wire.drop()
    assert (tmp_path / "report.pdf.part").read_bytes() == DATA[:1500]
    assert "get report.pdf interrupted at 74% (connection lost)" in h.said[-1][1]
    h.clock.advance(1)
    h.run()
    h.wire.say(type="attached", name="alice")
    assert h.wire.lines()[-1] == f"/get {FILE_ID} 1500".encode()
    h.wire.say(type="download", file=fileinfo(), offset=1500, length=len(DATA) - 1500)
    h.wire.proto.dataReceived(DATA[1500:])
    assert (tmp_path / "report.pdf").read_bytes() == DATA


def test_a_part_longer_than_the_file_starts_over(h: Harness, tmp_path: Path) -> None:
    (tmp_path / "report.pdf.part").write_bytes(b"x" * 5000)
    h.queue.add(Download(FILE_ID, tmp_path))
    h.run()
    h.wire.say(type="attached", name="alice")
    h.wire.say(type="download", file=fileinfo(), offset=0, length=len(DATA))
    h.wire.proto.dataReceived(DATA)
    assert (tmp_path / "report.pdf").read_bytes() == DATA
    assert len(h.wires) == 1
