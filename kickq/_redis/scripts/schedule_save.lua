-- schedule_save: store a repeatable job, new or replacing the one with the same key. A schedule
-- saved again with the same spec (cron or interval, and time zone) keeps its next tick, so that
-- every process may save its schedules at start-up without re-firing or skipping a tick; a new
-- schedule, or one whose spec changed, starts at the given first tick.
--
-- KEYS[1]  schedules hash (key -> record JSON)   KEYS[2]  schedule_times zset (next tick, ms)
-- KEYS[3]  the last deadline announced (see announce.lua)
-- ARGV[1]  the schedule's key   ARGV[2]  its record (JSON, with a "spec" field)
-- ARGV[3]  its spec             ARGV[4]  its first tick in ms, used unless the spec is unchanged
-- ARGV[5]  the timers channel, where the next tick is announced   ARGV[6]  now in ms
-- Returns the schedule's next tick in ms, as a string.
for i = 1, 2 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  local wanted = i == 1 and 'hash' or 'zset'
  if kind ~= 'none' and kind ~= wanted then
    return redis.error_reply('kickq: ' .. KEYS[i] .. ' is a ' .. kind .. ', not a ' .. wanted)
  end
end
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
