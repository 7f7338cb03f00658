-- purge: delete finished jobs whose purge time has come, publishing a delete event for each.
--
-- KEYS[1]  finished: the finished zset (score: purge time in ms)
-- ARGV[1]  now_ms: now in ms
-- ARGV[2]  limit: the most jobs to purge
-- ARGV[3]  job_prefix: the key of job <id> is ARGV[3] .. id
-- ARGV[4]  delete_channel: the delete event channel
-- ARGV[5]  index_prefix: a job leaves ARGV[5] .. state .. ':{' .. name .. '}' too
-- Returns the number of jobs purged.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  -- a key that is not a hash is due for purging all the same: never stop at it
  local is_hash = redis.call('TYPE', key).ok == 'hash'
  local name = is_hash and redis.call('HGET', key, 'name')
  local state = is_hash and redis.call('HGET', key, 'state')
  local lock = is_hash and redis.call('HGET', key, 'unique_lock')
  if lock and redis.pcall('GET', lock) == id then  -- a completed job frees it; just in case
    redis.call('DEL', lock)
  end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
  local index = name and state and ARGV[5] .. state .. ':{' .. name .. '}'
  if index and redis.call('TYPE', index).ok == 'zset' then
    redis.call('ZREM', index, id)
  end
  if name then
    redis.call('PUBLISH', ARGV[4], cjson.encode({ id = id, queue = name }))
  end
end
return #ids
