-- settle: the outcome of creates whose reply was lost (the connection failed or timed out after
-- the call was sent), decided once and for all. Redis runs one script at a time, so the lost
-- create.lua call either ran before this one (its job is saved) or has not run yet: then the
-- fence left at the job's key makes it refuse the job whenever it runs (create.lua checks the
-- key's type), and the job is never saved. Job ids are random and made by kickq: no other
-- create uses them.
--
-- KEYS     the job keys of the creates to settle (one partition)
-- ARGV[1]  how long a fence lasts (seconds)
-- Returns one result per key: 1 when the job is saved (a record exists), 0 when it is not
-- (a fence is there now).
local results = {}
for i, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key).ok
  if kind == 'none' then
    redis.call('SET', key, 'kickq:fence', 'EX', ARGV[1])
    results[i] = 0
  elseif kind == 'hash' then
    results[i] = 1
  else
    results[i] = 0  -- fenced already (a settle whose own reply was lost), or no job record
  end
end
return results
