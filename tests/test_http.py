"""Issue 3, the HTTP side: ``GET``/``HEAD /files/ID/NAME`` with curl and http.client."""

from __future__ import annotations

import http.client
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat.http import content_disposition, parse_range
from tests.support import RealServer, kill_quietly
from tests.test_transfer_integration import http_url, payload, sha, upload

SIZE = 1024 * 1024 + 5
DATA = payload(SIZE, seed=99)
ODD_NAMES = [
    'he said "hi"; 100% sure.txt',
    "na\u00efve r\u00e9sum\u00e9 \u2713 \u65e5\u672c.txt",
    "it's a (test) [1] {2} #3 & more.bin",
    "\U0001f600 emoji.png",
]


@dataclass
class Files:
    server: RealServer
    main: dict[str, Any]
    empty: dict[str, Any]
    odd: list[dict[str, Any]]

    def path(self, info: dict[str, Any]) -> str:
        return str(urlsplit(info["url"]).path)

    def url(self, info: dict[str, Any]) -> str:
        return http_url(self.server, info["url"])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    server = RealServer(tmp_path_factory.mktemp("http") / "data")
    try:
        c = server.client("alice", json_mode=True)
        main = upload(c, "notes.txt", DATA)
        empty = upload(c, "empty.txt", b"")
        odd = [upload(c, quote(name, safe=""), name.encode()) for name in ODD_NAMES]
        c.close()
        yield Files(server, main, empty, odd)
    finally:
        kill_quietly(server)


def fetch(
    files: Files, path: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One request with the path sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", files.server.http_port, timeout=10)
    try:
        conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


# --- whole files ------------------------------------------------------------------


def test_get_serves_the_file_with_safe_headers(files: Files) -> None:
    status, headers, body = fetch(files, files.path(files.main))
    assert status == 200
    assert sha(body) == sha(DATA) == files.main["sha256"]
    assert headers["content-length"] == str(SIZE)
    assert headers["content-type"] == "application/octet-stream"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"].startswith('"') and len(headers["etag"]) > 2
    assert headers["content-disposition"] == (
        "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes.txt"
    )


def test_head_has_the_headers_and_no_body(files: Files) -> None:
    status, headers, body = fetch(files, files.path(files.main), "HEAD")
    assert status == 200 and body == b""
    assert headers["content-length"] == str(SIZE)
    assert headers["x-content-type-options"] == "nosniff"
    _, get_headers, _ = fetch(files, files.path(files.main))
    assert headers["etag"] == get_headers["etag"]


def test_empty_file(files: Files) -> None:
    status, headers, body = fetch(files, files.path(files.empty))
    assert (status, headers["content-length"], body) == (200, "0", b"")
    status, headers, _ = fetch(files, files.path(files.empty), Range="bytes=0-")
    assert status == 416 and headers["content-range"] == "bytes */0"


def test_if_none_match_gives_304(files: Files) -> None:
    _, headers, _ = fetch(files, files.path(files.main))
    status, _, body = fetch(files, files.path(files.main), If_None_Match=headers["etag"])
    assert status == 304 and body == b""


# --- ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=1000-", 1000, SIZE - 1),
        ("bytes=-100", SIZE - 100, SIZE - 1),
        ("bytes=5-99999999999", 5, SIZE - 1),
        ("bytes=-99999999", 0, SIZE - 1),
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),
    ],
)
def test_one_range_is_206(files: Files, header: str, first: int, last: int) -> None:
    status, headers, body = fetch(files, files.path(files.main), Range=header)
    assert status == 206
    assert headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert headers["content-length"] == str(last - first + 1)
    assert body == DATA[first : last + 1]


@pytest.mark.parametrize(
    "header",
    [",".join(["0-"] * 1000), "0-10,5-20", "0-0,-1", ",".join(f"{i}-{i}" for i in range(500))],
    ids=["1000x0-", "overlap", "first-and-last", "500-single-bytes"],
)
def test_several_ranges_never_exceed_the_file(files: Files, header: str) -> None:
    status, headers, body = fetch(files, files.path(files.main), Range="bytes=" + header)
    assert status == 200
    assert len(body) == SIZE and sha(body) == sha(DATA)
    assert int(headers["content-length"]) == SIZE


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE}-{SIZE + 10}", "bytes=-0"])
def test_unsatisfiable_range_is_416(files: Files, header: str) -> None:
    status, headers, body = fetch(files, files.path(files.main), Range=header)
    assert status == 416
    assert headers["content-range"] == f"bytes */{SIZE}"
    assert body == b""


@pytest.mark.parametrize(
    "header",
    ["bytes=5-3", "bytes=\u0660-\u0664", "bytes=" + "9" * 5000 + "-", "items=0-1", "bytes=abc",
     "bytes=-", "bytes=1-2-3"],
    ids=["reversed", "arabic-digits", "5000-digits", "other-unit", "letters", "empty", "three"],
)
def test_malformed_range_is_ignored(files: Files, header: str) -> None:
    status, headers, body = fetch(
        files, files.path(files.main), Range=header.encode("utf-8").decode("latin-1")
    )
    assert status == 200
    assert sha(body) == sha(DATA) and headers["content-length"] == str(SIZE)


def test_if_range(files: Files) -> None:
    _, headers, _ = fetch(files, files.path(files.main))
    status, _, body = fetch(
        files, files.path(files.main), Range="bytes=0-9", If_Range=headers["etag"]
    )
    assert (status, body) == (206, DATA[:10])
    status, _, body = fetch(files, files.path(files.main), Range="bytes=0-9", If_Range='"stale"')
    assert status == 200 and len(body) == SIZE


# --- nothing else is served -----------------------------------------------------------


def test_unknown_id_and_wrong_name_are_404(files: Files) -> None:
    fid = files.main["file_id"]
    for path in (
        f"/files/{'0' * 32}/notes.txt", f"/files/{fid}/other.txt", f"/files/{fid}/NOTES.txt",
        f"/files/{fid}/notes.txt/extra", f"/files/{fid.upper()}/notes.txt",
        f"/files/{fid}x/notes.txt", f"/files/{fid}/notes.tx%74x",
    ):
        status, _, body = fetch(files, path)
        assert status == 404, path
        assert DATA[:64] not in body


def test_no_listings(files: Files) -> None:
    fid = files.main["file_id"]
    for path in ("/", "/files", "/files/", f"/files/{fid}", f"/files/{fid}/", "/files//"):
        for method in ("GET", "HEAD"):
            status, _, body = fetch(files, path, method)
            assert status == 404, (method, path)
            assert fid.encode() not in body and b"notes.txt" not in body


def test_nothing_outside_the_store(files: Files) -> None:
    fid = files.main["file_id"]
    for path in (
        "/files/../chat.sqlite3", "/files/%2e%2e/chat.sqlite3", "/chat.sqlite3",
        f"/files/{fid}/..%2F..%2Fchat.sqlite3", f"/files/{fid}/%2e%2e",
        f"/files/{fid}%2F..%2F..%2Fchat.sqlite3/x", "/files/..%2Ffiles%2F" + fid + "/notes.txt",
        f"/files/{fid}/..", f"/files/{fid}/../../chat.sqlite3", "/tmp/", "/files/%2F/etc/passwd",
        f"/files/{fid}/notes.txt%00", f"/files/{fid}/notes.txt%2F",
    ):
        status, _, body = fetch(files, path)
        assert status == 404, path
        assert b"SQLite format" not in body and DATA[:64] not in body


@pytest.mark.parametrize("index", range(len(ODD_NAMES)))
def test_odd_names_download_with_a_safe_disposition(files: Files, index: int) -> None:
    info, name = files.odd[index], ODD_NAMES[index]
    assert info["name"] == name
    status, headers, body = fetch(files, files.path(info))
    assert status == 200 and body == name.encode()
    check_disposition(headers["content-disposition"], name)


def check_disposition(value: str, name: str) -> None:
    value.encode("ascii")  # a header value is ASCII, whatever the name
    assert "\r" not in value and "\n" not in value
    assert value.startswith('attachment; filename="')
    fallback, sep, encoded = value[len('attachment; filename="') :].partition(
        "\"; filename*=UTF-8''"
    )
    assert sep, value
    assert '"' not in fallback and "\\" not in fallback
    assert all(0x20 <= ord(c) < 0x7F for c in fallback)
    assert all(c.isalnum() or c in "%!#$&+-.^_`|~" for c in encoded), encoded
    assert unquote(encoded, errors="strict") == name


@given(st.text(max_size=80))
def test_content_disposition_is_safe_for_any_name(name: str) -> None:
    check_disposition(content_disposition(name), name)


@given(
    st.one_of(
        st.from_regex(r"bytes=[0-9]{0,6}-[0-9]{0,6}(,[0-9]{0,6}-[0-9]{0,6}){0,5}", fullmatch=True),
        st.text(max_size=40),
        st.binary(max_size=40),
    ),
    st.integers(min_value=0, max_value=10**6),
)
def test_parse_range_never_exceeds_the_file(header: str | bytes, size: int) -> None:
    result = parse_range(header, size)
    if isinstance(result, tuple):
        first, last = result
        assert 0 <= first <= last < size
    else:
        assert result in (None, "unsatisfiable")


def test_parse_range_takes_bytes_as_twisted_gives_them() -> None:
    assert parse_range(b"bytes=2-5", 10) == (2, 5)
    assert parse_range(b"bytes=0-0, 2-3", 10) is None
    assert parse_range("bytes=\u0661-\u0662", 10) is None


# --- curl -----------------------------------------------------------------------------


def curl(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--fail", *args], cwd=cwd, capture_output=True, timeout=30, check=True
    )


def test_curl_O_downloads_the_file(files: Files, tmp_path: Path) -> None:
    curl(tmp_path, "-O", files.url(files.main))
    assert sha((tmp_path / "notes.txt").read_bytes()) == sha(DATA)


def test_curl_resumes_a_truncated_download(files: Files, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(DATA[:300_000])
    result = curl(tmp_path, "-C", "-", "-O", "-w", "%{http_code} %{size_download}",
                  files.url(files.main))
    assert result.stdout == f"206 {SIZE - 300_000}".encode()
    assert sha((tmp_path / "notes.txt").read_bytes()) == sha(DATA)


def test_curl_J_saves_under_the_safe_fallback(files: Files, tmp_path: Path) -> None:
    curl(tmp_path, "-O", "-J", files.url(files.odd[0]))
    (saved,) = list(tmp_path.iterdir())
    assert saved.name == "he said _hi_; 100_ sure.txt"
    assert saved.read_bytes() == ODD_NAMES[0].encode()


def test_curl_head(files: Files, tmp_path: Path) -> None:
    out = curl(tmp_path, "-I", files.url(files.main)).stdout.decode().lower()
    assert f"content-length: {SIZE}" in out and "x-content-type-options: nosniff" in out


def test_a_record_whose_file_is_gone_is_404(tmp_path: Path) -> None:
    server = RealServer(tmp_path / "data")
    try:
        info = upload(server.client("alice", json_mode=True), "gone.txt", b"gone")
        (server.data_dir / "files" / info["file_id"]).unlink()
        path = str(urlsplit(info["url"]).path)
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 404
        assert resp.getheader("content-disposition") is None
        conn.close()
    finally:
        kill_quietly(server)
