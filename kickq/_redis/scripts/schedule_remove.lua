-- schedule_remove: delete a repeatable job; no tick of it is acted on afterwards.
--
-- KEYS[1]  schedules: the schedules hash
-- KEYS[2]  schedule_times: the schedule_times zset
-- ARGV[1]  key: the schedule's key
-- Returns 1 if it existed, else 0.
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
removed = removed + redis.call('ZREM', KEYS[2], ARGV[1])
return removed > 0 and 1 or 0
