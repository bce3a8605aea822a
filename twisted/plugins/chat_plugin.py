"""The ``twistd chat`` plugin: the same server, run by twistd.

Under twistd the console view is off; logging goes where twistd sends it.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "TOML configuration file"],
        ["listen", "l", None, "chat endpoint, e.g. tcp:8000"],
        ["http", None, None, "HTTP endpoint for file downloads"],
        ["public-url", None, None, "base URL written into file notices"],
        ["data-dir", "d", None, "where history and files are kept"],
        ["files-dir", None, None, "where shared files are kept (a cluster's nodes share one)"],
        ["cluster", None, None, "be one node of a chat shared through Redis (redis://...)"],
        ["node-id", None, None, "this node's id in the cluster"],
    ]
    optFlags = [["no-http", None, "do not serve files over HTTP"]]


@implementer(IServiceMaker, IPlugin)
class ChatServiceMaker:
    tapname = "chat"
    description = "lanchat: a chat server for telnet, nc and chat-tui, with file sharing."
    options = Options

    def makeService(self, options: Options) -> Any:
        from twisted.internet import reactor

        from chat.cli import configure, freeze_startup_heap, tune_process
        from chat.server import ChatServer

        argv: list[str] = ["--no-console"]
        for key in ("config", "listen", "http", "public-url", "data-dir", "files-dir", "cluster",
                    "node-id"):
            if options[key]:
                argv += [f"--{key}", options[key]]
        if options["no-http"]:
            argv.append("--no-http")
        config, _ = configure(argv)
        tune_process()
        reactor.callWhenRunning(freeze_startup_heap)
        return ChatServer(config, reactor)


serviceMaker = ChatServiceMaker()
