-- handover_done: remove a hand-over notice every child has heard (see
-- kickq/_engine/dependencies.py), with what it told: for "end:<id>", how the parent ended and
-- the children that heard it (a child that joined the set since stays).
--
-- KEYS[1]  scheduled: the scheduled zset
-- KEYS[2]  handover: the handover hash
-- KEYS[3]  children: the set of children of the notice's parent (for "link:<id>", unused)
-- ARGV[1]  notice: the notice
-- ARGV[2 ..]  child: the children that heard it
-- Returns 1.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.pcall('HDEL', KEYS[2], ARGV[1])
if #ARGV > 1 and not check_type(KEYS[3], 'set') then
  local heard = {}
  for i = 2, #ARGV do heard[#heard + 1] = ARGV[i] end
  batched('SREM', KEYS[3], heard)
end
return 1
