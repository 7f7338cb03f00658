-- claim: take up to N queued jobs for a worker and start a run of each.
-- Ids of deleted jobs left in a queue are dropped here (delete does not scan queues).
--
-- KEYS[1]     processing zset (score: the run's deadline in ms)
-- KEYS[2 ..]  queue lists, one per job name the worker serves, in the order to take from
-- ARGV[1]  job key prefix (the key of job <id> is ARGV[1] .. id)
-- ARGV[2]  now in ms
-- ARGV[3]  now as a JSON string (ISO-8601), stored as update_time and run_start
-- ARGV[4]  the most jobs to claim
-- ARGV[5]  damaged key prefix: a job key that is not a hash, or has no state, is renamed to
--          ARGV[5] .. id
-- Returns { claimed jobs, each { id, the flat field/value list of its record (HGETALL) };
--           ids whose key was not a hash and was renamed aside }.
local claimed, damaged = {}, {}
local want = tonumber(ARGV[4])
local now = tonumber(ARGV[2])
for q = 2, #KEYS do
  while #claimed < want do
    local id = redis.call('RPOP', KEYS[q])
    if not id then break end
    local key = ARGV[1] .. id
    local kind = redis.call('TYPE', key).ok
    local state = kind == 'hash' and redis.call('HGET', key, 'state')
    if kind ~= 'none' and not state then  -- not a hash, or a hash with no state
      redis.call('RENAME', key, ARGV[5] .. id)
      if kind == 'hash' then
        redis.call('HSET', ARGV[5] .. id, 'damaged_error', 'the record has no state')
      end
      damaged[#damaged + 1] = id
    elseif state == 'queued' then
      local timeout = tonumber(redis.call('HGET', key, 'process_timeout')) or 10
      redis.call('HSET', key, 'state', 'processing', 'update_time', ARGV[3], 'run_start', ARGV[3])
      redis.call('HINCRBY', key, 'run_count', 1)
      redis.call('HINCRBY', key, 'version', 1)
      redis.call('ZADD', KEYS[1], now + math.floor(timeout * 1000), id)
      claimed[#claimed + 1] = { id, redis.call('HGETALL', key) }
    end
  end
end
return { claimed, damaged }
