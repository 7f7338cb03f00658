-- transition: apply one decided state change of a job, if its record is still the one the
-- decision was made from. Creation, the end of a run (success, failure, ghost) and the
-- promotion of a due job all come through here; Python decides, this script only applies.
--
-- KEYS[1]  job hash            KEYS[2]  processing zset     KEYS[3]  scheduled zset
-- KEYS[4]  finished zset       KEYS[5]  queue list of the job's name
-- ARGV[1]  expected version; "0" means the record must not exist yet (creation)
-- ARGV[2]  job id
-- ARGV[3]  placement: "queue" | "scheduled" | "finished"
-- ARGV[4]  score in ms for "scheduled" (due time) and "finished" (purge time)
-- ARGV[5]  wake channel, published when the queue was empty before this push
-- ARGV[6]  message published on each channel: the job as JSON
-- ARGV[7]  n, the number of channels; ARGV[8 .. 7+n] the channels
-- ARGV[8+n ..]  field, value pairs written to the job hash
-- Returns 1 when applied, 0 when the record changed meanwhile (or already exists). Every key is
-- checked before the first write, so that an error leaves nothing changed.
local version = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '0' then
  if version then return 0 end
elseif version ~= ARGV[1] then
  return 0
end
for i = 2, 5 do
  local kind, expected = redis.call('TYPE', KEYS[i]).ok, i == 5 and 'list' or 'zset'
  if kind ~= 'none' and kind ~= expected then
    return redis.error_reply('kickq: ' .. KEYS[i] .. ' is a ' .. kind .. ', not a ' .. expected)
  end
end

local n = tonumber(ARGV[7])
redis.call('HSET', KEYS[1], unpack(ARGV, 8 + n))
redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[1] ~= '0' then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
end

if ARGV[3] == 'queue' then
  if redis.call('LPUSH', KEYS[5], ARGV[2]) == 1 then
    redis.call('PUBLISH', ARGV[5], '')
  end
elseif ARGV[3] == 'scheduled' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
else
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
end

for i = 8, 7 + n do
  redis.call('PUBLISH', ARGV[i], ARGV[6])
end
return 1
