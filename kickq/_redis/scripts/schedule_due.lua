-- schedule_due: the schedules whose next tick has come, and when the next one after them falls.
-- Read-only.
--
-- KEYS[1]  schedules: the schedules hash
-- KEYS[2]  schedule_times: the schedule_times zset
-- ARGV[1]  now_ms: now in ms
-- ARGV[2]  limit: the most schedules to return
-- Returns { key, tick, record, key, tick, record, ... for the due schedules, earliest first
--           (tick: the score as a string; record: the JSON, or false when it is missing),
--           the earliest tick after now as a string, or false when there is none }.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES',
  'LIMIT', 0, tonumber(ARGV[2]))
local found = {}
for i = 1, #due, 2 do
  found[#found + 1] = due[i]
  found[#found + 1] = due[i + 1]
  found[#found + 1] = redis.call('HGET', KEYS[1], due[i])
end
local later = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES',
  'LIMIT', 0, 1)
return { found, later[2] or false }
