-- transition: apply one decided state change of an existing job, if its record is still the one
-- the decision was made from. The end of a run (success, failure, ghost) and the promotion of a
-- due job come through here; Python decides, this script only applies.
--
-- KEYS[1]  job hash            KEYS[2]  processing zset     KEYS[3]  scheduled zset
-- KEYS[4]  finished zset       KEYS[5]  queue zset of the job's name
-- KEYS[6]  the index of the job's name and state before the change (for queued: the queue)
-- KEYS[7]  the index of its name and state after it: "<ns>:state:<state>:{<name>}", scored by
--          the update time (microseconds); for queued, the queue again (the job's place there is enough)
-- KEYS[8]  the name's per-minute completions hash   KEYS[9]  the name's run process times list
-- KEYS[10] the name's limits hash (see limit.lua): when the job leaves processing while a
--          concurrency limit holds jobs of its name in the queue, the wake channel is published,
--          so that waiting workers of every process claim the slot it frees
-- KEYS[11] the last deadline announced (see announce.lua)
-- ARGV[1]  expected version
-- ARGV[2]  job id
-- ARGV[3]  placement: "queue" | "scheduled" | "finished"
-- ARGV[4]  for "queue": the priority (0-9); else the score in ms: the due time ("scheduled")
--          or the purge time ("finished")
-- ARGV[5]  wake channel, published when the queue was empty before this job joined it
-- ARGV[6]  message published on each channel: the job as JSON
-- ARGV[7]  now in microseconds: the new index's score, and the minute a completion counts in
-- ARGV[8]  "success" or "fail" when the job completes (counted in KEYS[8]), else ""
-- ARGV[9]  the process time (s) of the run this change ends (kept in KEYS[9]), else ""
-- ARGV[10] how many process times KEYS[9] keeps
-- ARGV[11] the timers channel: a due time or a purge time is announced there
-- ARGV[12] n, the number of channels; ARGV[13 .. 12+n] the channels
-- ARGV[13+n]  the fields written to the job hash: a JSON array of field, value, field, value ...
--             a value null removes its field (see kickq/_layout.py)
-- A queued job's score is (9 - priority) * 1e14, plus one more than the last job queued with
-- that priority: the lowest is claimed first, so higher priorities first, and first in, first
-- out within one. A job that completes frees its unique key (the record's `unique_lock`).
-- KEYS[8] holds one field per minute of the hour (minute % 60): "<epoch minute>:<succeeded>:
-- <failed>", a field of an older minute starting again from zero: 60 fields at most.
-- Returns 1 when applied, 0 when the record changed meanwhile. Every key is checked before the
-- first write, so that an error leaves nothing changed.
local version = redis.call('HGET', KEYS[1], 'version')
if version ~= ARGV[1] then
  return 0
end
local TYPES = { 'zset', 'zset', 'zset', 'zset', 'zset', 'zset', 'hash', 'list', 'hash' }
for i = 2, 10 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'none' and kind ~= TYPES[i - 1] then
    return redis.error_reply('kickq: ' .. KEYS[i] .. ' is a ' .. kind .. ', not a ' .. TYPES[i - 1])
  end
end

local function next_score(queue, priority)
  local band = (9 - tonumber(priority)) * 100000000000000
  local last = redis.call('ZREVRANGEBYSCORE', queue, band + 99999999999999, band,
    'WITHSCORES', 'LIMIT', 0, 1)
  return last[2] and tonumber(last[2]) + 1 or band
end

local function count_completion(outcome)
  local minute = math.floor(tonumber(ARGV[7]) / 60000000)
  local slot = minute % 60
  local succeeded, failed = 0, 0
  local held = redis.call('HGET', KEYS[8], slot)
  if held then
    local at, s, f = string.match(held, '^(%d+):(%d+):(%d+)$')
    if tonumber(at) == minute then succeeded, failed = tonumber(s), tonumber(f) end
  end
  if outcome == 'success' then succeeded = succeeded + 1 else failed = failed + 1 end
  redis.call('HSET', KEYS[8], slot, minute .. ':' .. succeeded .. ':' .. failed)
end

local n = tonumber(ARGV[12])
local lock = redis.call('HGET', KEYS[1], 'unique_lock')
local fields = cjson.decode(ARGV[13 + n])
local set, removed = {}, {}
for i = 1, #fields, 2 do
  if fields[i + 1] == cjson.null then
    removed[#removed + 1] = fields[i]
  else
    set[#set + 1] = fields[i]
    set[#set + 1] = fields[i + 1]
  end
end
if #set > 0 then
  redis.call('HSET', KEYS[1], unpack(set))
end
if #removed > 0 then
  redis.call('HDEL', KEYS[1], unpack(removed))
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
local left_processing = redis.call('ZREM', KEYS[2], ARGV[2]) == 1
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[6], ARGV[2])
if ARGV[3] ~= 'queue' then
  redis.call('ZADD', KEYS[7], ARGV[7], ARGV[2])
end
if ARGV[3] ~= 'finished' then  -- a job requeued after it failed
  redis.call('ZREM', KEYS[4], ARGV[2])
end
if ARGV[8] ~= '' then
  count_completion(ARGV[8])
end
if ARGV[9] ~= '' then
  redis.call('LPUSH', KEYS[9], ARGV[9])
  redis.call('LTRIM', KEYS[9], 0, tonumber(ARGV[10]) - 1)
end

local woken = false
if ARGV[3] == 'queue' then
  local score = next_score(KEYS[5], ARGV[4])
  redis.call('ZADD', KEYS[5], score, ARGV[2])
  if redis.call('ZCARD', KEYS[5]) == 1 then
    redis.call('PUBLISH', ARGV[5], '')
    woken = true
  end
elseif ARGV[3] == 'scheduled' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
else
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
  if lock and redis.call('GET', lock) == ARGV[2] then
    redis.call('DEL', lock)
  end
end

if left_processing and not woken and redis.call('HEXISTS', KEYS[10], 'concurrency') == 1
    and redis.call('ZCARD', KEYS[5]) > 0 then
  redis.call('PUBLISH', ARGV[5], '')
end

if ARGV[3] ~= 'queue' then
  announce(KEYS[11], ARGV[11], tonumber(ARGV[4]), math.floor(tonumber(ARGV[7]) / 1000))
end
for i = 13, 12 + n do
  redis.call('PUBLISH', ARGV[i], ARGV[6])
end
return 1
