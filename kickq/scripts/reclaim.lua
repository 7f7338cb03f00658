-- reclaim: what a claim whose reply was lost did, so that its worker runs what it started.
-- claim.lua records "<token> <id>:<run> ..." in the worker's claim key when it starts runs. If
-- the key holds this token, the runs it started that are still in progress (the same run of a
-- record still processing) are returned, to be run. If not, the claim has not reached Redis (or
-- took nothing): "void:<token>" is written in its place, so that the lost call takes nothing if
-- it arrives later, and nothing is returned.
--
-- KEYS[1]  the worker's claim key
-- ARGV[1]  the lost claim's token    ARGV[2]  job key prefix
-- ARGV[3]  how long (ms) the claim key is kept
-- Returns { claimed jobs, each { id, the flat field/value list of its record (HGETALL) } }.
local token = ARGV[1]
local held = redis.pcall('GET', KEYS[1])
if type(held) ~= 'string' or string.sub(held, 1, #token + 1) ~= token .. ' ' then
  if type(held) == 'string' and held == token then return { {} } end  -- it started no run
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], 'void:' .. token, 'PX', tonumber(ARGV[3]))
  return { {} }
end
local claimed = {}
for id, run in string.gmatch(string.sub(held, #token + 2), '(%x+):(%d+)') do
  local key = ARGV[2] .. id
  local fields = redis.pcall('HMGET', key, 'state', 'run_count')
  if not fields.err and fields[1] == 'processing' and fields[2] == run then
    claimed[#claimed + 1] = { id, redis.call('HGETALL', key) }
  end
end
return { claimed }
