"""What a cluster keeps in Redis, and the Lua scripts that change it.

Every key starts with ``lanchat:`` (docs/scaling.md has the table). Each
script runs atomically in Redis: ``PUBLISH`` hands out an event's id, appends
it to its room's stream, applies the presence or file change it implies and
publishes it, in one step, so the channel's order is the order of ids;
``CLAIM`` and ``RELEASE`` hold and free names; ``REAP`` publishes a dead
node's users' leaves exactly once; ``SNAPSHOT`` reads the last id and who is
where as of one moment.
"""

from __future__ import annotations

PREFIX = "lanchat:"
ID_KEY = PREFIX + "id"
CHANNEL = PREFIX + "events"
USERS = PREFIX + "users"
NODES = PREFIX + "nodes"
FILES = PREFIX + "files"
ROOMS = PREFIX + "rooms"
ACCOUNTS = PREFIX + "accounts"
#: Session key -> user name: a transfer connection (``/attach``) or an HTTP
#: upload (``Bearer``) may reach another node than the user's chat.
SESSIONS = PREFIX + "sessions"
#: Every event as published, the last ``LOG_LENGTH`` or so: a node back from a
#: break replays what it missed (joins, leaves, lines) in order.
LOG = PREFIX + "log"
LOG_LENGTH = 10000
#: Who publishes the leaves of a dead node's users.
REAPER = "-reaper"


def node_key(node: str) -> str:
    return f"{PREFIX}node:{node}"


def history_key(room_key: str) -> str:
    return f"{PREFIX}h:{room_key}"


#: KEYS: id, channel, log. ARGV: node, seq, event JSON without its id, history
#: stream (or ""), its length, then (command, key, field, value) fours.
PUBLISH = """
local id = redis.call('INCR', KEYS[1])
local event = '{"id":' .. id .. ',' .. string.sub(ARGV[3], 2)
local message = ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. event
if ARGV[4] ~= '' then
  redis.call('XADD', ARGV[4], 'MAXLEN', '~', ARGV[5], '*', 'e', event)
end
for i = 6, #ARGV - 3, 4 do
  if ARGV[i] == 'HSET' then
    redis.call('HSET', ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  elseif ARGV[i] == 'HDEL' then
    redis.call('HDEL', ARGV[i + 1], ARGV[i + 2])
  end
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '""" + str(LOG_LENGTH) + """', '*', 'm', message)
redis.call('PUBLISH', KEYS[2], message)
return id
"""

#: KEYS: users. ARGV: name key, presence JSON, node. 1: claimed (or already ours).
CLAIM = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and cjson.decode(held).node ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

#: KEYS: users. ARGV: name key, node. Frees a name only if this node holds it.
RELEASE = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and cjson.decode(held).node == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""

#: KEYS: id, channel, users, nodes, log. ARGV: the dead node, its key, ts, reason.
#: Removing the node from the set first makes the leaves go out once.
REAP = """
if redis.call('EXISTS', ARGV[2]) == 1 then return 0 end
if redis.call('SREM', KEYS[4], ARGV[1]) == 0 then return 0 end
local all = redis.call('HGETALL', KEYS[3])
local n = 0
for i = 1, #all, 2 do
  local p = cjson.decode(all[i + 1])
  if p.node == ARGV[1] then
    redis.call('HDEL', KEYS[3], all[i])
    local id = redis.call('INCR', KEYS[1])
    local event = cjson.encode({type = 'leave', id = id, ts = ARGV[3], name = p.name,
                                reason = ARGV[4]})
    local message = '""" + REAPER + """ 0 ' .. event
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', """ + str(LOG_LENGTH) + """, '*', 'm', message)
    redis.call('PUBLISH', KEYS[2], message)
    n = n + 1
  end
end
return n
"""

#: KEYS: id, users. The last id handed out and who is where, as of one moment.
SNAPSHOT = """
return {redis.call('GET', KEYS[1]) or '0', redis.call('HGETALL', KEYS[2])}
"""

SCRIPTS = {"publish": PUBLISH, "claim": CLAIM, "release": RELEASE, "reap": REAP,
           "snapshot": SNAPSHOT}
