"""Settings: the documented file matches the code's defaults; errors name the setting."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from chat.cli import configure
from chat.config import Config, ConfigError, apply, endpoint_url, load
from chat.server import DEFAULT_BACKLOG, endpoint

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_documents_every_default() -> None:
    with open(ROOT / "config" / "server.toml", "rb") as f:
        shipped = tomllib.load(f)
    defaults = Config()
    for section in dataclasses.fields(defaults):
        values = dataclasses.asdict(getattr(defaults, section.name))
        assert shipped[section.name] == values, section.name
    assert set(shipped) == {f.name for f in dataclasses.fields(defaults)}


def test_shipped_config_loads() -> None:
    assert load(ROOT / "config" / "server.toml") == Config()


def test_every_setting_has_a_comment() -> None:
    lines = (ROOT / "config" / "server.toml").read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            assert lines[i - 1].lstrip().startswith("#"), f"no comment above {line!r}"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"limits": {"max_line_bytes": "x"}}, "limits.max_line_bytes: expected an integer"),
        ({"limits": {"max_line_bytes": True}}, "limits.max_line_bytes"),
        ({"limits": {"registration_timeout": "soon"}}, "limits.registration_timeout"),
        ({"limits": {"registration_timeout": -1}}, "must not be negative"),
        ({"server": {"http_enabled": "yes"}}, "server.http_enabled: expected true or false"),
        ({"server": {"listen": 8000}}, "server.listen: expected a string"),
        ({"server": {"colour": "red"}}, "server.colour: unknown setting"),
        ({"extra": {}}, "[extra]: unknown section"),
        ({"server": 3}, "server: expected a table"),
        ({"history": {"replay": 600}}, "history.replay: must not exceed history.max"),
        ({"limits": {"max_line_bytes": 3}}, "limits.max_line_bytes: must be at least 16"),
    ],
)
def test_bad_values_name_the_setting(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        apply(Config(), data)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_float_setting_accepts_integer() -> None:
    c = apply(Config(), {"limits": {"registration_timeout": 5}})
    assert c.limits.registration_timeout == 5.0


def test_options_override_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nlisten = "tcp:9000"\ndata_dir = "/srv/a"\n')
    config, _ = configure(["--config", str(cfg), "--data-dir", "/srv/b", "--no-http",
                           "--no-console"])
    assert config.server.listen == "tcp:9000"
    assert config.server.data_dir == "/srv/b"
    assert config.server.http_enabled is False
    assert config.console.enabled is False
    assert config.public_base() is None


def test_defaults_listen_on_loopback_only() -> None:
    c = Config()
    assert c.server.listen == "tcp:8000:interface=127.0.0.1"
    assert c.server.http == "tcp:8001:interface=127.0.0.1"


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("tcp:8001:interface=127.0.0.1", "http://127.0.0.1:8001"),
        ("tcp:port=80:interface=0.0.0.0", "http://127.0.0.1:80"),
        ("ssl:443", "https://127.0.0.1:443"),
        ("unix:/tmp/x.sock", None),
    ],
)
def test_endpoint_url(endpoint: str, url: str | None) -> None:
    assert endpoint_url(endpoint) == url


def test_public_url_wins() -> None:
    c = apply(Config(), {"server": {"public_url": "https://chat.example.org/"}})
    assert c.public_base() == "https://chat.example.org"


@pytest.mark.parametrize(
    ("description", "backlog"),
    [
        ("tcp:8000:interface=127.0.0.1", DEFAULT_BACKLOG),
        ("unix:/tmp/chat.sock", DEFAULT_BACKLOG),
        ("tcp:8000:backlog=7:interface=127.0.0.1", 7),
        ("tcp:port=8000:backlog=4096", 4096),
    ],
)
def test_listen_backlog_is_large_unless_the_endpoint_sets_one(
    description: str, backlog: int
) -> None:
    from twisted.internet import reactor

    assert endpoint(reactor, description, "server.listen")._backlog == backlog
