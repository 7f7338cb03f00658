-- claim: take up to N queued jobs for a worker and start a run of each.
-- Each record is checked before anything is written to it, so that one bad record in a batch
-- affects no other: a key that is not a hash, a record with no state or an unknown one, or one
-- whose version, run_count or process_timeout is not a number, is set aside alone (renamed to
-- the damaged key, out of every index, its waiters told). Ids whose record is gone (deleted)
-- or in another known state (a stale copy in the list) are dropped.
--
-- KEYS[1]     processing zset (score: the run's deadline in ms)
-- KEYS[2]     scheduled zset    KEYS[3]  finished zset
-- KEYS[4]     the set of paused job names: no run of those starts
-- KEYS[5]     the last deadline announced (see announce.lua)
-- KEYS[6 ..]  two per job name the worker serves, in the order to take from: its queue zset
--             (lowest score first: the highest priority, then the first in) and the index of
--             its processing jobs (scored by the run's start in microseconds; see
--             transition.lua)
-- ARGV[1]  job key prefix (the key of job <id> is ARGV[1] .. id)
-- ARGV[2]  now in ms
-- ARGV[3]  now as a JSON string (ISO-8601), stored as update_time and run_start
-- ARGV[4]  the most jobs to claim
-- ARGV[5]  damaged key prefix: a record set aside is renamed to ARGV[5] .. id
-- ARGV[6]  done channel prefix: "damaged" is published on ARGV[6] .. id for a record set aside
-- ARGV[7]  the timers channel: the earliest deadline of the runs started is announced there
-- ARGV[8]  now in microseconds
-- ARGV[9 ..]  the job names, one per pair of KEYS from KEYS[6]
-- Returns { claimed jobs, each { id, the flat field/value list of its record (HGETALL) };
--           records set aside, each { id, why } }.
local claimed, damaged = {}, {}
local want = tonumber(ARGV[4])
local now = tonumber(ARGV[2])
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
  local seconds = tonumber(timeout)
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
for i = 1, #KEYS do
  local kind = i == 5 and 'none' or redis.call('TYPE', KEYS[i]).ok  -- KEYS[5]: any will do
  local expected = i == 4 and 'set' or 'zset'
  if kind ~= 'none' and kind ~= expected then
    return redis.error_reply('kickq: ' .. KEYS[i] .. ' is a ' .. kind .. ', not a ' .. expected)
  end
end

local earliest = nil
for q = 6, #KEYS, 2 do
  local name = ARGV[9 + (q - 6) / 2]
  local paused = redis.call('SISMEMBER', KEYS[4], name) == 1
  while not paused and #claimed < want do
    local popped = redis.call('ZPOPMIN', KEYS[q], want - #claimed)
    if #popped == 0 then break end
    for p = 1, #popped, 2 do
      local id = popped[p]
      local key = ARGV[1] .. id
      local kind = redis.call('TYPE', key).ok
      if kind ~= 'none' then
        local why, state, timeout = inspect(key, kind)
        if why then
          set_aside(id, key, kind, why)
        elseif state == 'queued' then
          redis.call('HSET', key, 'state', 'processing', 'update_time', ARGV[3], 'run_start', ARGV[3])
          redis.call('HINCRBY', key, 'run_count', 1)
          redis.call('HINCRBY', key, 'version', 1)
          local deadline = now + math.floor(timeout * 1000)
          redis.call('ZADD', KEYS[1], deadline, id)
          redis.call('ZADD', KEYS[q + 1], ARGV[8], id)
          if not earliest or deadline < earliest then earliest = deadline end
          claimed[#claimed + 1] = { id, redis.call('HGETALL', key) }
        end
      end
    end
  end
end
if earliest then
  announce(KEYS[5], ARGV[7], earliest, now)
end
return { claimed, damaged }
