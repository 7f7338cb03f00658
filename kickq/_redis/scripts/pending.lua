-- pending: what is left to do for some job names, in one partition (kickq.testing.drain()).
-- Read-only. One call is one consistent snapshot: a job of these names is counted once, in the
-- state it is in at that instant, never missed between two reads.
--
-- KEYS[1]  scheduled: the scheduled zset (delayed, retry and ghost jobs, scored by when they
--          are due, ms)
-- KEYS[2]  processing: the processing zset (running jobs)
-- KEYS[3 ..]  queue: the queue zsets of the names, in the order of ARGV[3 ..]
-- ARGV[1]  now_ms: now in ms: a scheduled job is due when its score is at most this
-- ARGV[2]  job_prefix: the key of job <id> is ARGV[2] .. id
-- ARGV[3 ..]  name: the job names
-- Returns { jobs queued, scheduled jobs due by now, jobs processing }, of those names only;
-- with the due jobs, every hand-over notice of after= due or being carried out (see
-- kickq/_engine/dependencies.py: a parent's end, a deferred job's parents to tell), whatever
-- its jobs' names, since it may queue a job of these names.
-- A record that is gone or not a hash is not counted (the timer or a claim sets it aside).
local names = {}
for i = 3, #ARGV do names[ARGV[i]] = true end

local function ours(ids)
  local count = 0
  for _, id in ipairs(ids) do
    local name = redis.pcall('HGET', ARGV[2] .. id, 'name')
    if type(name) == 'string' and names[name] then count = count + 1 end
  end
  return count
end

local queued = 0
for i = 3, #KEYS do queued = queued + redis.call('ZCARD', KEYS[i]) end
local due = ours(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]))
-- a notice taken is due again HANDOVER_LEASE_MS later at most
local soon = tonumber(ARGV[1]) + HANDOVER_LEASE_MS
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', soon)) do
  if string.match(id, '^end:') or string.match(id, '^link:') then due = due + 1 end
end
local running = ours(redis.call('ZRANGE', KEYS[2], 0, -1))
return { queued, due, running }
