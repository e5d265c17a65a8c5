"""The registry's Lua scripts: each runs atomically in Redis, so a check and its write can never be
split by another node's command.

Keys (under the fleet's prefix P):
  P:calls              hash call_id -> JSON {"node","company","state"} (scalars only: cjson rewrites them
                       safely; `info` is kept apart because cjson would turn an empty list into {})
  P:info               hash call_id -> the call's info JSON, written once, never parsed in Redis
  P:node:<id>:calls    set of the call ids a node owns
  P:company:<id>:calls set of a company's live call ids
  P:nodes              set of known node ids;  P:status hash node_id -> its last NodeStatus JSON
  P:alive:<id>         the node's NodeStatus JSON with PX = node_ttl: present means alive
  P:reap:<id>          the reaper lock for a lost node (SET NX PX): one survivor handles it
Scripts derive the per-node and per-company keys from the prefix (ARGV[1]), which is fine on one Redis
(or a replicated one) but not on Redis Cluster.
"""

from __future__ import annotations

# ARGV: prefix, call_id, node, company, state, info_json, fleet_max, company_max
CLAIM = """
local p = ARGV[1]
if redis.call('HEXISTS', p .. ':calls', ARGV[2]) == 1 then return 'duplicate_call' end
local fleet_max = tonumber(ARGV[7])
if fleet_max > 0 and redis.call('HLEN', p .. ':calls') >= fleet_max then return 'at_capacity' end
local company_key = p .. ':company:' .. ARGV[4] .. ':calls'
local company_max = tonumber(ARGV[8])
if company_max > 0 and redis.call('SCARD', company_key) >= company_max then return 'too_many_calls' end
redis.call('HSET', p .. ':calls', ARGV[2], cjson.encode({node = ARGV[3], company = ARGV[4], state = ARGV[5]}))
redis.call('HSET', p .. ':info', ARGV[2], ARGV[6])
redis.call('SADD', p .. ':node:' .. ARGV[3] .. ':calls', ARGV[2])
redis.call('SADD', company_key, ARGV[2])
return 'ok'
"""

# ARGV: prefix, call_id, node, state. Returns 1 when updated, 0 when the call is not this node's.
UPDATE = """
local p = ARGV[1]
local raw = redis.call('HGET', p .. ':calls', ARGV[2])
if not raw then return 0 end
local entry = cjson.decode(raw)
if entry.node ~= ARGV[3] then return 0 end
entry.state = ARGV[4]
redis.call('HSET', p .. ':calls', ARGV[2], cjson.encode(entry))
return 1
"""

# ARGV: prefix, call_id, node, company, state, info_json. Writes back a live call of this node that the
# registry lost (a Redis restarted without persistence); no cap applies: the call is already up.
# Returns 1 when written, 0 when the id is registered already (whoever holds it keeps it).
RESTORE = """
local p = ARGV[1]
if redis.call('HEXISTS', p .. ':calls', ARGV[2]) == 1 then return 0 end
redis.call('HSET', p .. ':calls', ARGV[2], cjson.encode({node = ARGV[3], company = ARGV[4], state = ARGV[5]}))
redis.call('HSET', p .. ':info', ARGV[2], ARGV[6])
redis.call('SADD', p .. ':node:' .. ARGV[3] .. ':calls', ARGV[2])
redis.call('SADD', p .. ':company:' .. ARGV[4] .. ':calls', ARGV[2])
return 1
"""

# ARGV: prefix, call_id, node. Returns 1 when removed, 0 when the call is not this node's.
RELEASE = """
local p = ARGV[1]
local raw = redis.call('HGET', p .. ':calls', ARGV[2])
if not raw then return 0 end
local entry = cjson.decode(raw)
if entry.node ~= ARGV[3] then return 0 end
redis.call('HDEL', p .. ':calls', ARGV[2])
redis.call('HDEL', p .. ':info', ARGV[2])
redis.call('SREM', p .. ':node:' .. entry.node .. ':calls', ARGV[2])
redis.call('SREM', p .. ':company:' .. entry.company .. ':calls', ARGV[2])
return 1
"""

# ARGV: prefix, call_id, me. Returns {old entry JSON, info JSON} when moved to me, else nil. A call is
# taken over once at most (marked `taken`): its media socket has attached, so a second node asking
# holds a duplicate socket, not the call.
TAKE_PENDING = """
local p = ARGV[1]
local raw = redis.call('HGET', p .. ':calls', ARGV[2])
if not raw then return nil end
local entry = cjson.decode(raw)
if entry.node == ARGV[3] or entry.taken or (entry.state ~= 'pending' and entry.state ~= 'dialing') then
  return nil
end
local old = entry.node
entry.node = ARGV[3]
entry.taken = '1'
redis.call('HSET', p .. ':calls', ARGV[2], cjson.encode(entry))
redis.call('SREM', p .. ':node:' .. old .. ':calls', ARGV[2])
redis.call('SADD', p .. ':node:' .. ARGV[3] .. ':calls', ARGV[2])
return {raw, redis.call('HGET', p .. ':info', ARGV[2]) or '{}'}
"""

# ARGV: prefix, node, leaving ('1' or '0'), call ids... Removes the listed calls the node still owns
# (only those `lost` was told about: a call claimed or taken over meanwhile stays), or all of them when
# the node is leaving; then, when it holds nothing more and is not alive (or is leaving), forgets it.
# Returns how many calls were removed.
REMOVE_NODE_CALLS = """
local p = ARGV[1]
local node = ARGV[2]
local node_key = p .. ':node:' .. node .. ':calls'
local leaving = ARGV[3] == '1'
local ids = {}
if leaving then ids = redis.call('SMEMBERS', node_key) else
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local removed = 0
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', p .. ':calls', id)
  if raw then
    local entry = cjson.decode(raw)
    if entry.node == node then
      redis.call('HDEL', p .. ':calls', id)
      redis.call('HDEL', p .. ':info', id)
      redis.call('SREM', p .. ':company:' .. entry.company .. ':calls', id)
      removed = removed + 1
    end
  end
  redis.call('SREM', node_key, id)
end
if redis.call('SCARD', node_key) == 0 and (leaving or redis.call('EXISTS', p .. ':alive:' .. node) == 0) then
  redis.call('DEL', node_key)
  redis.call('SREM', p .. ':nodes', node)
  redis.call('HDEL', p .. ':status', node)
  if leaving then redis.call('DEL', p .. ':alive:' .. node) end
end
return removed
"""

# KEYS: the lock; ARGV: its holder. Deletes the lock only if this node still holds it.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
