-- due: what the timer has to do now, and when it next has something to do. Read-only.
-- The first of each set is read first: when nothing is due, that is all (three reads).
--
-- KEYS[1]  scheduled: the scheduled zset
-- KEYS[2]  processing: the processing zset
-- KEYS[3]  finished: the finished zset
-- ARGV[1]  now_ms: now in ms
-- ARGV[2]  limit: the most ids to return from each set
-- Returns { due scheduled ids, overdue processing ids, 1 if a purge is due else 0,
--           the lowest score of the three sets as a string, or false when all are empty }.
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local found, earliest = { {}, {}, 0 }, false
for i = 1, 3 do
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  local score = tonumber(first[2])
  if score and (not earliest or score < tonumber(earliest)) then
    earliest = first[2]
  end
  if score and score <= now then
    if i == 3 then
      found[3] = 1
    else
      found[i] = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1], 'LIMIT', 0, limit)
    end
  end
end
return { found[1], found[2], found[3], earliest }
