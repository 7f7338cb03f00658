-- delete: remove a job in any state so that it never runs (again).
-- Its id may stay in a queue list; claim drops ids whose record is gone.
--
-- KEYS[1]  job hash   KEYS[2]  scheduled zset   KEYS[3]  processing zset   KEYS[4]  finished zset
-- ARGV[1]  job id     ARGV[2]  delete event channel   ARGV[3]  the job's done channel
-- Returns 1 if the job existed, else 0.
local name = redis.call('HGET', KEYS[1], 'name')
if not name then return 0 end
for i = 2, 4 do  -- checked before the first write, so that an error leaves nothing changed
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'none' and kind ~= 'zset' then
    return redis.error_reply('kickq: ' .. KEYS[i] .. ' is a ' .. kind .. ', not a zset')
  end
end
redis.call('DEL', KEYS[1])
for i = 2, 4 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
redis.call('PUBLISH', ARGV[2], cjson.encode({ id = ARGV[1], queue = name }))
redis.call('PUBLISH', ARGV[3], '')
return 1
