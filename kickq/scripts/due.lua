-- due: what the sweeper has to do now, and when it next has something to do. Read-only.
--
-- KEYS[1]  scheduled zset    KEYS[2]  processing zset    KEYS[3]  finished zset
-- ARGV[1]  now in ms         ARGV[2]  the most ids to return from each set
-- Returns { due scheduled ids, overdue processing ids, 1 if a purge is due else 0,
--           the lowest score of the three sets as a string, or false when all are empty }.
local now, limit = ARGV[1], tonumber(ARGV[2])
local scheduled = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local overdue = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
local purge = #redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1)
local earliest = false
for i = 1, 3 do
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if first[2] and (not earliest or tonumber(first[2]) < tonumber(earliest)) then
    earliest = first[2]
  end
end
return { scheduled, overdue, purge, earliest }
