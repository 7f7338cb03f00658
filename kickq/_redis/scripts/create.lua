-- create: save new jobs of one name, each queued or delayed; a unique one only if no job that
-- is not complete holds its key. One call saves one job (create()) or a batch (create_many()):
-- the jobs of a batch share every field but their id, data and unique key.
--
-- KEYS[1]  scheduled zset      KEYS[2]  queue zset of the jobs' name
-- KEYS[3]  the index of the jobs' name's delayed jobs (see transition.lua)
-- KEYS[4]  the set of job names    KEYS[5]  the last deadline announced (see announce.lua)
-- KEYS[6]  the fenced zset: ids this call must not save (see settle.lua)
-- ARGV[1]  placement: "queue" | "scheduled"
-- ARGV[2]  for "queue": the priority (0-9; the score as in transition.lua); for "scheduled":
--          the due time in ms
-- ARGV[3]  wake channel, published when the queue was empty before these jobs joined it
-- ARGV[4]  job key prefix (the key of job <id> is ARGV[4] .. id)
-- ARGV[5]  now in microseconds: the delayed index's score
-- ARGV[6]  the timers channel: a delayed job's due time is announced there
-- ARGV[7]  n, the number of event channels; ARGV[8 .. 7+n] the channels
-- ARGV[8+n]  the shared fields: a JSON array of field, value, field, value ... (one argument
--            rather than dozens: packing each costs the client more than decoding costs Redis)
-- then 4 texts around a job's id, data and unique key in its event message, which lists them in
-- that order (kickq/_redis/record.py `new_jobs_event_texts` cuts it at those fields by name, and
-- checks the order): the message is
-- head .. '"' .. id .. '"' .. middle .. data .. before_key .. unique_key .. tail
-- then 4 arguments per job: id (hex digits), data (JSON), unique_key (JSON), the unique key's
-- lock ("" when the job is not unique: a string key holding the id of the job that holds it)
-- Returns one result per job: 1 when saved; 0 when a record with its id exists already;
-- -1 when its id is fenced (settle.lua found it missing after this call's reply was lost: the
-- caller was told nothing was stored); { holder id, its record (HGETALL) } when a job that is
-- not complete holds the unique key. Unless 1, nothing of that job is written. The index
-- written to is checked before the first write (a queue by the ZCARD read anyway), and each
-- job's keys before its own. The set of names is only a listing: a damaged one is left as it
-- is rather than fail a create.
local queued = ARGV[1] == 'queue'
local function not_a_zset(target)
  return redis.error_reply('kickq: ' .. target .. ' is a ' .. redis.call('TYPE', target).ok
    .. ', not a zset')
end
local queued_before = queued and redis.pcall('ZCARD', KEYS[2])
if queued and type(queued_before) ~= 'number' then return not_a_zset(KEYS[2]) end
for _, target in ipairs(queued and {} or { KEYS[1], KEYS[3] }) do
  local kind = redis.call('TYPE', target).ok
  if kind ~= 'none' and kind ~= 'zset' then return not_a_zset(target) end
end
local fenced_kind = redis.call('TYPE', KEYS[6]).ok
if fenced_kind ~= 'none' and fenced_kind ~= 'zset' then
  return redis.error_reply('kickq: ' .. KEYS[6] .. ' is a ' .. fenced_kind .. ', not a zset')
end
local fences = fenced_kind == 'zset'  -- creates whose reply was lost are rare: mostly none

local n = tonumber(ARGV[7])
local shared = cjson.decode(ARGV[8 + n])
local head, middle, before_key, tail = unpack(ARGV, 9 + n, 12 + n)
local first_job = 13 + n

local function next_score(queue, priority)  -- as in transition.lua
  local band = (9 - tonumber(priority)) * 100000000000000
  local last = redis.call('ZREVRANGEBYSCORE', queue, band + 99999999999999, band,
    'WITHSCORES', 'LIMIT', 0, 1)
  return last[2] and tonumber(last[2]) + 1 or band
end

-- adds field and value to `fields`, a value longer than 64 bytes (a listpack entry) as
-- pieces field, field~1, field~2 ... each cut before a UTF-8 continuation byte; one longer than
-- 2048 bytes whole (WHOLE_ABOVE in kickq/_layout.py)
local function lay_out(fields, field, value)
  local size, at, number = #value, 1, 0
  if size <= 64 or size > 2048 then
    fields[#fields + 1] = field
    fields[#fields + 1] = value
    return
  end
  while at <= size do
    local stop = math.min(at + 63, size)
    for _ = 1, 3 do  -- a UTF-8 character has at most three continuation bytes
      local byte = string.byte(value, stop + 1)
      if not byte or byte < 128 or byte >= 192 then break end
      stop = stop - 1
    end
    fields[#fields + 1] = number == 0 and field or (field .. '~' .. number)
    fields[#fields + 1] = string.sub(value, at, stop)
    at, number = stop + 1, number + 1
  end
end

-- HSET of a flat field/value list of any length: unpack() takes at most ~8,000 values
local function hset(key, flat)
  for i = 1, #flat, 1000 do
    redis.call('HSET', key, unpack(flat, i, math.min(i + 999, #flat)))
  end
end

-- nil when the job may be saved, else what to return for it
local function refused(key, lock, id)
  if fences and redis.call('ZSCORE', KEYS[6], id) then return -1 end
  if redis.call('EXISTS', key) == 1 then return 0 end
  if lock == '' then return nil end
  local kind = redis.call('TYPE', lock).ok
  if kind ~= 'none' and kind ~= 'string' then
    return redis.error_reply('kickq: ' .. lock .. ' is a ' .. kind .. ', not a string')
  end
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
    hset(key, fields)
    if queued then
      redis.call('ZADD', KEYS[2], score, id)
      score = score + 1  -- the jobs of one call share a priority: first in, first out
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
  announce(KEYS[5], ARGV[6], tonumber(ARGV[2]), math.floor(tonumber(ARGV[5]) / 1000))
end
if was_empty and saved > 0 then
  redis.call('PUBLISH', ARGV[3], '')
end
return results
