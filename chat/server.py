"""Assembling the server: store, chat service, listeners, orderly shutdown.

``ChatServer`` is a Twisted ``MultiService``, so the same object runs under
``chat-server`` and under ``twistd -n chat``. Start-up opens the database and
cleans the data directory before any port listens; stopping tells every user
the server is going down, discards uploads in flight, closes connections and
writes buffered history before the database closes.
"""

from __future__ import annotations

import os
import re
import resource
import socket
from typing import Any

from argon2 import PasswordHasher
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, task, threads
from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from chat import tls
from chat.accounts import Accounts, Hasher, synchronous
from chat.cluster import Node, NodeState
from chat.config import Config, ConfigError
from chat.files import FileService
from chat.filestore import FileStore
from chat.http import site
from chat.protocol import ChatFactory
from chat.quotas import Quotas
from chat.service import ChatService
from chat.store import Store, ThreadExecutor
from chat.transfer import MAX_PUMPS

#: The listen backlog of a ``tcp:``, ``ssl:`` or ``unix:`` endpoint that sets
#: none: Twisted's 50 overflows when a whole class connects at once.
DEFAULT_BACKLOG = 1024


def endpoint(reactor: Any, description: str, setting: str) -> Any:
    kind = description.split(":", 1)[0]
    if kind == "reuseport":  # one of ``chat-server --workers``'s shared ports
        from chat.workers import listen_reuseport

        try:
            sock = listen_reuseport(description)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{setting}: cannot listen on {description!r}: {e}") from None
        # The endpoint owns the descriptor now (and closes it once adopted).
        return AdoptedStreamServerEndpoint(reactor, sock.detach(), sock.family)
    if kind in ("tcp", "ssl", "unix") and not re.search(r"(?:^|:)backlog=", description):
        description += f":backlog={DEFAULT_BACKLOG}"
    try:
        return serverFromString(reactor, description)
    except Exception as e:  # serverFromString raises many kinds for a bad string
        raise ConfigError(f"{setting}: bad endpoint {description!r}: {e}") from None


def build_factory(
    config: Config,
    clock: Any,
    store: Store,
    pool: ThreadPool | None = None,
    call_from_thread: Any = None,
    *,
    coalesce: bool = False,
    hasher: Hasher = synchronous,
    passwords: PasswordHasher | None = None,
    clustered: bool = False,
) -> ChatFactory:
    """The chat stack over an opened store: file store, chat and file services,
    accounts, factory.

    Without a pool, uploads are written synchronously, without ``coalesce``
    every event is delivered at once, and without a ``hasher`` passwords are
    hashed at once (the in-memory tests).
    """
    files = FileStore(
        config.data_path,
        clock,
        # A cluster's nodes (``--workers`` too) share their files directory.
        shared=config.files_path if config.server.files_dir or config.cluster.redis_url else None,
        node=config.cluster.node_id or f"{socket.gethostname()}-{os.getpid()}",
        max_upload=config.limits.max_upload_bytes,
        disk_margin=config.limits.disk_margin_bytes,
        quotas=Quotas(
            clock,
            total=config.limits.user_quota_bytes,
            guest_daily=config.limits.guest_quota_bytes,
            account_daily=config.limits.account_quota_bytes,
            reservation=config.limits.upload_reservation_per_address_bytes,
        ),
        pool=pool,
        call_from_thread=call_from_thread,
        resume_window=config.files.resume_window,
    )
    files.prepare(store.file_ids())
    files.quotas.load(store.quota_rows())
    service = ChatService(
        clock,
        store,
        rooms=config.rooms,
        time_format=config.history.time_format,
        replay=config.history.replay,
        history_max=config.history.max,
        public_base=config.public_base(),
        coalesce=coalesce,
        # In a cluster, history is in Redis before anyone receives it.
        commit=(lambda events, reserved: defer.succeed(None)) if clustered else None,
    )
    accounts = Accounts(store, clock, config.accounts, hasher, passwords)
    accounts.load()
    service.is_account = accounts.exists
    files_service = FileService(files, store, service, clock, config.files)
    return ChatFactory(service, files_service, accounts, config, clock)


#: Seconds that connections get to take their last lines at shutdown.
CLOSE_GRACE = 2.0

#: Descriptors kept back from the connection caps: the database and its
#: journal, logs, listening sockets, the reactor's own, and for every upload
#: pump a temporary file, a duplicate socket and a wake-up pipe.
FD_RESERVE = 64 + 4 * MAX_PUMPS


def raise_open_files() -> tuple[int, int, int]:
    """Raise the soft limit on open files to the hard one: ``(before, now, hard)``.

    Every connection is a descriptor; the soft limit a login shell gives
    (often 1024) would make a server for a school refuse users long before
    its own caps, which are then fitted under what is allowed.
    """
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(before, 1 << 20)
    if before != resource.RLIM_INFINITY and before < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass  # not allowed here: the caps are fitted under the old limit
    return before, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard


def fit_connection_caps(config: Config, open_files: int) -> str | None:
    """Lower the chat and HTTP connection caps to fit under ``open_files``.

    Each port has its own cap, so neither can take the descriptors the other
    needs: an ``EMFILE`` can then not starve one port because of the other.
    Returns what was changed, for the log, or None if they fit.
    """
    limits = config.limits
    http = limits.http_max_connections if config.server.http_enabled else 0
    budget = max(2, open_files - max(FD_RESERVE, open_files // 10))
    if limits.max_connections + http <= budget:
        return None
    share = budget / (limits.max_connections + http)
    limits.max_connections = max(1, int(limits.max_connections * share))
    if http:
        limits.http_max_connections = max(1, int(http * share))
    return (
        f"connection caps lowered to fit {open_files} open files: chat "
        f"{limits.max_connections}, HTTP {limits.http_max_connections if http else 0}"
    )


class ChatServer(service.MultiService):
    """The whole server as one service."""

    log = Logger()

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.certificate: tls.Certificate | None = None
        self.listen, self.http = config.server.listen, config.server.http
        if config.server.tls:
            self.certificate = cert = tls.prepare(config)
            self.listen = tls.secured(self.listen, cert, "server.listen")
            if config.server.http_enabled:
                self.http = tls.secured(self.http, cert, "server.http")
        self.chat_endpoint = endpoint(reactor, self.listen, "server.listen")
        self.http_endpoint = (
            endpoint(reactor, self.http, "server.http") if config.server.http_enabled else None
        )
        #: What the console's header keeps saying: (kind, text), e.g. the TLS fingerprint.
        self.notes: list[tuple[str, str]] = []
        self.started = reactor.seconds()
        self.store: Store | None = None
        self.service: ChatService | None = None
        self.factory: ChatFactory | None = None
        self.ports: dict[str, Any] = {}
        self._executor: ThreadExecutor | None = None
        self._upload_pool: ThreadPool | None = None
        self._password_pool: ThreadPool | None = None
        self._sweeper: task.LoopingCall = task.LoopingCall(lambda: None)
        self.node: Node | None = None

    def startService(self) -> None:
        config = self.config
        before, open_files, hard = raise_open_files()
        self.log.info(
            "Open files: soft limit {before}, now {now} (hard limit {hard})",
            before=before, now=open_files, hard=hard,
        )
        lowered = fit_connection_caps(config, open_files)
        if lowered is not None:
            self.log.warn("Open files: {what}", what=lowered)
        data = config.data_path
        try:
            data.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"server.data_dir: cannot create {data}: {e.strerror}") from None
        self._executor = ThreadExecutor(self.reactor)
        store = Store(data / "chat.sqlite3", self.reactor, config.history.max, self._executor)
        store.open(config.rooms.default)
        self._upload_pool = ThreadPool(minthreads=0, maxthreads=16, name="chat-uploads")
        self._upload_pool.start()
        # Argon2 takes ~50 ms and 64 MiB a hash: two at a time bounds both.
        self._password_pool = passwords = ThreadPool(minthreads=0, maxthreads=2,
                                                     name="chat-passwords")
        passwords.start()
        self.factory = build_factory(
            config, self.reactor, store, self._upload_pool, self.reactor.callFromThread,
            coalesce=True,
            hasher=lambda fn: threads.deferToThreadPool(self.reactor, passwords, fn),
            clustered=bool(config.cluster.redis_url),
        )
        self.store, self.service = store, self.factory.service
        if config.cluster.redis_url:
            self.node = Node(self.reactor, self.service, config.cluster,
                             history_max=config.history.max)
            self.service.cluster = self.node
            admin = self.factory.admin
            self.node.handlers.update(ban=admin.banned_elsewhere, unban=admin.unbanned_elsewhere)
            self.node.shared.share_accounts(self.factory.accounts)
            at = len(self.notes)
            self.notes.append(("cluster", f"cluster node {self.node.id}: starting"))

            def shown(state: NodeState, node_id: str = self.node.id) -> None:
                # The console's header shows it; a node cut off from Redis stands out.
                kind = "warning" if state is NodeState.DOWN else "cluster"
                self.notes[at] = (kind, f"cluster node {node_id}: {state.value}")

            self.node.watchers.append(shown)
            self.node.start()
        # Expired files and stale partial uploads go now and every sweep_interval.
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = self.reactor
        self._sweeper.start(config.files.sweep_interval, now=True)
        if self.certificate is not None:
            fp = self.certificate.fingerprint
            self.factory.banner += f" (TLS certificate SHA-256 {fp})"
            self.notes.append(("tls", f"TLS certificate SHA-256 {fp}"))
            self.log.info("TLS certificate {cert}, SHA-256 fingerprint {fp}",
                          cert=str(self.certificate.cert), fp=fp)
        chat = StreamServerEndpointService(self.chat_endpoint, self.factory)
        # Private (docs/architecture.md): a port that cannot be bound fails start-up.
        chat._raiseSynchronously = True
        chat.setName("chat")
        chat.setServiceParent(self)
        if self.http_endpoint is not None:
            http_site = site(
                self.factory.files, self.reactor, config.limits,
                accounts=self.factory.accounts, throttle=self.factory.door.throttle,
            )
            web = StreamServerEndpointService(self.http_endpoint, http_site)
            web._raiseSynchronously = True
            web.setName("http")
            web.setServiceParent(self)
        try:
            super().startService()
        except BaseException:
            self._stop_threads()
            raise
        for name in ("chat", "http"):
            if name in self.namedServices:
                svc = self.namedServices[name]
                # Private (docs/architecture.md): the only way to the bound port.
                svc._waitingForPort.addCallback(self._listening, name)

    def _sweep(self) -> defer.Deferred[Any]:
        assert self.factory is not None
        return self.factory.files.sweep().addErrback(
            lambda f: self.log.failure("Sweeping files failed", f)
        )

    def _closed_or_cut(self, grace: float) -> defer.Deferred[None]:
        """Give connections ``grace`` seconds to flush and close, then cut them."""
        assert self.factory is not None
        factory = self.factory
        done: defer.Deferred[None] = defer.Deferred()

        def check() -> None:
            if not factory.connections or self.reactor.seconds() >= deadline:
                for conn in list(factory.connections):
                    conn.transport.abortConnection()
                done.callback(None)
            else:
                self.reactor.callLater(0.05, check)

        deadline = self.reactor.seconds() + grace
        check()
        return done

    def _listening(self, port: Any, name: str) -> Any:
        self.ports[name] = port
        host = port.getHost()
        address = f"{host.host}:{host.port}" if hasattr(host, "port") else str(host)
        self.log.info("{name} listening on {address}", name=name, address=address)
        assert self.factory is not None
        if (name == "chat" and self.factory.accounts.count()
                and tls.exposed(self.listen, getattr(host, "host", ""))):
            warning = (f"chat on {address} is not encrypted and reachable from the network: "
                       "account passwords cross it in clear (use --tls)")
            self.log.warn("Warning: {warning}", warning=warning)
            self.notes.append(("warning", warning))
        if name == "http" and not self.config.server.public_url and hasattr(host, "port"):
            # With port 0 in the endpoint, only the bound port makes a usable URL.
            assert self.service is not None
            scheme = "https" if self.http.startswith("ssl:") else "http"
            shown = "127.0.0.1" if host.host in ("0.0.0.0", "::") else host.host
            self.service.public_base = f"{scheme}://{shown}:{host.port}"
        return port

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        assert self.factory is not None and self.service is not None and self.store is not None
        if self._sweeper.running:
            self._sweeper.stop()
        self.service.notice("The server is going down.")
        yield self.factory.files.store.abort_all("server stopping")
        for conn in list(self.factory.connections):
            conn.disconnect("server shutting down")
        yield super().stopService()
        if self.node is not None:
            yield self.node.drained(CLOSE_GRACE)
            yield self.node.stop()
        yield self.service.delivery.drain()
        yield self._closed_or_cut(CLOSE_GRACE)
        yield self.store.close()
        self._stop_threads()
        self.log.info("Server stopped; history written.")

    def _stop_threads(self) -> None:
        if self._executor is not None:
            self._executor.stop()
        if self._upload_pool is not None:
            self._upload_pool.stop()
        if self._password_pool is not None:
            self._password_pool.stop()
