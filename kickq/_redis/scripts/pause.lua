-- pause: pause or resume a job name in every process. A paused name starts no new run (claim.lua
-- checks the set); creating, promoting and running jobs go on. Resuming wakes the workers of the
-- name when jobs are waiting in its queue.
--
-- KEYS[1]  paused: the set of paused names
-- KEYS[2]  names: the set of job names
-- KEYS[3]  queue: the name's queue
-- ARGV[1]  action: "pause" | "resume"
-- ARGV[2]  name: the job name
-- ARGV[3]  wake: the name's wake channel, published on resume when its queue is not empty
-- Returns 1 if the name's state changed, 0 if it already was paused (resumed).
local err = check_types(KEYS[1], 'set', KEYS[2], 'set', KEYS[3], 'zset')
if err then return redis.error_reply(err) end
if ARGV[1] == 'pause' then
  redis.call('SADD', KEYS[2], ARGV[2])
  return redis.call('SADD', KEYS[1], ARGV[2])
end
local changed = redis.call('SREM', KEYS[1], ARGV[2])
if changed == 1 and redis.call('ZCARD', KEYS[3]) > 0 then
  redis.call('PUBLISH', ARGV[3], '')
end
return changed
