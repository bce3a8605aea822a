"""What every node of a cluster holds alike besides the chat: accounts and rooms' settings.

An account made, changed or removed on one node, or a room's settings
changed there (topic, private, locked, operators, invitations), is told to
the other nodes at once and kept in a Redis hash, so a node that starts or
comes back later reads the same. A node joining with accounts of its own
(made while it ran alone) adds those the cluster lacks; where both have one
name, the cluster's wins.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer

from chat.redisschema import ACCOUNTS, ROOMS


class Shared:
    """Accounts and rooms' settings, kept in step across a cluster's nodes."""

    def __init__(self, node: Any) -> None:
        """``node``: the ``chat.cluster.Node`` (``redis``, ``tell``, ``handlers``, ``mirror``)."""
        self.node = node
        self.accounts: Any = None
        node.handlers["room"] = node.mirror.room_changed
        node.chat.rooms.changed.append(self._room_changed)

    def share_accounts(self, accounts: Any) -> None:
        """``accounts`` (``chat.accounts.Accounts``) are the cluster's from now on
        (their Argon2id hashes go to Redis: it is the cluster's own)."""
        self.accounts = accounts
        accounts.changed.append(self._account_changed)
        self.node.handlers["account"] = lambda data: accounts.apply(
            str(data["key"]), data.get("record"))

    def _account_changed(self, key: str, record: dict[str, Any] | None) -> None:
        redis = self.node.redis
        if redis is None:
            return  # (a node cut off tells nobody; its next resync adds what is missing)
        if record is None:
            redis.execute_command("HDEL", ACCOUNTS, key).addErrback(lambda f: None)
        else:
            redis.execute_command("HSET", ACCOUNTS, key, json.dumps(record)).addErrback(
                lambda f: None)
        self.node.tell("account", {"key": key, "record": record})

    def _room_changed(self, room: Any) -> None:
        redis = self.node.redis
        if redis is None:
            return  # (a node cut off tells nobody, and its resync does not either: noted)
        data = self.node.mirror.room_settings(room)
        redis.execute_command("HSET", ROOMS, room.key, json.dumps(data)).addErrback(
            lambda f: None)
        self.node.tell("room", data)

    @defer.inlineCallbacks
    def sync(self, cmd: Any) -> Any:
        """While a node resynchronises: accounts both ways, then rooms' settings."""
        accounts = self.accounts
        if accounts is not None:
            for key in accounts.keys():
                yield cmd.execute_command("HSETNX", ACCOUNTS, key,
                                          json.dumps(accounts.record(key)))
            flat = yield cmd.execute_command("HGETALL", ACCOUNTS)
            for i in range(0, len(flat), 2):
                accounts.apply(flat[i], json.loads(flat[i + 1]))
        for raw in (yield cmd.execute_command("HVALS", ROOMS)):
            self.node.mirror.room_changed(json.loads(raw))
