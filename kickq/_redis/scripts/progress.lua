-- progress: keep the progress a run reports (`kickq.progress()`) on its job's record, and tell
-- whoever listens, if the run still counts: the record is `processing` and its run_count is
-- that run's. A run that was ghosted or cancelled, or a job that was deleted, changes nothing.
-- The record's version is left as it is: progress is no state change, and the end of the run
-- (transition.lua, fenced on the version the claim left) must still apply after it. The value
-- is one field, never cut into pieces (see kickq/_redis/layout.py), which no other script
-- writes.
--
-- KEYS[1]  job: the job hash
-- ARGV[1]  run: the count of the run reporting
-- ARGV[2]  value: the value's JSON text, kept in the record's `progress` field
-- ARGV[3]  event: the event message: the job as JSON, with its progress
-- ARGV[4]  event_channel: the progress event channel
-- ARGV[5]  waiters: the start of the message for the job's waiters, "progress:" .. id .. ":",
--          to which this adds the report's number (the record's `progress_seq`, one more for
--          each report kept: a waiter that also read the record gives each value once, in
--          order), ":" and the value
-- ARGV[6]  done_channel: the job's done channel (`kickq.wait`), also given the waiters'
--          message; a hotjob's creator gets it on its reply channel (the record's `reply_to`)
-- Returns 1 when the value was kept and published, 0 when the run no longer counts (nothing
-- is written or published).
local read = redis.pcall('HMGET', KEYS[1], 'state', 'run_count', 'reply_to')
if read.err then return 0 end -- not a hash: no run of it counts
local state, run, reply_to = read[1], read[2], read[3]
if state ~= 'processing' or run ~= ARGV[1] then return 0 end
local number = redis.pcall('HINCRBY', KEYS[1], 'progress_seq', 1)
if type(number) ~= 'number' then  -- a damaged count starts again
  number = 1
  redis.call('HSET', KEYS[1], 'progress_seq', number)
end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[3])
local message = ARGV[5] .. number .. ':' .. ARGV[2]
redis.call('PUBLISH', ARGV[6], message)
if reply_to then redis.call('PUBLISH', reply_to, message) end
return 1
