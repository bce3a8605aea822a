"""Server settings: defaults in code, a TOML file over them, options over that.

Every setting lives in one of the dataclasses below with its default, so the
installed package runs without the repository's ``config/`` folder;
``config/server.toml`` documents the same settings and a test keeps the two in
step. Loading checks names and types and fails with a ``ConfigError`` whose
one-line message names the offending setting.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chat.wire import room_name_problem


class ConfigError(Exception):
    """A bad setting; the message names it and fits on one line."""


@dataclass
class ServerSettings:
    listen: str = "tcp:8000:interface=127.0.0.1"
    http: str = "tcp:8001:interface=127.0.0.1"
    http_enabled: bool = True
    public_url: str = ""
    data_dir: str = "chat-data"
    files_dir: str = ""
    banner: str = "Welcome to lanchat."
    password: str = ""
    tls: bool = False
    tls_cert: str = ""
    tls_key: str = ""


@dataclass
class LimitSettings:
    max_line_bytes: int = 4096
    registration_timeout: float = 60.0
    max_upload_bytes: int = 1024**3
    disk_margin_bytes: int = 64 * 1024**2
    user_quota_bytes: int = 0
    guest_quota_bytes: int = 2 * 1024**3
    account_quota_bytes: int = 10 * 1024**3
    upload_reservation_per_address_bytes: int = 2 * 1024**3
    upload_stall_timeout: float = 60.0
    upload_min_rate: int = 16384
    upload_rate_window: float = 60.0
    flood_burst: int = 5
    flood_rate: float = 2.0
    flood_line_bytes: int = 512
    flood_max_pending_bytes: int = 16384
    nick_burst: int = 3
    nick_interval: float = 10.0
    send_queue_bytes: int = 1024**2
    send_queue_soft_bytes: int = 65536
    prereg_max_lines: int = 32
    prereg_max_bytes: int = 4096
    max_connections: int = 10000
    max_connections_per_address: int = 8
    max_new_connections_per_minute: int = 30
    exempt_addresses: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1"])
    max_tracked_addresses: int = 65536
    http_max_connections: int = 1000
    http_max_connections_per_address: int = 16
    http_max_new_connections_per_minute: int = 300
    http_header_timeout: float = 10.0
    http_idle_timeout: float = 30.0
    http_max_header_bytes: int = 16384
    http_max_headers: int = 64
    login_failures: int = 5
    login_window: float = 600.0
    login_lockout: float = 300.0
    ping_interval: float = 60.0
    ping_timeout: float = 60.0
    idle_timeout: float = 0.0
    keepalive_idle: int = 60


@dataclass
class AccountSettings:
    operators: list[str] = field(default_factory=list)
    require_account: bool = False
    open_registration: bool = True
    min_password_length: int = 8


@dataclass
class RoomSettings:
    default: str = "#lobby"
    autojoin: list[str] = field(default_factory=list)
    max_per_user: int = 20
    max_rooms: int = 1000
    max_topic_bytes: int = 300


@dataclass
class HistorySettings:
    replay: int = 20
    max: int = 500
    time_format: str = "%Y/%m/%d %H:%M:%S"


@dataclass
class FileSettings:
    #: Seconds an interrupted upload (sent with a CRC-32) is kept to be resumed.
    resume_window: float = 3600.0
    #: Days a shared file is kept (0: for good).
    retention_days: float = 30.0
    #: Bytes all shared files may take together; the oldest go first (0: no cap).
    max_store_bytes: int = 0
    #: Seconds between sweeps of expired files and partial uploads.
    sweep_interval: float = 600.0


@dataclass
class ConsoleSettings:
    enabled: bool = True
    log_lines: int = 200
    refresh_per_second: float = 4.0


@dataclass
class ClusterSettings:
    redis_url: str = ""
    node_timeout: float = 10.0
    node_id: str = ""


@dataclass
class Config:
    server: ServerSettings = field(default_factory=ServerSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    rooms: RoomSettings = field(default_factory=RoomSettings)
    accounts: AccountSettings = field(default_factory=AccountSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    files: FileSettings = field(default_factory=FileSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def files_path(self) -> Path:
        """Where shared files are kept: ``server.files_dir``, or DATA/files."""
        return Path(self.server.files_dir) if self.server.files_dir else self.data_path / "files"

    def public_base(self) -> str | None:
        """The base URL written into file notices, or None without HTTP."""
        if not self.server.http_enabled:
            return None
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        return endpoint_url(self.server.http)


def endpoint_url(endpoint: str) -> str | None:
    """Best guess at the URL of a ``tcp:`` endpoint string; None for others."""
    parts = endpoint.split(":")
    if parts[0] not in ("tcp", "ssl") or len(parts) < 2:
        return None
    kw = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    port = kw.get("port", parts[1])
    host = kw.get("interface", "127.0.0.1")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if parts[0] == "ssl" else "http"
    return f"{scheme}://{host}:{port}"


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{name}: must not be negative, got {value!r}")


def _coerce(name: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        value = float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    elif isinstance(default, list) and (
        not isinstance(value, list) or not all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
    _check_positive(name, value)
    return value


def apply(config: Config, data: dict[str, Any], origin: str = "") -> Config:
    """Overlay a ``{section: {key: value}}`` mapping onto ``config``."""
    sections = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for section, values in data.items():
        if section not in sections:
            raise ConfigError(f"{origin}[{section}]: unknown section")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}{section}: expected a table")
        target = sections[section]
        known = {f.name for f in dataclasses.fields(target)}
        for key, value in values.items():
            name = f"{section}.{key}"
            if key not in known:
                raise ConfigError(f"{origin}{name}: unknown setting")
            setattr(target, key, _coerce(name, getattr(target, key), value))
    validate(config)
    return config


def validate(config: Config) -> None:
    if config.limits.max_line_bytes < 16:
        raise ConfigError("limits.max_line_bytes: must be at least 16")
    if config.history.replay > config.history.max:
        raise ConfigError("history.replay: must not exceed history.max")
    limits = config.limits
    if limits.flood_burst < 1 or limits.flood_rate <= 0 or limits.flood_line_bytes < 1:
        raise ConfigError("limits.flood_burst: flood_burst >= 1 and flood_rate > 0 are required")
    if limits.nick_burst < 1:
        raise ConfigError("limits.nick_burst: must be at least 1")
    if limits.send_queue_soft_bytes > limits.send_queue_bytes:
        raise ConfigError("limits.send_queue_soft_bytes: must not exceed send_queue_bytes")
    if limits.upload_rate_window <= 0:
        raise ConfigError("limits.upload_rate_window: must be positive")
    for address in limits.exempt_addresses:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ConfigError(
                f"limits.exempt_addresses: {address!r} is not an address or a network"
            ) from None
    for name in (config.rooms.default, *config.rooms.autojoin):
        if room_name_problem(name):
            raise ConfigError(f"rooms: {name!r} is not a room name ('#' and 1-32 letters, "
                              "digits, '_', '-' or '.')")
    if config.rooms.max_per_user < 1 + len(config.rooms.autojoin):
        raise ConfigError("rooms.max_per_user: must allow the default and autojoin rooms")
    if config.files.sweep_interval <= 0:
        raise ConfigError("files.sweep_interval: must be positive")
    if config.cluster.redis_url:
        from chat.redislink import parse_url

        try:
            parse_url(config.cluster.redis_url)
        except ValueError as e:
            raise ConfigError(f"cluster.redis_url: {e}") from None
    if config.cluster.node_timeout < 1:
        raise ConfigError("cluster.node_timeout: must be at least 1 second")
    if config.console.refresh_per_second <= 0:
        raise ConfigError("console.refresh_per_second: must be positive")


def load(path: str | Path | None) -> Config:
    """Defaults, overlaid with the TOML file at ``path`` if one is given."""
    config = Config()
    if path is None:
        return config
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    return apply(config, data, origin=f"{path}: ")
