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
-- Returns 1 if the job existed, else 0.
local name = redis.call('HGET', KEYS[1], 'name')
if not name then return 0 end
local queue = ARGV[4] .. name .. ARGV[5]
local state = redis.call('HGET', KEYS[1], 'state') or 'none'
local index = ARGV[6] .. state .. ':{' .. name .. '}'
local limits = ARGV[7] .. name .. '}'
local kinds = { zset = { KEYS[2], KEYS[3], KEYS[4], queue, index }, hash = { limits } }
for expected, keys in pairs(kinds) do  -- before the first write
  for _, key in ipairs(keys) do
    local kind = redis.call('TYPE', key).ok
    if kind ~= 'none' and kind ~= expected then
      return redis.error_reply('kickq: ' .. key .. ' is a ' .. kind .. ', not a ' .. expected)
    end
  end
end
local lock, reply_to = unpack(redis.call('HMGET', KEYS[1], 'unique_lock', 'reply_to'))
if lock and redis.call('GET', lock) == ARGV[1] then
  redis.call('DEL', lock)
end
redis.call('ZREM', queue, ARGV[1])
redis.call('ZREM', index, ARGV[1])
redis.call('DEL', KEYS[1])
for i = 2, 4 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
redis.call('PUBLISH', ARGV[2], cjson.encode({ id = ARGV[1], queue = name }))
redis.call('PUBLISH', ARGV[3], '')
if reply_to then
  redis.call('PUBLISH', reply_to, 'deleted:' .. ARGV[1])
end
if state == 'processing' and redis.call('HEXISTS', limits, 'concurrency') == 1
    and redis.call('ZCARD', queue) > 0 then
  redis.call('PUBLISH', ARGV[8] .. name .. '}', '')
end
return 1
