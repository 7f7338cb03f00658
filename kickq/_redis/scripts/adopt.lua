-- adopt: tell parents, jobs of one partition, of a deferred job that awaits them (its
-- after=), and read how those that are complete ended: in one step with each parent's state, so
-- that a parent either ends after this (and tells its children, this one among them: see
-- `tell_children` in lib.lua) or ended before (and this reads how).
--
-- KEYS[1 ..]  job, children: two per parent: its job hash, its set of children
-- ARGV[1]  child: the deferred job's id
-- Returns two per parent: "pending", "" when it is not complete (the child joins its set of
-- children, and its record's field `children` says it has some); "success" and its result
-- (JSON); "fail", "" when it failed for good (or was cancelled); "deleted", "" when it has no
-- record (it was deleted or purged), or a key that is not a hash. The children sets are checked
-- before the first write.
for i = 2, #KEYS, 2 do
  local err = check_type(KEYS[i], 'set')
  if err then return redis.error_reply(err) end
end
local told = {}
for i = 1, #KEYS, 2 do
  local state = redis.call('TYPE', KEYS[i]).ok == 'hash' and redis.call('HGET', KEYS[i], 'state')
  if not state then
    told[#told + 1], told[#told + 2] = 'deleted', ''
  elseif state == 'success' then
    told[#told + 1], told[#told + 2] = 'success', whole(KEYS[i], 'result') or 'null'
  elseif state == 'fail' then
    told[#told + 1], told[#told + 2] = 'fail', ''
  else
    redis.call('SADD', KEYS[i + 1], ARGV[1])
    redis.call('HSET', KEYS[i], 'children', '1')
    told[#told + 1], told[#told + 2] = 'pending', ''
  end
end
return told
