-- limit: set or remove the limits of a job name, obeyed by every process from its next claim
-- (claim.lua reads them). The limits given replace the name's: one left out is removed. When
-- jobs of the name are queued, its workers are woken, to claim under the new limits.
--
-- KEYS[1]  the name's limits hash   KEYS[2]  the name's starts zset (runs started within the
--          rate window; dropped with the rate)   KEYS[3]  the set of job names
-- KEYS[4]  the name's queue
-- ARGV[1]  the job name
-- ARGV[2]  rate: at most this many runs start ...   ARGV[3]  ... in any this many ms; both ""
--          for no rate limit
-- ARGV[4]  concurrency: at most this many runs at once, or "" for no concurrency limit
-- ARGV[5]  the name's wake channel
-- Returns 1 when the name has a limit now, 0 when it has none.
local kinds = { 'hash', 'zset', 'set', 'zset' }
for i = 1, 4 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'none' and kind ~= kinds[i] then
    return redis.error_reply('kickq: ' .. KEYS[i] .. ' is a ' .. kind .. ', not a ' .. kinds[i])
  end
end
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
