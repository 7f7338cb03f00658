-- stats: what kickq.stats() reports for some job names of one partition, read in one call.
-- Read-only. The work is bounded per name (7 ZCARDs, a SISMEMBER, the queue's head in each
-- priority band it uses, the 60-field minutes hash, the RUN_TIMES-long times list, the limits
-- hash) and the caller sends a bounded number of names per call, so that no call holds Redis
-- long. The reply is one JSON text: a reply of many small values costs more to read than this.
--
-- KEYS[1]  paused: the set of paused names
-- ARGV[1]  now_minute: the current epoch minute: a minutes field of an older minute is left out
-- ARGV[2]  job_prefix: the key of job <id> is ARGV[2] .. id
-- ARGV[3]  n: the number of keys of a name read, S + 3 when S states are counted
-- ARGV[4 .. 3+2n]  before, after: the key of each of these of a name, as what stands before the
--          name and what stands after it: the index of each state counted, in the order of
--          the counts (the first, queued, being the queue), then the minutes hash, the times
--          list, the limits hash
-- ARGV[4+2n ..]  name: the job names
-- Returns, for each name in order, one after the other in a flat JSON array:
--   the S counts; 1 if paused else 0;
--   n, then the update_time field of the first job of each priority band in use (n texts);
--   n, then the minutes hash's fields and values (n texts) but those of a minute out of the
--     last 60 (the caller still checks each);
--   n, then the limits hash's fields and values (n texts);
--   1 and the p50, p95 and max process times ("%.17g": the same doubles as the texts), or
--   0, n and the n texts of the times list when one is not a decimal number (the caller
--   makes what it can of them, as with any stray entry).
local now_minute = tonumber(ARGV[1])
local job_prefix = ARGV[2]
local shapes = tonumber(ARGV[3])
local states = shapes - 3
local before, after = {}, {}
for i = 1, shapes do
  before[i], after[i] = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
end
local QUEUE, MINUTES, TIMES, LIMITS = 1, states + 1, states + 2, states + 3

local out, n = {}, 0
local function push(value)
  n = n + 1
  out[n] = value
end
local function push_all(values)
  push(#values)
  for _, value in ipairs(values) do push(value) end
end

local function score_text(value)
  return string.format('%.0f', value)
end

-- the update times of the first job of each band, as claim.lua takes them (lowest score first)
local function heads(queue)
  local first = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
  if #first == 0 then return {} end
  local last = redis.call('ZRANGE', queue, -1, -1, 'WITHSCORES')
  local low, high = tonumber(first[2]), tonumber(last[2])
  local found = {}
  local last_band = math.min(PRIORITY_BANDS - 1, math.floor(high / BAND))
  for b = math.max(0, math.floor(low / BAND)), last_band do
    local from, to = b * BAND, b * BAND + BAND - 1
    local id
    if low >= from and low <= to then
      id = first[1]
    else
      id = redis.call('ZRANGEBYSCORE', queue, score_text(from), score_text(to), 'LIMIT', 0, 1)[1]
    end
    if id then
      local time = redis.pcall('HGET', job_prefix .. id, 'update_time')
      if type(time) == 'string' then found[#found + 1] = time end
    end
  end
  return found
end

local function recent(flat)
  local kept = {}
  for i = 1, #flat, 2 do
    local minute = tonumber(string.match(flat[i + 1], '^(%d+):') or '')
    if minute == nil or (minute <= now_minute and minute > now_minute - 60) then
      kept[#kept + 1] = flat[i]
      kept[#kept + 1] = flat[i + 1]
    end
  end
  return kept
end

-- nearest rank, as `_percentile` in kickq/_verbs/stats.py
local function rank(count, fraction)
  return math.max(1, math.ceil(count * fraction))
end

-- A text Lua reads as a number, Python's float() reads as the same double, but for hex
-- ("0x1p3"), inf and nan (an "n" in any case), which Python then reads itself: one search of
-- the whole list finds them.
local function push_times(texts)
  local values = {}
  local stray = string.find(table.concat(texts, ','), '[xXnN]')
  for i, text in ipairs(texts) do
    values[i] = not stray and tonumber(text)
    if not values[i] then
      push(0)
      push_all(texts)
      return
    end
  end
  if #values == 0 then
    push(0)
    push(0)
    return
  end
  table.sort(values)
  push(1)
  for _, at in ipairs({ rank(#values, 0.5), rank(#values, 0.95), #values }) do
    push(string.format('%.17g', values[at]))
  end
end

for i = 4 + 2 * shapes, #ARGV do
  local name = ARGV[i]
  local function key(kind) return before[kind] .. name .. after[kind] end
  local queued = redis.call('ZCARD', key(QUEUE))
  push(queued)
  for state = 2, states do push(redis.call('ZCARD', key(state))) end
  push(redis.call('SISMEMBER', KEYS[1], name))
  push_all(queued > 0 and heads(key(QUEUE)) or {})
  push_all(recent(redis.call('HGETALL', key(MINUTES))))
  push_all(redis.call('HGETALL', key(LIMITS)))
  push_times(redis.call('LRANGE', key(TIMES), 0, -1))
end
return cjson.encode(out)
