-- pause: pause or resume a job name in every process. A paused name starts no new run (claim.lua
-- checks the set); creating, promoting and running jobs go on. Resuming wakes the workers of the
-- name when jobs are waiting in its queue.
--
-- KEYS[1]  the set of paused names   KEYS[2]  the set of job names   KEYS[3]  the name's queue
-- ARGV[1]  "pause" | "resume"        ARGV[2]  the job name
-- ARGV[3]  the name's wake channel, published on resume when its queue is not empty
-- Returns 1 if the name's state changed, 0 if it already was paused (resumed).
local kinds = { 'set', 'set', 'zset' }
for i = 1, 3 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'none' and kind ~= kinds[i] then
    return redis.error_reply('kickq: ' .. KEYS[i] .. ' is a ' .. kind .. ', not a ' .. kinds[i])
  end
end
if ARGV[1] == 'pause' then
  redis.call('SADD', KEYS[2], ARGV[2])
  return redis.call('SADD', KEYS[1], ARGV[2])
end
local changed = redis.call('SREM', KEYS[1], ARGV[2])
if changed == 1 and redis.call('ZCARD', KEYS[3]) > 0 then
  redis.call('PUBLISH', ARGV[3], '')
end
return changed
