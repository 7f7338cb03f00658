-- delete: remove a job in any state so that it never runs (again).
--
-- KEYS[1]  job hash   KEYS[2]  scheduled zset   KEYS[3]  processing zset   KEYS[4]  finished zset
-- ARGV[1]  job id     ARGV[2]  delete event channel   ARGV[3]  the job's done channel
-- ARGV[4], ARGV[5]  what goes before and after a job name to make its queue's key
-- ARGV[6]  index key prefix: the index of a job in a state is ARGV[6] .. state .. ':{' .. name .. '}'
-- ARGV[7], ARGV[8]  what goes before a job name to make its limits key, and its wake channel
--          (both end with '}'): a running job deleted while a concurrency limit holds jobs of
--          its name in the queue frees a slot, and the workers of every process are woken
-- The job leaves its queue and its index too, and frees its unique key (the record's
-- `unique_lock`). A hotjob's creator is told on its reply channel (the record's `reply_to`):
-- "deleted:" .. id.
-- A damaged record (a key that is not a hash, a record without a name) is deleted all the same,
-- from the indexes known without its name; no delete event names it.
-- Returns 1 if the job existed, else 0.
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return 0 end
local name, state, lock, reply_to = false, 'none', false, false
if kind == 'hash' then
  local fields = redis.call('HMGET', KEYS[1], 'name', 'state', 'unique_lock', 'reply_to')
  name, state, lock, reply_to = fields[1], fields[2] or 'none', fields[3], fields[4]
end
local kinds = { zset = { KEYS[2], KEYS[3], KEYS[4] }, hash = {} }
local queue, index, limits
if name then
  queue = ARGV[4] .. name .. ARGV[5]
  index = ARGV[6] .. state .. ':{' .. name .. '}'
  limits = ARGV[7] .. name .. '}'
  kinds = { zset = { KEYS[2], KEYS[3], KEYS[4], queue, index }, hash = { limits } }
end
for expected, keys in pairs(kinds) do  -- before the first write
  for _, key in ipairs(keys) do
    local found = redis.call('TYPE', key).ok
    if found ~= 'none' and found ~= expected then
      return redis.error_reply('kickq: ' .. key .. ' is a ' .. found .. ', not a ' .. expected)
    end
  end
end
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
if name and state == 'processing' and redis.call('HEXISTS', limits, 'concurrency') == 1
    and redis.call('ZCARD', queue) > 0 then
  redis.call('PUBLISH', ARGV[8] .. name .. '}', '')
end
return 1
