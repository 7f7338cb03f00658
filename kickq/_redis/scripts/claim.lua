-- claim: take up to N queued jobs for a worker and start a run of each.
-- An empty claim costs one ZCARD per name: nothing else is read or checked before a queue is
-- known to hold work. Every key the claim writes is checked before its first write, and each
-- record before anything is written to it, so that one bad record in a batch affects no other:
-- a key that is not a hash, a record with no state or an unknown one, a queued one that names
-- another job than its queue's (its handler would be the wrong one), or one whose version is
-- missing or whose version or run_count is not a whole number (see `counter` in lib.lua), or
-- whose process_timeout is not a number of seconds, is set aside alone (renamed to the damaged
-- key, out of every index, its waiters told). Ids whose record is gone (deleted) or in another
-- known state (a stale copy in the queue) are dropped. The checks read nothing more than the
-- record's one HGETALL.
--
-- A name's limits (see limit.lua) are obeyed here, atomically for every process: no more jobs
-- are popped than its concurrency leaves room for (beside the runs in its processing index) and
-- than its rate leaves in the window (the starts kept in its starts zset). Jobs held back stay
-- in their queue, untouched: a limit never fails a job and never counts as a run.
--
-- A claim whose reply is lost (the connection failed after it was sent) is found again by its
-- token (see reclaim.lua): each run it starts carries the token in its record's `claim` field,
-- and its processing index score is this claim's now. A claim that finds "void:<token>" in the
-- worker's claim key (the lost call reached Redis only after the worker gave it up) takes
-- nothing.
--
-- KEYS[1]  processing: the processing zset (score: the run's deadline in ms)
-- KEYS[2]  scheduled: the scheduled zset
-- KEYS[3]  finished: the finished zset
-- KEYS[4]  paused: the set of paused job names: no run of those starts
-- KEYS[5]  next_due: the last deadline announced (see `announce`, lib.lua)
-- KEYS[6]  claim_key: the worker's claim key (a string, written by reclaim.lua only)
-- KEYS[7 ..]  queue, processing_index, limits, starts: four per job name the worker serves,
--          in the order to take from: its queue zset (lowest score first: the highest
--          priority, then the first in), the index of its processing jobs (scored by the
--          run's start in microseconds; see transition.lua), its limits hash (rate_count,
--          rate_ms, concurrency; any may be missing) and its starts zset (the runs started
--          within the rate window, "<id>:<run count>" scored by their start in microseconds,
--          the run_start of their record: the window is exact to the microsecond)
-- ARGV[1]  job_prefix: the key of job <id> is ARGV[1] .. id
-- ARGV[2]  now_ms: now in ms
-- ARGV[3]  process_timeout: the process_timeout (s) of a record that has none (left out at
--          its default)
-- ARGV[4]  count: the most jobs to claim
-- ARGV[5]  damaged_prefix: a record set aside is renamed to ARGV[5] .. id
-- ARGV[6]  done_prefix: "damaged" is published on ARGV[6] .. id for a record set aside (and
--          "damaged:<id>" on the record's reply_to, its creator's reply channel)
-- ARGV[7]  now_us: now in microseconds, stored as update_time and run_start
-- ARGV[8]  timers: the timers channel: the earliest deadline of the runs started is
--          announced there
-- ARGV[9]  token: this claim's token (unique to the worker and the claim)
-- ARGV[10 ..]  name: the job names, one per four KEYS from KEYS[7]
-- Returns { claimed jobs, each { id, the flat field/value list of its record, as HGETALL would };
--           records set aside, each { id, why };
--           the ms until a rate limit lets the next run start, for the soonest of the names
--           whose rate held queued jobs back, or -1 when none did;
--           the names with nothing to start now: an empty queue, paused, or held back by a
--           limit (a wake message, or the rate's wait, says when to ask again) }.
local FIRST = 7
local claimed, damaged, wait, idle = {}, {}, -1, {}
local want = tonumber(ARGV[4])
local now = tonumber(ARGV[2])
local now_us = tonumber(ARGV[7])

-- The record at `key`, popped from the queue of job `name`, as a flat field/value list and a
-- table of the fields a claim reads, or why it cannot be claimed safely. A record that is gone
-- reads as an empty list.
local function inspect(key, name)
  local flat = redis.pcall('HGETALL', key)
  if flat.err then return nil, nil, 'the job key is a ' .. redis.call('TYPE', key).ok .. ', not a hash' end
  if #flat == 0 then return flat, {} end
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = i end
  local function field(name) return record[name] and flat[record[name] + 1] end
  local state = field('state')
  if not state then return nil, nil, 'the record has no state' end
  if state ~= 'queued' then
    if STATES[state] then return flat, record end
    return nil, nil, 'unknown state ' .. state
  end
  local named = field('name')
  if named ~= name then
    return nil, nil, named and 'the record names job ' .. named .. ', not ' .. name
      or 'the record has no name'
  end
  if not field('version') then return nil, nil, 'the record has no version' end
  if not counter(field('version')) then return nil, nil, 'version is not a whole number' end
  local runs = field('run_count')
  if runs and not counter(runs) then return nil, nil, 'run_count is not a whole number' end
  local seconds = tonumber(field('process_timeout') or ARGV[3])
  if not seconds or seconds ~= seconds or seconds < 0 or seconds > MAX_DURATION then
    return nil, nil, 'process_timeout is not a number of seconds'
  end
  return flat, record, nil, seconds
end

local function set_aside(id, key, why)
  local aside = ARGV[5] .. id
  local kind = redis.call('TYPE', key).ok
  local reply_to = kind == 'hash' and redis.call('HGET', key, 'reply_to')
  redis.call('RENAME', key, aside)
  if kind == 'hash' then
    redis.call('HSET', aside, 'damaged_error', why)
  end
  for i = 1, 3 do
    redis.pcall('ZREM', KEYS[i], id)  -- a damaged index is reported by its own reader
  end
  redis.call('PUBLISH', ARGV[6] .. id, 'damaged')
  if reply_to then
    redis.call('PUBLISH', reply_to, 'damaged:' .. id)
  end
  damaged[#damaged + 1] = { id, why }
end

-- The limits of the name whose keys start at KEYS[q], or nil and an error; a number that is
-- not one is no limit.
local function limits_of(q)
  local fields, err = typed_read('hash', 'HMGET', KEYS[q + 2], 'rate_count', 'rate_ms',
    'concurrency')
  if not fields then return nil, err end
  local count, window, most = unpack(fields)
  count, window = tonumber(count), tonumber(window)
  if not (count and window) then count, window = nil, nil end
  local limit = { count = count, window = window, most = tonumber(most) }
  if count then
    local bad = check_type(KEYS[q + 3], 'zset')
    if bad then return nil, bad end
    limit.window_us = window * 1000
    -- a start that is a whole window old (or older) counts no more; Lua writes a number in 14
    -- digits, too few for microseconds: %.0f
    local gone = string.format('%.0f', now_us - limit.window_us)
    redis.call('ZREMRANGEBYSCORE', KEYS[q + 3], '-inf', gone)
  end
  return limit
end

-- How many more jobs of that name may start now.
local function room(q, limit)
  local free = want - #claimed
  if limit.most then
    free = math.min(free, limit.most - redis.call('ZCARD', KEYS[q + 1]))
  end
  if limit.count then
    free = math.min(free, limit.count - redis.call('ZCARD', KEYS[q + 3]))
  end
  return free
end

local earliest = nil  -- the earliest deadline of the runs started, to announce
local function start(q, id, key, flat, record, timeout, limit)
  local function field(name) return record[name] and flat[record[name] + 1] end
  local runs = tonumber(field('run_count') or 0) + 1
  local changed = { state = 'processing', update_time = ARGV[7], run_start = ARGV[7],
    run_count = tostring(runs), version = tostring(tonumber(field('version') or 0) + 1),
    claim = ARGV[9] }
  local written = {}
  for name, value in pairs(changed) do
    written[#written + 1] = name
    written[#written + 1] = value
    -- the record as it now is, for the reply: no second read
    if record[name] then
      flat[record[name] + 1] = value
    else
      flat[#flat + 1] = name
      flat[#flat + 1] = value
    end
  end
  redis.call('HSET', key, unpack(written))
  local deadline = now + math.floor(timeout * 1000)
  redis.call('ZADD', KEYS[1], deadline, id)
  if not earliest or deadline < earliest then earliest = deadline end
  redis.pcall('ZADD', KEYS[q + 1], ARGV[7], id)
  if limit.count then
    redis.call('ZADD', KEYS[q + 3], ARGV[7], id .. ':' .. runs)
    redis.call('PEXPIRE', KEYS[q + 3], math.ceil(limit.window) + 1000)
  end
  claimed[#claimed + 1] = { id, flat }
end

-- Take up to `free` jobs from the queue at KEYS[q] (of job `name`); false when it is empty now.
local function take(q, name, free, limit)
  local popped = redis.call('ZPOPMIN', KEYS[q], free)
  for p = 1, #popped, 2 do
    local id = popped[p]
    local key = ARGV[1] .. id
    local flat, record, why, timeout = inspect(key, name)
    if why then
      set_aside(id, key, why)
    elseif timeout then  -- queued (else gone, or a stale copy of a job in another state)
      start(q, id, key, flat, record, timeout, limit)
    end
  end
  return #popped == 2 * free
end

-- When the rate of the name holds queued jobs back: the ms until its oldest start leaves the
-- window, so that the worker sleeps that long instead of polling.
local function rate_wait(q, limit)
  if not limit.count or redis.call('ZCARD', KEYS[q]) == 0 then return end
  if redis.call('ZCARD', KEYS[q + 3]) < limit.count then return end
  local oldest = redis.call('ZRANGE', KEYS[q + 3], 0, 0, 'WITHSCORES')
  if not oldest[2] then return end
  local ms = math.max(math.ceil((tonumber(oldest[2]) + limit.window_us - now_us) / 1000), 1)
  if wait < 0 or ms < wait then wait = ms end
end

-- 1. Which names have work: every check here only reads, so an error leaves nothing changed.
local ready = {}  -- { q, name, limit } of the names to take from, in order
for q = FIRST, #KEYS, 4 do
  local name = ARGV[10 + (q - FIRST) / 4]
  local queued, err = typed_read('zset', 'ZCARD', KEYS[q])
  if not queued then return redis.error_reply(err) end
  if queued == 0 then
    idle[#idle + 1] = name
  else
    local paused
    paused, err = typed_read('set', 'SISMEMBER', KEYS[4], name)
    if not paused then return redis.error_reply(err) end
    if paused == 1 then
      idle[#idle + 1] = name
    else
      local limit
      limit, err = limits_of(q)
      -- the processing index is a listing, written with pcall, unless a concurrency limit
      -- counts it
      err = err or (limit and limit.most and check_type(KEYS[q + 1], 'zset')) or nil
      if err then return redis.error_reply(err) end
      ready[#ready + 1] = { q, name, limit }
    end
  end
end
if #ready == 0 then return { claimed, damaged, wait, idle } end
local bad = check_type(KEYS[1], 'zset')
if bad then return redis.error_reply(bad) end

-- 2. The fence: a claim given up by its worker (see reclaim.lua) takes nothing.
if redis.pcall('GET', KEYS[6]) == 'void:' .. ARGV[9] then
  return { claimed, damaged, wait, idle }
end

-- 3. Take.
for _, entry in ipairs(ready) do
  local q, name, limit = unpack(entry)
  local more = true  -- false once the queue is empty or a limit holds the rest back
  while more and #claimed < want do
    local free = room(q, limit)
    more = free > 0 and take(q, name, free, limit)
  end
  if not more then idle[#idle + 1] = name end
  rate_wait(q, limit)
end
if earliest then
  announce(KEYS[5], ARGV[8], earliest, now)
end
return { claimed, damaged, wait, idle }
