-- handover_take: take hand-over notices of one partition that are due (see
-- kickq/_engine/dependencies.py): each is moved `lease_ms` later, so that no other process
-- takes it meanwhile; a process that dies holding it leaves it to be taken again then.
--
-- KEYS[1]  scheduled: the scheduled zset, where the notices are due
-- KEYS[2]  handover: the handover hash: how each parent told of by an "end:<id>" notice ended
-- ARGV[1]  now_ms: now in ms: a notice is due when its score is at most this
-- ARGV[2]  lease_ms: how long a taken notice is left to its taker
-- ARGV[3]  children_prefix: the set of children of job <id> is ARGV[3] .. id
-- ARGV[4 ..]  notice: the notices to take
-- Returns one entry per notice taken (one no longer due, or gone, is not): { notice, how its
-- parent ended (JSON) or "" for a "link:<id>" notice, the parent's children }.
local now = tonumber(ARGV[1])
local taken = {}
for i = 4, #ARGV do
  local notice = ARGV[i]
  local score = tonumber(redis.call('ZSCORE', KEYS[1], notice))
  if score and score <= now then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), notice)
    local told, children = '', {}
    local parent = string.match(notice, '^end:(.*)$')
    if parent then
      told = redis.pcall('HGET', KEYS[2], notice)
      if type(told) ~= 'string' then told = '{"state":"deleted"}' end
      children = redis.pcall('SMEMBERS', ARGV[3] .. parent)
      if children.err then children = {} end
    end
    taken[#taken + 1] = { notice, told, children }
  end
end
return taken
