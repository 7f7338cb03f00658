-- quarantine: move a job record that cannot be decoded out of the way, keeping it for a human.
--
-- KEYS[1]  job hash   KEYS[2]  damaged hash (its new name)   KEYS[3]  scheduled zset
-- KEYS[4]  processing zset   KEYS[5]  finished zset
-- ARGV[1]  job id     ARGV[2]  why it could not be decoded
-- ARGV[3]  the job's done channel: "damaged" is published there, so that waits end
-- Returns 1 if a record was moved, else 0.
for i = 3, 5 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
if redis.call('TYPE', KEYS[2]).ok == 'hash' then
  redis.call('HSET', KEYS[2], 'damaged_error', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], 'damaged')
return 1
