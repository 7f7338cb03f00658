-- schedule_advance: move a schedule on from the tick it was due at to its next tick, if it is
-- still at that tick with that spec. The job of the tick is created before (with an id made
-- from the schedule's key and the tick, so that creating it twice stores one job): of the
-- processes that find the same tick due, each creates the same job, and the first here moves
-- the schedule on; the others change nothing.
--
-- KEYS[1]  schedules: the schedules hash
-- KEYS[2]  schedule_times: the schedule_times zset
-- ARGV[1]  key: the schedule's key
-- ARGV[2]  due_ms: the tick it was due at (ms)
-- ARGV[3]  next_ms: its next tick (ms)
-- ARGV[4]  spec: the spec the next tick was computed with ("" for a record that could not be
--          read: then only the tick is compared)
-- Returns 1 if it moved the schedule on; 0 if another process did, or the schedule was
-- replaced or removed meanwhile.
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[4] ~= '' then
  local ok, record = pcall(cjson.decode, redis.call('HGET', KEYS[1], ARGV[1]) or '')
  if not ok or type(record) ~= 'table' or record.spec ~= ARGV[4] then
    return 0
  end
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
