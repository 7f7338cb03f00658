-- announce: put before a script that sets a deadline (a due time, a run's deadline, a purge
-- time, a schedule's tick), which calls announce(key, channel, due_ms, now_ms) after its writes.
-- Every process sleeps until the earliest deadline it knows of, so a deadline set by one
-- process must reach the others: it is published on the timers channel, unless an earlier one,
-- still to come, was published already (then every process ticks at that one and reads every
-- later deadline from Redis there). The key holds the last deadline published (ms); whatever
-- it holds, a SET replaces it, so a damaged key costs one extra message and never an error.
local function announce(key, channel, due_ms, now_ms)
  local told = tonumber(redis.pcall('GET', key))
  if told and told > now_ms and told <= due_ms then return end
  redis.call('SET', key, due_ms)
  redis.call('PUBLISH', channel, due_ms)
end

