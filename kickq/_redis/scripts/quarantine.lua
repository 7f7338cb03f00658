-- quarantine: move a job record that cannot be decoded out of the way, keeping it for a human.
--
-- KEYS[1]  job: the job hash
-- KEYS[2]  damaged: the damaged hash (its new name)
-- KEYS[3]  scheduled: the scheduled zset
-- KEYS[4]  processing: the processing zset
-- KEYS[5]  finished: the finished zset
-- ARGV[1]  id: the job's id
-- ARGV[2]  why: why it could not be decoded
-- ARGV[3]  done_channel: the job's done channel: "damaged" is published there, so that waits
--          end; and "damaged:" .. id on the reply channel of a hotjob's creator (the record's
--          `reply_to`)
-- ARGV[4]  index_prefix: the index of a job in a state is ARGV[4] .. state .. ':{' .. name .. '}'
-- ARGV[5]  queue_before: what goes before a job name to make its queue's key
-- ARGV[6]  queue_after: what goes after it. When the record still names its job, the job
--          leaves its queue and every index
-- ARGV[7]  now_ms: now in ms
-- ARGV[8]  timers: the timers channel
-- A record moved aside before it completed while deferred jobs await it (its field `children`)
-- tells them that it was deleted (`tell_children`, lib.lua).
-- Returns 1 if a record was moved, else 0.
for i = 3, 5 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local name, reply_to, children, state = false, false, false, false
if redis.call('TYPE', KEYS[1]).ok == 'hash' then
  name, reply_to, children, state = unpack(redis.call('HMGET', KEYS[1], 'name', 'reply_to',
    'children', 'state'))
end
local prefix = nil  -- the partition's keys' start, when its children are told
if children and state ~= 'success' and state ~= 'fail' then
  prefix = prefix_of(KEYS[3], 'scheduled')
  if check_type(prefix .. 'handover', 'hash') then prefix = nil end  -- damaged: never fail here
end
if name then
  local indexes = { ARGV[5] .. name .. ARGV[6] }
  for _, state in ipairs(SEEN_STATES) do
    if state ~= 'queued' then  -- its index is the queue
      indexes[#indexes + 1] = ARGV[4] .. state .. ':{' .. name .. '}'
    end
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
if prefix then
  tell_children(prefix, ARGV[8], ARGV[1], '{"state":"deleted"}', tonumber(ARGV[7]))
end
return 1
