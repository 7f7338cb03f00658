-- delete: remove a job in any state so that it never runs (again).
--
-- KEYS[1]  job: the job hash
-- KEYS[2]  scheduled: the scheduled zset
-- KEYS[3]  processing: the processing zset
-- KEYS[4]  finished: the finished zset
-- ARGV[1]  id: the job's id
-- ARGV[2]  delete_channel: the delete event channel
-- ARGV[3]  done_channel: the job's done channel
-- ARGV[4]  queue_before: what goes before a job name to make its queue's key
-- ARGV[5]  queue_after: what goes after it
-- ARGV[6]  index_prefix: the index of a job in a state is ARGV[6] .. state .. ':{' .. name .. '}'
-- ARGV[7]  limits_prefix: what goes before a job name to make its limits key (which ends with
--          '}'): a running job deleted while a concurrency limit holds jobs of its name in the
--          queue frees a slot, and the workers of every process are woken
-- ARGV[8]  wake_prefix: what goes before a job name to make its wake channel (which ends
--          with '}')
-- ARGV[9]  now_ms: now in ms
-- ARGV[10]  timers: the timers channel
-- A job deleted before it completed while deferred jobs await it (its record's field
-- `children`) tells them through the hand-over that it was deleted (`tell_children`, lib.lua).
-- The job leaves its queue and its index too, and frees its unique key (the record's
-- `unique_lock`). A hotjob's creator is told on its reply channel (the record's `reply_to`):
-- "deleted:" .. id.
-- A damaged record (a key that is not a hash, a record without a name) is deleted all the same,
-- from the indexes known without its name; no delete event names it.
-- Returns 1 if the job existed, else 0.
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return 0 end
local name, state, lock, reply_to, children = false, 'none', false, false, false
if kind == 'hash' then
  local fields = redis.call('HMGET', KEYS[1], 'name', 'state', 'unique_lock', 'reply_to',
    'children')
  name, state, lock, reply_to, children = fields[1], fields[2] or 'none', fields[3], fields[4],
    fields[5]
end
local prefix = nil  -- the partition's keys' start, when its children are told
if children and state ~= 'success' and state ~= 'fail' then
  prefix = prefix_of(KEYS[2], 'scheduled')
end
local queue, index, limits, err
if name then
  queue = ARGV[4] .. name .. ARGV[5]
  index = ARGV[6] .. state .. ':{' .. name .. '}'
  limits = ARGV[7] .. name .. '}'
  err = check_types(KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'zset', queue, 'zset',
    index, 'zset', limits, 'hash')
else
  err = check_types(KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'zset')
end
err = err or (prefix and check_types(prefix .. 'handover', 'hash'))
if err then return redis.error_reply(err) end  -- before the first write
if lock and redis.pcall('GET', lock) == ARGV[1] then
  redis.call('DEL', lock)
end
if name then
  redis.call('ZREM', queue, ARGV[1])
  redis.call('ZREM', index, ARGV[1])
end
redis.call('DEL', KEYS[1])
for i = 2, 4 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
if name then
  redis.call('PUBLISH', ARGV[2], cjson.encode({ id = ARGV[1], queue = name }))
end
redis.call('PUBLISH', ARGV[3], '')
if reply_to then
  redis.call('PUBLISH', reply_to, 'deleted:' .. ARGV[1])
end
if prefix then
  tell_children(prefix, ARGV[10], ARGV[1], '{"state":"deleted"}', tonumber(ARGV[9]))
end
if name and state == 'processing' and redis.call('HEXISTS', limits, 'concurrency') == 1
    and redis.call('ZCARD', queue) > 0 then
  redis.call('PUBLISH', ARGV[8] .. name .. '}', '')
end
return 1
