-- limit: set or remove the limits of a job name, obeyed by every process from its next claim
-- (claim.lua reads them). The limits given replace the name's: one left out is removed. When
-- jobs of the name are queued, its workers are woken, to claim under the new limits.
--
-- KEYS[1]  limits: the name's limits hash
-- KEYS[2]  starts: the name's starts zset (runs started within the rate window; dropped with
--          the rate)
-- KEYS[3]  names: the set of job names
-- KEYS[4]  queue: the name's queue
-- ARGV[1]  name: the job name
-- ARGV[2]  rate_count: at most this many runs start ...
-- ARGV[3]  rate_ms: ... in any this many ms; both "" for no rate limit
-- ARGV[4]  concurrency: at most this many runs at once, or "" for no concurrency limit
-- ARGV[5]  wake: the name's wake channel
-- Returns 1 when the name has a limit now, 0 when it has none.
local err = check_types(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'set', KEYS[4], 'zset')
if err then return redis.error_reply(err) end
redis.call('DEL', KEYS[1])
local fields = {}
if ARGV[2] ~= '' then
  fields = { 'rate_count', ARGV[2], 'rate_ms', ARGV[3] }
else
  redis.call('DEL', KEYS[2])
end
if ARGV[4] ~= '' then
  fields[#fields + 1] = 'concurrency'
  fields[#fields + 1] = ARGV[4]
end
if #fields > 0 then
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('SADD', KEYS[3], ARGV[1])
end
if redis.call('ZCARD', KEYS[4]) > 0 then
  redis.call('PUBLISH', ARGV[5], '')
end
return #fields > 0 and 1 or 0
