-- transition: apply one decided state change of an existing job, if its record is still the one
-- the decision was made from. The end of a run (success, failure, ghost, a run handed back by a
-- stopping worker) and the promotion of a due job come through here; Python decides, this script only applies.
--
-- KEYS[1]  job: the job hash
-- KEYS[2]  leaves: the sorted set the job leaves, by the state it was decided from:
--          processing, scheduled (delayed, retry, ghost), finished, its name's queue (queued),
--          or its name's deferred index (deferred)
-- KEYS[3]  joins: the sorted set it joins: scheduled, finished, or its name's queue
-- KEYS[4]  queue: the queue zset of the job's name
-- KEYS[5]  index_before: the index of the job's name and state before the change (for
--          queued: the queue)
-- KEYS[6]  index_after: the index of its name and state after it:
--          "<ns>:state:<state>:{<name>}", scored by the update time (microseconds); for
--          queued, the queue again (the job's place there is enough)
-- KEYS[7]  minutes: the name's per-minute completions hash
-- KEYS[8]  times: the name's run process times list
-- KEYS[9]  limits: the name's limits hash (see limit.lua): when the job leaves processing while
--          a concurrency limit holds jobs of its name in the queue, the wake channel is
--          published, so that waiting workers of every process claim the slot it frees
-- KEYS[10]  next_due: the last deadline announced (see `announce` in lib.lua)
-- ARGV[1]  version: the expected version
-- ARGV[2]  id: the job's id
-- ARGV[3]  placement: "queue" | "scheduled" | "finished" | "deferred"
-- ARGV[4]  score: for "queue", the priority (0-9); else the score in ms: the due time
--          ("scheduled") or the purge time ("finished")
-- ARGV[5]  wake: the wake channel, published when the queue was empty before this job joined it
-- ARGV[6]  message: the message published on each channel: the job as JSON
-- ARGV[7]  now_us: now in microseconds: the new index's score, the minute a completion counts
--          in, and the record's update_time
-- ARGV[8]  completes: "success" or "fail" when the job completes (counted in KEYS[7]), else ""
-- ARGV[9]  process_time: the process time (s) of the run this change ends (kept in KEYS[8]),
--          else ""
-- ARGV[10]  run_times: how many process times KEYS[8] keeps (trimmed only once it holds more)
-- ARGV[11]  timers: the timers channel: a due time or a purge time is announced there
-- ARGV[12]  n: the number of channels
-- ARGV[13 .. 12+n]  channels: the channels the message is published on
-- ARGV[13+n]  fields: the fields written to the job hash: a JSON array of field, value, field,
--          value ...; a value null removes its field (see kickq/_redis/layout.py)
-- ARGV[14+n]  run_ended: "1" when the job leaves processing (the end of a run), else ""
-- ARGV[15+n]  again: "1" when this change is sent again, its first send's reply having been
--          lost
-- A deferred job (placement "deferred") that stays deferred lives in its index alone. A job
-- that completes while deferred jobs await it (its record's field `children`, see adopt.lua)
-- tells them through the hand-over, in this same step (`tell_children`, lib.lua).
-- A queued job's score is `next_score`'s (lib.lua): higher priorities first, and first in,
-- first out within one. A job that completes frees its unique key (the record's `unique_lock`).
-- The minutes hash (KEYS[7]) holds one field per minute of the hour (minute % 60): "<epoch
-- minute>:<succeeded>:<failed>", a field of an older minute starting again from zero: 60
-- fields at most.
-- Returns 1 when applied; 2 when this change, sent again, was applied by its first send (the
-- version is one more, and every field it writes holds what it writes); 0 when the record
-- changed meanwhile (or is gone); "damaged: <why>" when the record cannot be fenced, having no
-- version or one that is not a whole number, or not being a hash: nothing is written, and its
-- caller sets it aside (quarantine.lua), so that no change of it is sent again and again. Every
-- key is checked before the first write, so that an error leaves nothing changed.

local n = tonumber(ARGV[12])
local read = redis.pcall('HMGET', KEYS[1], 'version', 'unique_lock', 'children')
if read.err then
  return 'damaged: the job key is a ' .. redis.call('TYPE', KEYS[1]).ok .. ', not a hash'
end
local version, lock, children = unpack(read)
local fields = cjson.decode(ARGV[13 + n])

-- whether the record holds what this change writes, one version on: it was applied already
local function applied()
  if not version or tonumber(version) ~= tonumber(ARGV[1]) + 1 then return false end
  local names = {}
  for i = 1, #fields, 2 do names[#names + 1] = fields[i] end
  if #names == 0 then return false end
  local held = batched('HMGET', KEYS[1], names)
  for i = 1, #fields, 2 do
    local want = fields[i + 1]
    if want == cjson.null then want = false end
    if held[(i + 1) / 2] ~= want then return false end
  end
  return true
end

if version ~= ARGV[1] then
  -- ARGV[1] is a version as kickq writes it (see `counter`): another text is damage, never a
  -- change made meanwhile
  if not version then
    if redis.call('EXISTS', KEYS[1]) == 1 then return 'damaged: the record has no version' end
  elseif not counter(version) then
    return 'damaged: version is not a whole number'
  end
  return ARGV[15 + n] == '1' and applied() and 2 or 0
end
local placement = ARGV[3]
local completes = ARGV[8] ~= ''
local run_ended = ARGV[9] ~= ''

-- the sorted sets that say where the job is, checked before the first write; read-only keys
-- are checked by their read. The name's indexes and its process times are listings, written
-- with pcall: a damaged one is reported by its reader, never fails the job's change.
local err = check_type(KEYS[2], 'zset') or (KEYS[3] ~= KEYS[2] and check_type(KEYS[3], 'zset'))
  or nil
if err then return redis.error_reply(err) end
local prefix = nil  -- the partition's keys' start, when this job's end is told to its children
if children and placement == 'finished' then
  prefix = prefix_of(KEYS[1], 'job:' .. ARGV[2])
  err = check_types(prefix .. 'scheduled', 'zset', prefix .. 'handover', 'hash')
  if err then return redis.error_reply(err) end
end
local held = nil  -- this minute's completion counts, "<epoch minute>:<succeeded>:<failed>"
if completes then
  held, err = typed_read('hash', 'HGET', KEYS[7], math.floor(tonumber(ARGV[7]) / 60000000) % 60)
  if err then return redis.error_reply(err) end
end
local limited = 0
if ARGV[14 + n] == '1' then
  limited, err = typed_read('hash', 'HEXISTS', KEYS[9], 'concurrency')
  if err then return redis.error_reply(err) end
end

local function count_completion(outcome)
  local minute = math.floor(tonumber(ARGV[7]) / 60000000)
  local succeeded, failed = 0, 0
  if held then
    local at, s, f = string.match(held, '^(%d+):(%d+):(%d+)$')
    if tonumber(at) == minute then succeeded, failed = tonumber(s), tonumber(f) end
  end
  if outcome == 'success' then succeeded = succeeded + 1 else failed = failed + 1 end
  redis.call('HSET', KEYS[7], minute % 60, minute .. ':' .. succeeded .. ':' .. failed)
end

local set, removed = { 'version', tonumber(ARGV[1]) + 1 }, {}
for i = 1, #fields, 2 do
  if fields[i + 1] == cjson.null then
    removed[#removed + 1] = fields[i]
  else
    set[#set + 1] = fields[i]
    set[#set + 1] = fields[i + 1]
  end
end
batched('HSET', KEYS[1], set)
batched('HDEL', KEYS[1], removed)
redis.call('ZREM', KEYS[2], ARGV[2])
if KEYS[5] ~= KEYS[2] then
  redis.pcall('ZREM', KEYS[5], ARGV[2])
end
if placement ~= 'queue' then
  redis.pcall('ZADD', KEYS[6], ARGV[7], ARGV[2])
end
if completes then
  count_completion(ARGV[8])
end
if run_ended then
  local kept = tonumber(ARGV[10])
  local length = redis.pcall('LPUSH', KEYS[8], ARGV[9])
  if type(length) == 'number' and length > kept then
    redis.call('LTRIM', KEYS[8], 0, kept - 1)
  end
end

local woken = false
if placement == 'queue' then
  redis.call('ZADD', KEYS[3], next_score(KEYS[3], ARGV[4]), ARGV[2])
  if redis.call('ZCARD', KEYS[3]) == 1 then
    redis.call('PUBLISH', ARGV[5], '')
    woken = true
  end
elseif placement ~= 'deferred' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
  if placement == 'finished' and lock and redis.pcall('GET', lock) == ARGV[2] then
    redis.call('DEL', lock)
  end
end

if limited == 1 and not woken and (tonumber(redis.pcall('ZCARD', KEYS[4])) or 0) > 0 then
  redis.call('PUBLISH', ARGV[5], '')
end

if placement ~= 'queue' and placement ~= 'deferred' then
  announce(KEYS[10], ARGV[11], tonumber(ARGV[4]), math.floor(tonumber(ARGV[7]) / 1000))
end
if prefix then
  local told = '{"state":"' .. ARGV[8] .. '"'
  if ARGV[8] == 'success' then told = told .. ',"result":' .. (whole(KEYS[1], 'result') or 'null') end
  tell_children(prefix, ARGV[11], ARGV[2], told .. '}', math.floor(tonumber(ARGV[7]) / 1000))
end
for i = 13, 12 + n do
  redis.call('PUBLISH', ARGV[i], ARGV[6])
end
return 1
