-- reclaim: what a claim whose reply was lost did, so that its worker runs what it started.
-- claim.lua writes its token in the record of each run it starts (field `claim`) and scores the
-- run in its name's processing index by the claim's now (µs): the runs of that claim still in
-- progress are found there and returned, to be run. If there are none, the claim has not reached
-- Redis (or took nothing): "void:<token>" is written to the worker's claim key, so that the lost
-- call takes nothing if it arrives later.
--
-- KEYS[1]  claim_key: the worker's claim key
-- KEYS[2 ..]  processing_index: the processing index of each name the lost claim asked for
-- ARGV[1]  token: the lost claim's token
-- ARGV[2]  job_prefix: the key of job <id> is ARGV[2] .. id
-- ARGV[3]  now_us: the lost claim's now in microseconds
-- ARGV[4]  given_up_ms: how long (ms) a claim given up is remembered
-- Returns { claimed jobs, each { id, the flat field/value list of its record (HGETALL) } }.
local claimed = {}
for i = 2, #KEYS do
  local ids = redis.pcall('ZRANGEBYSCORE', KEYS[i], ARGV[3], ARGV[3])
  if not ids.err then
    for _, id in ipairs(ids) do
      local key = ARGV[2] .. id
      local fields = redis.pcall('HMGET', key, 'state', 'claim')
      if not fields.err and fields[1] == 'processing' and fields[2] == ARGV[1] then
        claimed[#claimed + 1] = { id, redis.call('HGETALL', key) }
      end
    end
  end
end
if #claimed == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], 'void:' .. ARGV[1], 'PX', tonumber(ARGV[4]))
end
return { claimed }
