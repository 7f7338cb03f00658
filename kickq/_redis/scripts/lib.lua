-- lib: what the scripts share. kickq/_redis/lua.py puts before each script the parts of this
-- file that it uses, in this order, each after the parts it uses itself: a part is one
-- paragraph (no blank line inside) defining one local. Before them come the constants, made
-- from Python's (kickq/_redis/lua.py CONSTANTS), those used only: PIECE, WHOLE_ABOVE and MARK
-- (how a record's long values are cut, kickq/_redis/layout.py), BAND and PRIORITY_BANDS (a
-- queue's scores, kickq/_redis/keys.py), MAX_DURATION (the most seconds an option may be),
-- STATES (a set: every state a record may hold) and SEEN_STATES (a list: the states a job is
-- seen in, in the order people read them).

-- the error of a key of type `kind` where a key of type `expected` (or none) belongs
local function wrong_type(key, kind, expected)
  return 'kickq: ' .. key .. ' is a ' .. kind .. ', not a ' .. expected
end

-- nil when `key` is missing or a key of type `expected`, else the error; and the key's type
local function check_type(key, expected)
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'none' and kind ~= expected then return wrong_type(key, kind, expected), kind end
  return nil, kind
end

-- check_type of each key and type given (key, type, key, type ...) in turn: the first error,
-- or nil. A script checks every key it writes before its first write, so that an error leaves
-- nothing changed.
local function check_types(...)
  local given = { ... }
  for i = 1, #given, 2 do
    local err = check_type(given[i], given[i + 1])
    if err then return err end
  end
end

-- the reply of a read (redis.pcall's arguments, the key first) that fails on a key of another
-- type than `expected`, or nil and the error: a read checks its key's type for free
local function typed_read(expected, ...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    local key = select(2, ...)
    return nil, wrong_type(key, redis.call('TYPE', key).ok, expected)
  end
  return reply
end

-- A counter's text as every writer writes it and kickq/_redis/record.py reads it: digits, no
-- sign, no leading zero, exact in a Lua number. The version's text fences every change
-- (transition.lua compares it as text), so no other text may stand for the same number.
local function counter(value)
  return value ~= nil and #value <= 15 and (value == '0' or string.match(value, '^[1-9]%d*$') ~= nil)
end

-- A command on `key` with every item of `list` as arguments, in calls of at most 1,000
-- (unpack() takes at most ~8,000 values); the replies of the calls joined.
local function batched(command, key, list)
  local replies = {}
  for i = 1, #list, 1000 do
    local reply = redis.call(command, key, unpack(list, i, math.min(i + 999, #list)))
    if type(reply) == 'table' then
      for _, item in ipairs(reply) do replies[#replies + 1] = item end
    end
  end
  return replies
end

-- The score of a job joining `queue` with `priority` (0-9): (9 - priority) * BAND, plus one
-- more than the last job queued with that priority. The lowest is claimed first: higher
-- priorities first, and first in, first out within one.
local function next_score(queue, priority)
  local band = (9 - tonumber(priority)) * BAND
  local last = redis.call('ZREVRANGEBYSCORE', queue, band + BAND - 1, band,
    'WITHSCORES', 'LIMIT', 0, 1)
  return last[2] and tonumber(last[2]) + 1 or band
end

-- Adds `field` and `value` to `fields` (a flat field/value list) as kickq/_redis/layout.py
-- lays a record out: a value longer than PIECE bytes as the pieces field, field~1, field~2 ...
-- (MARK before the number) of PIECE bytes each, one longer than WHOLE_ABOVE bytes whole. The
-- values cut here (a job's data, its unique key) are JSON texts that Python encoded ASCII-only
-- (json.dumps's ensure_ascii): a byte is a character, so no cut falls inside a character.
local function lay_out(fields, field, value)
  local size = #value
  if size <= PIECE or size > WHOLE_ABOVE then
    fields[#fields + 1] = field
    fields[#fields + 1] = value
    return
  end
  for at = 1, size, PIECE do
    local number = (at - 1) / PIECE
    fields[#fields + 1] = number == 0 and field or (field .. MARK .. number)
    fields[#fields + 1] = string.sub(value, at, at + PIECE - 1)
  end
end

-- Tells every process of a deadline (a due time, a run's deadline, a purge time, a schedule's
-- tick) a script set, after its writes. Every process sleeps until the earliest deadline it
-- knows of, so a deadline set by one process must reach the others: it is published on the
-- timers channel, unless an earlier one, still to come, was published already (then every
-- process ticks at that one and reads every later deadline from Redis there). `key` holds the
-- last deadline published (ms); whatever it holds, a SET replaces it, so a damaged key costs
-- one extra message and never an error.
local function announce(key, channel, due_ms, now_ms)
  local told = tonumber(redis.pcall('GET', key))
  if told and told > now_ms and told <= due_ms then return end
  redis.call('SET', key, due_ms)
  redis.call('PUBLISH', channel, due_ms)
end

-- The whole value of `field` of the hash `key`, its pieces joined (see `lay_out`), or nil
local function whole(key, field)
  local value = redis.call('HGET', key, field)
  if not value then return nil end
  local pieces, number = { value }, 1
  while true do
    local piece = redis.call('HGET', key, field .. MARK .. number)
    if not piece then return table.concat(pieces) end
    pieces[#pieces + 1] = piece
    number = number + 1
  end
end

-- The start of every key of the partition of the key `key`, which ends with `tail`
-- ("<ns>:" or "<ns>:{<partition>}:"), for a key a script builds itself: it is in the same slot
local function prefix_of(key, tail)
  return string.sub(key, 1, #key - #tail)
end

-- A parent's end, told to its children through the hand-over (kickq/_engine/dependencies.py):
-- the notice "end:<id>" in the scheduled zset, due at once, and how it ended in the handover
-- hash, both written in the step that ends it, so that nothing is lost if its process dies
-- right after; every process is told on the timers channel `timers`. `told` is the JSON of how
-- it ended. `prefix` is the partition's (`prefix_of`): the caller checked the types of its
-- scheduled and handover keys before its first write.
local function tell_children(prefix, timers, id, told, now_ms)
  redis.call('HSET', prefix .. 'handover', 'end:' .. id, told)
  redis.call('ZADD', prefix .. 'scheduled', now_ms, 'end:' .. id)
  announce(prefix .. 'next_due', timers, now_ms, now_ms)
end
