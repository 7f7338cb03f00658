-- create: save new jobs of one name, each queued, delayed or deferred; a unique one only if no
-- job that is not complete holds its key. One call saves one job (create()) or a batch (create_many()):
-- the jobs of a batch share every field but their id, data and unique key.
--
-- KEYS[1]  scheduled: the scheduled zset
-- KEYS[2]  queue: the queue zset of the jobs' name
-- KEYS[3]  delayed_index: the index of the jobs' name's delayed jobs (see transition.lua); for
--          "deferred", of its deferred jobs
-- KEYS[4]  names: the set of job names
-- KEYS[5]  next_due: the last deadline announced (see `announce` in lib.lua)
-- KEYS[6]  fenced: the fenced zset: ids this call must not save (see settle.lua)
-- ARGV[1]  placement: "queue" | "scheduled" | "deferred" (jobs created with after= that await
--          a parent: each gets a hand-over notice "link:<id>" in the scheduled zset, due at
--          once, which tells its parents of it: see kickq/_engine/dependencies.py)
-- ARGV[2]  score: for "queue", the priority (0-9; the score is `next_score`'s, lib.lua); for
--          "scheduled", the due time in ms; for "deferred", unused
-- ARGV[3]  wake: the wake channel, published when the queue was empty before these jobs
--          joined it
-- ARGV[4]  job_prefix: the key of job <id> is ARGV[4] .. id
-- ARGV[5]  now_us: now in microseconds: the delayed index's score
-- ARGV[6]  timers: the timers channel: a delayed job's due time is announced there
-- ARGV[7]  n: the number of event channels
-- ARGV[8 .. 7+n]  channels: the event channels
-- ARGV[8+n]  shared: the shared fields, a JSON array of field, value, field, value ... (one
--          argument rather than dozens: packing each costs the client more than decoding
--          costs Redis)
-- ARGV[9+n]  head: the first of 4 texts around a job's id, data and unique key in its event
--          message, which lists them in that order (kickq/_redis/record.py
--          `new_jobs_event_texts` cuts it at those fields by name, and checks the order): the
--          message is head .. '"' .. id .. '"' .. middle .. data .. before_key .. unique_key .. tail
-- ARGV[10+n]  middle: the second
-- ARGV[11+n]  before_key: the third
-- ARGV[12+n]  tail: the fourth
-- ARGV[13+n]  traces: "" (tracing off, or no span current at the create), or a JSON array of
--          one text per job: the W3C trace context of its producer span (its traceparent, then
--          a space and its tracestate if it has one), kept in its field `trace` (see
--          kickq/_engine/tracing.py)
-- ARGV[14+n ..]  id, data, unique_key, lock: 4 per job: its id (hex digits), its data (JSON),
--          its unique_key (JSON), the unique key's lock ("" when the job is not unique: a
--          string key holding the id of the job that holds it)
-- Returns one result per job: 1 when saved; 0 when a record with its id exists already;
-- -1 when its id is fenced (settle.lua found it missing after this call's reply was lost: the
-- caller was told nothing was stored); { holder id, its record (HGETALL) } when a job that is
-- not complete holds the unique key. Unless 1, nothing of that job is written. The index
-- written to is checked before the first write (a queue by the ZCARD read anyway), and each
-- job's keys before its own. The set of names is only a listing: a damaged one is left as it
-- is rather than fail a create.
local queued = ARGV[1] == 'queue'
local deferred = ARGV[1] == 'deferred'
local now_ms = math.floor(tonumber(ARGV[5]) / 1000)
local queued_before, err
if queued then
  queued_before, err = typed_read('zset', 'ZCARD', KEYS[2])
else
  err = check_types(KEYS[1], 'zset', KEYS[3], 'zset')
end
if err then return redis.error_reply(err) end
local fenced_kind
err, fenced_kind = check_type(KEYS[6], 'zset')
if err then return redis.error_reply(err) end
local fences = fenced_kind == 'zset'  -- creates whose reply was lost are rare: mostly none

local n = tonumber(ARGV[7])
local shared = cjson.decode(ARGV[8 + n])
local head, middle, before_key, tail = unpack(ARGV, 9 + n, 12 + n)
local traces = ARGV[13 + n] ~= '' and cjson.decode(ARGV[13 + n]) or nil
local first_job = 14 + n

-- nil when the job may be saved, else what to return for it
local function refused(key, lock, id)
  if fences and redis.call('ZSCORE', KEYS[6], id) then return -1 end
  if redis.call('EXISTS', key) == 1 then return 0 end
  if lock == '' then return nil end
  local bad = check_type(lock, 'string')
  if bad then return redis.error_reply(bad) end
  local holder = redis.call('GET', lock)
  if not holder or holder == id then return nil end
  local held = ARGV[4] .. holder
  if redis.call('TYPE', held).ok ~= 'hash' then return nil end
  local state = redis.call('HGET', held, 'state')
  if state and state ~= 'success' and state ~= 'fail' then
    return { holder, redis.call('HGETALL', held) }
  end
  return nil
end

local was_empty = queued and queued_before == 0
local score = queued and next_score(KEYS[2], ARGV[2]) or tonumber(ARGV[2])
local results, saved = {}, 0
for j = first_job, #ARGV, 4 do
  local id, data, unique_key, lock = unpack(ARGV, j, j + 3)
  local key = ARGV[4] .. id
  local answer = refused(key, lock, id)
  if answer then
    results[#results + 1] = answer
  else
    if lock ~= '' then
      redis.call('SET', lock, id)
      redis.call('HSET', key, 'unique_lock', lock)
    end
    local fields = { 'version', 1 }
    for i = 1, #shared do fields[i + 2] = shared[i] end
    lay_out(fields, 'data', data)
    if unique_key ~= 'null' then lay_out(fields, 'unique_key', unique_key) end
    if traces then
      -- whole, never in pieces: a transition rewrites only the fields it knows
      fields[#fields + 1] = 'trace'
      fields[#fields + 1] = traces[(j - first_job) / 4 + 1]
    end
    batched('HSET', key, fields)
    if queued then
      redis.call('ZADD', KEYS[2], score, id)
      score = score + 1  -- the jobs of one call share a priority: first in, first out
    elseif deferred then
      redis.call('ZADD', KEYS[3], ARGV[5], id)
      redis.call('ZADD', KEYS[1], now_ms, 'link:' .. id)
    else
      redis.call('ZADD', KEYS[1], score, id)
      redis.call('ZADD', KEYS[3], ARGV[5], id)
    end
    local message = head .. '"' .. id .. '"' .. middle .. data .. before_key .. unique_key .. tail
    for i = 8, 7 + n do
      redis.call('PUBLISH', ARGV[i], message)
    end
    results[#results + 1] = 1
    saved = saved + 1
  end
end
if saved > 0 then
  for i = 1, #shared, 2 do
    if shared[i] == 'name' then redis.pcall('SADD', KEYS[4], shared[i + 1]) end
  end
end
if saved > 0 and not queued then
  announce(KEYS[5], ARGV[6], deferred and now_ms or tonumber(ARGV[2]), now_ms)
end
if was_empty and saved > 0 then
  redis.call('PUBLISH', ARGV[3], '')
end
return results
