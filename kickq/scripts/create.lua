-- create: save a new job, queued or delayed; for a unique job, only if no live job holds its key.
--
-- KEYS[1]  job hash            KEYS[2]  scheduled zset      KEYS[3]  queue zset of its name
-- KEYS[4]  (unique jobs only) the unique key's lock: a string holding the id of its job
-- ARGV[1]  job id
-- ARGV[2]  placement: "queue" | "scheduled"
-- ARGV[3]  for "queue": the priority (0-9; the score as in transition.lua); for "scheduled":
--          the due time in ms
-- ARGV[4]  wake channel, published when the queue was empty before this job joined it
-- ARGV[5]  message published on each channel: the job as JSON
-- ARGV[6]  job key prefix (the key of job <id> is ARGV[6] .. id), to look at a lock's holder
-- ARGV[7]  n, the number of channels; ARGV[8 .. 7+n] the channels
-- ARGV[8+n ..]  field, value pairs of the record
-- Returns 1 when saved; 0 when a record with this id exists already (a batch re-sent after a
-- dropped connection); { holder id, its record (HGETALL) } when a job that is not complete
-- holds the unique key: then nothing is written. Every key is checked before the first write.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
for i = 2, #KEYS do
  local kind, expected = redis.call('TYPE', KEYS[i]).ok, i == 4 and 'string' or 'zset'
  if kind ~= 'none' and kind ~= expected then
    return redis.error_reply('kickq: ' .. KEYS[i] .. ' is a ' .. kind .. ', not a ' .. expected)
  end
end

if KEYS[4] then
  local holder = redis.call('GET', KEYS[4])
  if holder and holder ~= ARGV[1] then
    local key = ARGV[6] .. holder
    if redis.call('TYPE', key).ok == 'hash' then
      local state = redis.call('HGET', key, 'state')
      if state and state ~= 'success' and state ~= 'fail' then
        return { holder, redis.call('HGETALL', key) }
      end
    end
  end
  redis.call('SET', KEYS[4], ARGV[1])
end

local function next_score(queue, priority)  -- as in transition.lua
  local band = (9 - tonumber(priority)) * 100000000000000
  local last = redis.call('ZREVRANGEBYSCORE', queue, band + 99999999999999, band,
    'WITHSCORES', 'LIMIT', 0, 1)
  return last[2] and tonumber(last[2]) + 1 or band
end

local n = tonumber(ARGV[7])
redis.call('HSET', KEYS[1], unpack(ARGV, 8 + n))
redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[2] == 'queue' then
  local score = next_score(KEYS[3], ARGV[3])
  redis.call('ZADD', KEYS[3], score, ARGV[1])
  if redis.call('ZCARD', KEYS[3]) == 1 then
    redis.call('PUBLISH', ARGV[4], '')
  end
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
for i = 8, 7 + n do
  redis.call('PUBLISH', ARGV[i], ARGV[5])
end
return 1
