-- claim: take up to N queued jobs for a worker and start a run of each.
-- Each record is checked before anything is written to it, so that one bad record in a batch
-- affects no other: a key that is not a hash, a record with no state or an unknown one, or one
-- whose version, run_count or process_timeout is not a number, is set aside alone (renamed to
-- the damaged key, out of every index, its waiters told). Ids whose record is gone (deleted)
-- or in another known state (a stale copy in the list) are dropped.
--
-- A name's limits (see limit.lua) are obeyed here, atomically for every process: no more jobs
-- are popped than its concurrency leaves room for (beside the runs in its processing index) and
-- than its rate leaves in the window (the starts kept in its starts zset). Jobs held back stay
-- in their queue, untouched: a limit never fails a job and never counts as a run.
--
-- KEYS[1]     processing zset (score: the run's deadline in ms)
-- KEYS[2]     scheduled zset    KEYS[3]  finished zset
-- KEYS[4]     the set of paused job names: no run of those starts
-- KEYS[5]     the last deadline announced (see announce.lua)
-- KEYS[6 ..]  four per job name the worker serves, in the order to take from: its queue zset
--             (lowest score first: the highest priority, then the first in), the index of
--             its processing jobs (scored by the run's start in microseconds; see
--             transition.lua), its limits hash (rate_count, rate_ms, concurrency; any may be
--             missing) and its starts zset (the runs started within the rate window,
--             "<id>:<run count>" scored by their start in microseconds, the run_start of
--             their record: the window is exact to the microsecond)
-- ARGV[1]  job key prefix (the key of job <id> is ARGV[1] .. id)
-- ARGV[2]  now in ms
-- ARGV[3]  the process_timeout (s) of a record that has none: left out at its default
-- ARGV[4]  the most jobs to claim
-- ARGV[5]  damaged key prefix: a record set aside is renamed to ARGV[5] .. id
-- ARGV[6]  done channel prefix: "damaged" is published on ARGV[6] .. id for a record set aside
-- ARGV[7]  now in microseconds, stored as update_time and run_start
-- ARGV[8]  the timers channel: the earliest deadline of the runs started is announced there
-- ARGV[9 ..]  the job names, one per four KEYS from KEYS[6]
-- Returns { claimed jobs, each { id, the flat field/value list of its record (HGETALL) };
--           records set aside, each { id, why };
--           the ms until a rate limit lets the next run start, for the soonest of the names
--           whose rate held queued jobs back, or -1 when none did }.
local claimed, damaged, wait = {}, {}, -1
local want = tonumber(ARGV[4])
local now = tonumber(ARGV[2])
local now_us = tonumber(ARGV[7])
local KNOWN = { new = true, delayed = true, processing = true, retry = true, ghost = true,
                success = true, fail = true }

local function whole(value)  -- absent, or an integer HINCRBY accepts
  return not value or (#value < 19 and string.match(value, '^%-?%d+$') ~= nil)
end

-- Returns why the record cannot be claimed safely (nil if it can), its state, and its
-- process_timeout in seconds.
local function inspect(key, kind)
  if kind ~= 'hash' then return 'the job key is a ' .. kind .. ', not a hash' end
  local state, version, runs, timeout = unpack(
    redis.call('HMGET', key, 'state', 'version', 'run_count', 'process_timeout'))
  if not state then return 'the record has no state' end
  if state ~= 'queued' then
    if KNOWN[state] then return nil, state end
    return 'unknown state ' .. state
  end
  if not whole(version) then return 'version is not a whole number' end
  if not whole(runs) then return 'run_count is not a whole number' end
  local seconds = tonumber(timeout or ARGV[3])
  if not seconds or seconds ~= seconds or seconds < 0 or seconds > 1e10 then
    return 'process_timeout is not a number of seconds'
  end
  return nil, state, seconds
end

local function set_aside(id, key, kind, why)
  local aside = ARGV[5] .. id
  redis.call('RENAME', key, aside)
  if kind == 'hash' then
    redis.call('HSET', aside, 'damaged_error', why)
  end
  for i = 1, 3 do
    redis.call('ZREM', KEYS[i], id)
  end
  redis.call('PUBLISH', ARGV[6] .. id, 'damaged')
  damaged[#damaged + 1] = { id, why }
end

-- a damaged index would stop the script half-way: check every key before the first write
local PER_NAME = { 'zset', 'zset', 'hash', 'zset' }
for i = 1, #KEYS do
  local kind = i == 5 and 'none' or redis.call('TYPE', KEYS[i]).ok  -- KEYS[5]: any will do
  local expected = i == 4 and 'set' or (i < 4 and 'zset') or PER_NAME[(i - 6) % 4 + 1]
  if kind ~= 'none' and kind ~= expected then
    return redis.error_reply('kickq: ' .. KEYS[i] .. ' is a ' .. kind .. ', not a ' .. expected)
  end
end

-- The limits of the name whose keys start at KEYS[q]; a number that is not one is no limit.
-- The window is kept in ms and in us. Microseconds are written with %.0f: Lua writes a number
-- in 14 digits, too few for them.
local function limits_of(q)
  local count, window, most = unpack(
    redis.call('HMGET', KEYS[q + 2], 'rate_count', 'rate_ms', 'concurrency'))
  count, window = tonumber(count), tonumber(window)
  if not (count and window) then count, window = nil, nil end
  local limit = { count = count, window = window, most = tonumber(most) }
  if count then  -- a start that is a whole window old (or older) counts no more
    limit.window_us = window * 1000
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
local function start(q, id, key, timeout, limit)
  redis.call('HSET', key, 'state', 'processing', 'update_time', ARGV[7], 'run_start', ARGV[7])
  local run = redis.call('HINCRBY', key, 'run_count', 1)
  redis.call('HINCRBY', key, 'version', 1)
  local deadline = now + math.floor(timeout * 1000)
  redis.call('ZADD', KEYS[1], deadline, id)
  if not earliest or deadline < earliest then earliest = deadline end
  redis.call('ZADD', KEYS[q + 1], ARGV[7], id)
  if limit.count then
    redis.call('ZADD', KEYS[q + 3], ARGV[7], id .. ':' .. run)
    redis.call('PEXPIRE', KEYS[q + 3], math.ceil(limit.window) + 1000)
  end
  claimed[#claimed + 1] = { id, redis.call('HGETALL', key) }
end

-- Take up to `free` jobs from the queue at KEYS[q]; false when it is empty.
local function take(q, free, limit)
  local popped = redis.call('ZPOPMIN', KEYS[q], free)
  if #popped == 0 then return false end
  for p = 1, #popped, 2 do
    local id = popped[p]
    local key = ARGV[1] .. id
    local kind = redis.call('TYPE', key).ok
    if kind ~= 'none' then
      local why, state, timeout = inspect(key, kind)
      if why then
        set_aside(id, key, kind, why)
      elseif state == 'queued' then
        start(q, id, key, timeout, limit)
      end
    end
  end
  return true
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

for q = 6, #KEYS, 4 do
  local name = ARGV[9 + (q - 6) / 4]
  if redis.call('SISMEMBER', KEYS[4], name) == 0 then
    local limit = limits_of(q)
    while #claimed < want do
      local free = room(q, limit)
      if free <= 0 or not take(q, free, limit) then break end
    end
    rate_wait(q, limit)
  end
end
if earliest then
  announce(KEYS[5], ARGV[8], earliest, now)
end
return { claimed, damaged, wait }
