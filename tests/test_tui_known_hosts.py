"""Trust on first use: the known_hosts store, and the check the TLS handshake runs.

``KnownHosts`` is a file of ``HOST:PORT FINGERPRINT`` lines; ``Trust.check``
is what OpenSSL's verify callback asks (``pinning.PinnedTLS``). First use
pins and says so; the same fingerprint passes silently; a changed one is
refused with a warning naming both and how to accept the new one, and the
file is left as it was; ``--accept-new-fingerprint`` replaces exactly that
fingerprint. A malformed file is reported (with its line) and never
written over, by the client or by ``chat-tui`` at start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from client_tui.__main__ import known_hosts_problem, main, parse_args
from client_tui.known_hosts import HEADER, KnownHosts, KnownHostsError, host_key, normal_fingerprint
from client_tui.pinning import Trust, der_fingerprint

OLD = ":".join(["AB"] * 32)
NEW = ":".join(["CD"] * 32)


def trust(path: Path, accept: str | None = None) -> tuple[Trust, list[str]]:
    t = Trust(path, "Chat.LAN", 8443, accept)
    said: list[str] = []
    t.notice = said.append
    return t, said


def test_fingerprints_and_keys() -> None:
    assert der_fingerprint(b"") == (
        "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:"
        "27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55")  # SHA-256 of nothing
    assert normal_fingerprint("cd" * 32) == NEW and normal_fingerprint(NEW.lower()) == NEW
    assert normal_fingerprint("AB:CD") is None and normal_fingerprint("zz" * 32) is None
    assert host_key("Chat.LAN", 8443) == "chat.lan:8443" and host_key("::1", 80) == "[::1]:80"


def test_first_use_pins_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "lanchat" / "known_hosts"
    t, said = trust(path)
    assert t.check(OLD) and t.refusal is None
    assert len(said) == 1 and "First connection to chat.lan:8443" in said[0] and OLD in said[0]
    assert path.read_text() == HEADER + f"chat.lan:8443 {OLD}\n"
    assert [p.name for p in path.parent.iterdir()] == ["known_hosts"]  # no temporary left


def test_the_same_fingerprint_passes_silently(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    trust(path)[0].check(OLD)
    t, said = trust(path)
    assert t.check(OLD) and t.check(OLD) and said == []  # the callback may ask twice


def test_a_changed_fingerprint_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"# mine\nother:1 {NEW}\nchat.lan:8443 {OLD}\n")
    before = path.read_bytes()
    t, said = trust(path)
    assert not t.check(NEW) and said == []
    assert t.refusal is not None
    assert f"trusted:   SHA-256 {OLD}" in t.refusal and f"presented: SHA-256 {NEW}" in t.refusal
    assert "nothing was sent" in t.refusal
    assert f"--accept-new-fingerprint {NEW}" in t.refusal
    assert f"delete line 3 of {path}" in t.refusal
    assert path.read_bytes() == before


def test_accepting_the_new_fingerprint_replaces_that_line_only(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"# mine\nchat.lan:8443 {OLD}\nother:1 {OLD}\n")
    wrong, _ = trust(path, accept=":".join(["EF"] * 32))
    assert not wrong.check(NEW) and "not the one you said to accept" in (wrong.refusal or "")
    t, said = trust(path, accept=NEW)
    assert t.check(NEW) and "Accepted the new certificate" in said[0] and OLD in said[0]
    assert path.read_text() == f"# mine\nchat.lan:8443 {NEW}\nother:1 {OLD}\n"


@pytest.mark.parametrize("text", [
    "chat.lan:8443\n",  # no fingerprint
    f"chat.lan {OLD}\n",  # no port
    f"chat.lan:8443 {OLD.lower()}\n",  # not as openssl writes it
    f"chat.lan:8443 {OLD[:-3]}\n",  # 31 pairs
    f"chat.lan:8443 {OLD}\nCHAT.LAN:8443 {NEW}\n",  # twice
    "\udcff\n",
])
def test_a_malformed_file_is_reported_and_never_overwritten(tmp_path: Path, text: str) -> None:
    path = tmp_path / "known_hosts"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    before = path.read_bytes()
    with pytest.raises(KnownHostsError, match=str(path)):
        KnownHosts.load(path)
    t, said = trust(path)
    assert not t.check(OLD) and said == []
    assert "Cannot check the server's certificate" in (t.refusal or "")
    assert path.read_bytes() == before


def test_chat_tui_will_not_start_on_a_malformed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = tmp_path / "lanchat" / "known_hosts"
    path.parent.mkdir()
    path.write_text("# ok\nnot a line\n")
    assert known_hosts_problem(parse_args(["--ca", "ca.pem"])) is None  # a CA: not read
    assert main(["--tls"]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line 2" in err and "left as it is" in err
    assert path.read_text() == "# ok\nnot a line\n"


def test_pinning_keeps_what_another_client_wrote_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    store = KnownHosts.load(path)
    path.write_text(f"other:1 {NEW}\n")  # written by another chat-tui since we read it
    store.pin("chat.lan:8443", OLD)
    assert path.read_text() == f"other:1 {NEW}\nchat.lan:8443 {OLD}\n"
