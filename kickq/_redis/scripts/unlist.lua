-- unlist: drop ids from the index of due jobs (scheduled or processing) when their record is
-- gone, or holds a state that index does not hold: a stale copy, which would be due for ever
-- (the timer would find it due at every tick, and never act on it). The timer sends it for the
-- due ids it could not act on; each is checked again here, so that a job whose record changed
-- meanwhile keeps its place. A damaged record (no state or an unknown one, a key that is not a
-- hash) is left to its readers, which set it aside.
--
-- KEYS[1]  index: the index (zset)
-- ARGV[1]  job_prefix: the key of job <id> is ARGV[1] .. id
-- ARGV[2]  held: the states the index holds, each between spaces: " delayed retry ghost "
-- ARGV[3 ..]  id: the ids
-- Returns the ids dropped.
local seen = {}  -- a state a job can be in
for _, state in ipairs(SEEN_STATES) do seen[state] = true end
local dropped = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  if redis.call('ZSCORE', KEYS[1], id) then
    local state = redis.pcall('HGET', key, 'state')
    local stale
    if state == false then  -- no record, or one without a state (damaged: left to its readers)
      stale = redis.call('EXISTS', key) == 0
    else  -- a known state it does not hold (else damaged, or a key that is not a hash)
      stale = seen[state] and not string.find(ARGV[2], ' ' .. state .. ' ', 1, true)
    end
    if stale then
      redis.call('ZREM', KEYS[1], id)
      dropped[#dropped + 1] = id
    end
  end
end
return dropped
