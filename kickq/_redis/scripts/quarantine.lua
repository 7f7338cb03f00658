-- quarantine: move a job record that cannot be decoded out of the way, keeping it for a human.
--
-- KEYS[1]  job hash   KEYS[2]  damaged hash (its new name)   KEYS[3]  scheduled zset
-- KEYS[4]  processing zset   KEYS[5]  finished zset
-- ARGV[1]  job id     ARGV[2]  why it could not be decoded
-- ARGV[3]  the job's done channel: "damaged" is published there, so that waits end; and
--          "damaged:" .. id on the reply channel of a hotjob's creator (the record's `reply_to`)
-- ARGV[4]  index key prefix; ARGV[5], ARGV[6] what goes before and after a job name to make
--          its queue's key: when the record still names its job, the job leaves them all
-- Returns 1 if a record was moved, else 0.
local STATES = { 'delayed', 'processing', 'retry', 'ghost', 'success', 'fail' }
for i = 3, 5 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local name, reply_to = false, false
if redis.call('TYPE', KEYS[1]).ok == 'hash' then
  name, reply_to = unpack(redis.call('HMGET', KEYS[1], 'name', 'reply_to'))
end
if name then
  local indexes = { ARGV[5] .. name .. ARGV[6] }
  for _, state in ipairs(STATES) do
    indexes[#indexes + 1] = ARGV[4] .. state .. ':{' .. name .. '}'
  end
  for _, index in ipairs(indexes) do
    if redis.call('TYPE', index).ok == 'zset' then redis.call('ZREM', index, ARGV[1]) end
  end
end
redis.call('RENAME', KEYS[1], KEYS[2])
if redis.call('TYPE', KEYS[2]).ok == 'hash' then
  redis.call('HSET', KEYS[2], 'damaged_error', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], 'damaged')
if reply_to then
  redis.call('PUBLISH', reply_to, 'damaged:' .. ARGV[1])
end
return 1
