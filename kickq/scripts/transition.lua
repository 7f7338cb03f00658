-- transition: apply one decided state change of an existing job, if its record is still the one
-- the decision was made from. The end of a run (success, failure, ghost) and the promotion of a
-- due job come through here; Python decides, this script only applies.
--
-- KEYS[1]  job hash            KEYS[2]  processing zset     KEYS[3]  scheduled zset
-- KEYS[4]  finished zset       KEYS[5]  queue zset of the job's name
-- ARGV[1]  expected version
-- ARGV[2]  job id
-- ARGV[3]  placement: "queue" | "scheduled" | "finished"
-- ARGV[4]  for "queue": the priority (0-9); else the score in ms: the due time ("scheduled")
--          or the purge time ("finished")
-- ARGV[5]  wake channel, published when the queue was empty before this job joined it
-- ARGV[6]  message published on each channel: the job as JSON
-- ARGV[7]  n, the number of channels; ARGV[8 .. 7+n] the channels
-- ARGV[8+n]  the fields written to the job hash: a JSON array of field, value, field, value ...
-- A queued job's score is (9 - priority) * 1e14, plus one more than the last job queued with
-- that priority: the lowest is claimed first, so higher priorities first, and first in, first
-- out within one. A job that completes frees its unique key (the record's `unique_lock`).
-- Returns 1 when applied, 0 when the record changed meanwhile. Every key is checked before the
-- first write, so that an error leaves nothing changed.
local version = redis.call('HGET', KEYS[1], 'version')
if version ~= ARGV[1] then
  return 0
end
for i = 2, 5 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'none' and kind ~= 'zset' then
    return redis.error_reply('kickq: ' .. KEYS[i] .. ' is a ' .. kind .. ', not a zset')
  end
end

local function next_score(queue, priority)
  local band = (9 - tonumber(priority)) * 100000000000000
  local last = redis.call('ZREVRANGEBYSCORE', queue, band + 99999999999999, band,
    'WITHSCORES', 'LIMIT', 0, 1)
  return last[2] and tonumber(last[2]) + 1 or band
end

local n = tonumber(ARGV[7])
local lock = redis.call('HGET', KEYS[1], 'unique_lock')
local fields = cjson.decode(ARGV[8 + n])
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])

if ARGV[3] == 'queue' then
  local score = next_score(KEYS[5], ARGV[4])
  redis.call('ZADD', KEYS[5], score, ARGV[2])
  if redis.call('ZCARD', KEYS[5]) == 1 then
    redis.call('PUBLISH', ARGV[5], '')
  end
elseif ARGV[3] == 'scheduled' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
else
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
  if lock and redis.call('GET', lock) == ARGV[2] then
    redis.call('DEL', lock)
  end
end

for i = 8, 7 + n do
  redis.call('PUBLISH', ARGV[i], ARGV[6])
end
return 1
