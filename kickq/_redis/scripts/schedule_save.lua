-- schedule_save: store a repeatable job, new or replacing the one with the same key. A schedule
-- saved again with the same spec (cron or interval, and time zone) keeps its next tick, so that
-- every process may save its schedules at start-up without re-firing or skipping a tick; a new
-- schedule, or one whose spec changed, starts at the given first tick.
--
-- KEYS[1]  schedules: the schedules hash (key -> record JSON)
-- KEYS[2]  schedule_times: the schedule_times zset (next tick, ms)
-- KEYS[3]  next_due: the last deadline announced (see `announce` in lib.lua)
-- ARGV[1]  key: the schedule's key
-- ARGV[2]  record: its record (JSON, with a "spec" field)
-- ARGV[3]  spec: its spec
-- ARGV[4]  first_ms: its first tick in ms, used unless the spec is unchanged
-- ARGV[5]  timers: the timers channel, where the next tick is announced
-- ARGV[6]  now_ms: now in ms
-- Returns the schedule's next tick in ms, as a string.
local err = check_types(KEYS[1], 'hash', KEYS[2], 'zset')
if err then return redis.error_reply(err) end
local old = redis.call('HGET', KEYS[1], ARGV[1])
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
local same = false
if old and score then
  local ok, record = pcall(cjson.decode, old)
  same = ok and type(record) == 'table' and record.spec == ARGV[3]
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if same then
  return score
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
announce(KEYS[3], ARGV[5], tonumber(ARGV[4]), tonumber(ARGV[6]))
return ARGV[4]
