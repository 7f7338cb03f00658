-- settle: the outcome of creates whose reply was lost (the connection failed or timed out after
-- the call was sent), decided once and for all. Redis runs one script at a time, so the lost
-- create.lua call either ran before this one (its job is saved) or has not run yet: then the
-- job's id joins the fenced set, which create.lua checks, and the job is never saved. Job ids
-- are random and made by kickq: no other create uses them.
--
-- KEYS[1]  fenced: the fenced zset: ids scored by when their fence ends (ms)
-- KEYS[2 ..]  job: the job keys of the creates to settle (one partition)
-- ARGV[1]  now_ms: now (ms)
-- ARGV[2]  fence_ms: how long a fence lasts (ms)
-- ARGV[3 ..]  id: the jobs' ids, in the order of their keys
-- Returns one result per job: 1 when it is saved (its record exists), 0 when it is not (it is
-- fenced now).
local err = check_type(KEYS[1], 'zset')
if err then return redis.error_reply(err) end
local now, lasts = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)  -- fences past their time
local results, fenced = {}, false
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    results[#results + 1] = 1
  else
    redis.call('ZADD', KEYS[1], now + lasts, ARGV[i + 1])
    results[#results + 1] = 0
    fenced = true
  end
end
if fenced then
  redis.call('PEXPIRE', KEYS[1], lasts)  -- the newest fence is the last to end
end
return results
