"""Lua scripts that change a job atomically and publish the change in the same step.

Each script refuses to touch a job that is missing (expired) or already terminal, so a late or
duplicate worker can never overwrite a result, and the first terminal state wins. The published
message is the status hash itself (field → string), and the completion's carries the result JSON too
(`result`); subscribers parse it in jobs/events.py. `SUBMIT` makes a job and queues its Celery message
(jobs/queue.py) in one step.
"""

from __future__ import annotations

from visionq.jobs import keys

# Shared prologue: KEYS[1] is the status hash. Stops with 0 unless the job is live.
_LIVE_JOB = """
local state = redis.call('HGET', KEYS[1], 'status')
if not state or state == 'completed' or state == 'failed' or state == 'cancelled' or state == 'expired' then
  return 0
end
"""

# Shared: a finished job with a callback URL is queued for delivery (KEYS[n] is the callbacks-due set).
_CALLBACK_DUE = """
local function callback_due(status_key, due_key, now)
  if redis.call('HEXISTS', status_key, 'callback_url') == 1 then
    redis.call('ZADD', due_key, now, redis.call('HGET', status_key, 'job_id'))
  end
end
"""

# Shared: write a job's status hash from its fields (a decoded JSON object).
_WRITE_HASH = """
local function write_hash(key, fields)
  local flat = {}
  for name, value in pairs(fields) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  redis.call('HSET', key, unpack(flat))
end
"""

# Shared: a batch's side of its items' jobs (jobs/batches.py). `batch_count` counts a job of a batch as it starts
# (`processing`) or ends (its outcome; `prior`, its status before); the end of the last item ends the batch, as
# `completed`, or `cancelled` when a cancel was asked, and queues its callback and its archiving (member
# `batch:{id}` of the callbacks-due set and of the archive outbox). The batch's key is named from the job's hash:
# its id hashes to the job's slot (keys.Shards), as a cache leader's does to its followers'.
_BATCH = """
local function finish_batch(batch, now, now_s, due_key, outbox_key)
  if redis.call('HGET', batch, 'state') ~= 'open' then
    return
  end
  if tonumber(redis.call('HGET', batch, 'ended') or '0') < tonumber(redis.call('HGET', batch, 'total') or '0') then
    return
  end
  local final = 'completed'
  if redis.call('HEXISTS', batch, 'cancel_requested') == 1 then
    final = 'cancelled'
  end
  redis.call('HSET', batch, 'state', final, 'ended_at', now)
  if due_key and redis.call('HEXISTS', batch, 'callback_url') == 1 then
    redis.call('ZADD', due_key, now_s, batch)
  end
  redis.call('ZADD', outbox_key, now_s, batch)
end
local function batch_count(status_key, outcome, prior, now, now_s, due_key, outbox_key)
  local batch_id = redis.call('HGET', status_key, 'batch_id')
  if not batch_id then
    return
  end
  local batch = 'batch:{' .. batch_id .. '}'
  if redis.call('EXISTS', batch) == 0 then
    return
  end
  if prior == 'processing' then
    redis.call('HINCRBY', batch, 'processing', -1)
  end
  if outcome == 'processing' then
    redis.call('HINCRBY', batch, 'processing', 1)
    return
  end
  redis.call('HINCRBY', batch, outcome, 1)
  redis.call('HINCRBY', batch, 'ended', 1)
  finish_batch(batch, now, now_s, due_key, outbox_key)
end
"""

# Shared: the time a change of the job is written with, its `updated_at`: `at`, or the job's own when that is later,
# so that it never goes back. Its writers stamp from their own clocks (the API's, each worker's: they differ), and a
# worker stamps its result as it makes it, then the stages it sends with it a moment later. The archive keeps a
# job's newest state by this field (archive/repository.py): a later state with an earlier stamp would never replace
# the state before it there. (Stamps are `isoformat`'s, fixed width: they compare as text.)
_STAMP = """
local function stamp(status_key, at)
  local known = redis.call('HGET', status_key, 'updated_at')
  if known and known > at then
    return known
  end
  return at
end
"""

# KEYS: the batch, its items, callbacks due, archive outbox. ARGV: items refused at submission, the items' TTL, now,
# now (unix s), then each item (JSON), in order.
# Opens a batch once its jobs are made: its items recorded, the refused ones ended and failed, and the batch ended
# at once when every item already has.
OPEN_BATCH = (
    _BATCH
    + """
for i = 5, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'failed', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'ended', ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'open')
finish_batch(KEYS[1], ARGV[3], ARGV[4], KEYS[3], KEYS[4])
return 1
"""
)

#: The fields a job update carries: those a change can change. A watcher has the rest from its first read.
CHANGING = ("job_id", "status", "stage", "progress", "updated_at", "started_at", "worker_id", "attempts",
            "error_code", "error_message", "revision")  # fmt: skip

# Shared: publish the CHANGING fields ('' for one the job no longer has), and the result JSON on the completion:
# a few hundred bytes per update, where the whole hash would be a kilobyte, to every watching API process. Each
# update counts one more `revision`: a watcher that read the job passes over the updates it already has by it
# (several stages written in one step share one updated_at, and the API's and workers' clocks differ).
_PUBLISH = (
    "local CHANGING = {"
    + ", ".join(f"'{name}'" for name in CHANGING)
    + "}"
    + """
local function publish(status_key, channel, result)
  redis.call('HINCRBY', status_key, 'revision', 1)
  local values = redis.call('HMGET', status_key, unpack(CHANGING))
  local fields = {}
  for i, name in ipairs(CHANGING) do fields[name] = values[i] or '' end
  if result then fields['result'] = result end
  redis.call('PUBLISH', channel, cjson.encode(fields))
end
"""
)

# Shared: the score of a waiting job in `visionq:queue:{queue}:waiting` (keys.TICKET_SPAN): its priority step first,
# then its ticket, so that a job's rank is the number of jobs workers will start before it. A ticket is the
# milliseconds since TICKET_EPOCH, then a counter for the order within one millisecond: comparable between the shards
# of a Redis Cluster's job state (each has its own counter), so a job's place counts the jobs of every shard.
_WAITING = (
    f"local SPAN, EPOCH, SAME_MS = {keys.TICKET_SPAN}, {keys.TICKET_EPOCH}, {keys.TICKETS_PER_MS}\n"
    + """
local function waiting_score(step, ticket)
  return string.format('%.0f', tonumber(step) * SPAN + ticket)
end
local function ticket(tickets_key, now)
  return math.floor((tonumber(now) - EPOCH) * 1000) * SAME_MS + redis.call('INCR', tickets_key) % SAME_MS
end
"""
)

# Shared: when a job `ahead` jobs down the queue should start and be done, in seconds from now, as strings ('' while
# unknown: no job completed yet, or no live worker). The queue's pace is the measured time between starts while
# jobs wait (`visionq:stats:pace`, kept by TAKE); until it is known, the mean processing time shared by the live
# workers. Strings: Lua would truncate a float reply to an integer.
_ESTIMATE = """
local function estimate(ahead, stats_key, workers_key, pace_key, now)
  local stats = redis.call('HMGET', stats_key, 'completed', 'processing_seconds', 'cache_hits')
  local completed = tonumber(stats[1] or '0') - tonumber(stats[3] or '0')
  local workers = redis.call('ZCOUNT', workers_key, now, '+inf')
  if completed <= 0 or workers == 0 then
    return '', ''
  end
  local mean = tonumber(stats[2] or '0') / completed
  local interval = tonumber(redis.call('HGET', pace_key, 'interval') or '')
  if not interval then
    interval = mean / workers
  end
  local start_in = ahead * interval
  return string.format('%.6f', start_in), string.format('%.6f', start_in + mean)
end
"""

# KEYS: status, image, live, archive outbox, the job's priority list, job stats, live workers, waiting jobs, queue
# tickets, deadlines, the queue's pace, the Idempotency-Key's entry, the result cache's entry and its followers
# (each of the last three the status hash again when not used: a key of another slot would refuse the step on a
# Redis Cluster).
# ARGV: the status hash (JSON object), its TTL, the image ('' when an image store holds it), its TTL, the job's
# deadline in the live set, now (unix s), the task message, the most jobs that may wait at this priority (0: no
# bound), the priority step, the job's own `deadline` (unix s, '' for none), the Idempotency-Key's entry (JSON) and
# its TTL, the cache entry's TTL, '1' when the broker is apart from job state (then KEYS[5] is the queue's outbox, see
# jobs/publisher.py: the job is recorded there, and the caller publishes its message; else the message is pushed on
# the priority list KEYS[5] here), '1' when there is an Idempotency-Key's entry, '1' when there is a cache entry.
# With a cache entry (jobs/cache.py): when it holds a finished result, nothing is written and the reply is {2, jobs
# waiting, that result JSON}, for the caller to make the job completed at once (CACHED); when it names a job still
# running (its leader), this job is made and queued as its follower (`follows`), and a worker completes it from the
# leader's result instead of running it; otherwise this job becomes the entry's leader.
# A submit in one step: the job's record, its image, its archive mark, its place in the queue and its queue message
# are written together or not at all, so a job exists if and only if it is queued (a reply lost to a Redis restart
# leaves the client unsure, never the job half made; with an Idempotency-Key, its answer is written in the same
# step, with the estimated wait in its `wait`). Returns {1, or 0 when refused because the queue is full (nothing
# written), jobs waiting (all priorities), seconds until it is done, seconds until it starts (see `estimate`), jobs
# that will start before it}.
SUBMIT = (
    _WAITING
    + _ESTIMATE
    + _WRITE_HASH
    + """
local step = tonumber(ARGV[9])
local queued = redis.call('ZCARD', KEYS[8])
local ahead = redis.call('ZCOUNT', KEYS[8], '-inf', '(' .. waiting_score(step + 1, 0))
local start_in, wait = estimate(ahead, KEYS[6], KEYS[7], KEYS[11], ARGV[6])
local bound = tonumber(ARGV[8])
if bound > 0 and queued >= bound then
  return {0, queued, wait, start_in, ahead}
end
local fields = cjson.decode(ARGV[1])
if ARGV[16] == '1' then
  local cached = redis.call('HMGET', KEYS[13], 'leader', 'result')
  if cached[2] then
    return {2, queued, cached[2]}
  end
  if cached[1] then
    fields['follows'] = cached[1]
    redis.call('RPUSH', KEYS[14], fields['job_id'])
    redis.call('EXPIRE', KEYS[14], ARGV[13])
  else
    redis.call('HSET', KEYS[13], 'leader', fields['job_id'])
    redis.call('EXPIRE', KEYS[13], ARGV[13])
    redis.call('HINCRBY', KEYS[6], 'cache_misses', 1)
  end
end
write_hash(KEYS[1], fields)
redis.call('EXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
end
local job_id = fields['job_id']
redis.call('ZADD', KEYS[3], ARGV[5], job_id)
redis.call('ZADD', KEYS[4], ARGV[6], job_id)
redis.call('ZADD', KEYS[8], waiting_score(step, ticket(KEYS[9], ARGV[6])), job_id)
if ARGV[10] ~= '' then
  redis.call('ZADD', KEYS[10], ARGV[10], job_id)
end
if ARGV[14] == '1' then
  redis.call('ZADD', KEYS[5], ARGV[6], job_id)
else
  redis.call('LPUSH', KEYS[5], ARGV[7])
end
if ARGV[15] == '1' then
  local entry = cjson.decode(ARGV[11])
  entry['wait'] = wait
  redis.call('SET', KEYS[12], cjson.encode(entry), 'EX', ARGV[12], 'XX')
end
return {1, queued, wait, start_in, ahead}
"""
)

# KEYS: status, result, archive outbox, job stats, callbacks due, the Idempotency-Key's entry (the status hash again
# when none).
# ARGV: the status hash (JSON object, a completed job), the result JSON, result_ttl, now (unix s), the
# Idempotency-Key's entry (JSON) and its TTL, '1' when there is that entry.
# A job served from the result cache: made completed, with its result, in one step (no queue, no worker).
CACHED = (
    _CALLBACK_DUE
    + _BATCH
    + _WRITE_HASH
    + """
local fields = cjson.decode(ARGV[1])
write_hash(KEYS[1], fields)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], fields['job_id'])
redis.call('HINCRBY', KEYS[4], 'completed', 1)
redis.call('HINCRBY', KEYS[4], 'cache_hits', 1)
callback_due(KEYS[1], KEYS[5], ARGV[4])
batch_count(KEYS[1], 'completed', nil, fields['updated_at'], ARGV[4], KEYS[5], KEYS[3])
if ARGV[7] == '1' then
  redis.call('SET', KEYS[6], ARGV[5], 'EX', ARGV[6], 'XX')
end
return 1
"""
)

# KEYS: the job's status, then PLACE's (waiting jobs, job stats, live workers, the queue's pace). ARGV: job id, now
# (unix s). The job's status hash (flat, as HGETALL answers) with its place as PLACE answers it: {fields, rank,
# start_in, score}; {fields, -1, '', ''} when it is not waiting; {} for an unknown job. A watcher's first read of a job
# in one round trip rather than two (the WebSocket's).
PLACED = (
    _ESTIMATE
    + """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return {}
end
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then
  return {fields, -1, '', ''}
end
local start_in = estimate(rank, KEYS[3], KEYS[4], KEYS[5], ARGV[2])
return {fields, rank, start_in, redis.call('ZSCORE', KEYS[2], ARGV[1])}
"""
)

# KEYS: waiting jobs, job stats, live workers, the queue's pace. ARGV: job id, now (unix s).
# A pending job's place: {jobs of its shard that will start before it, seconds until it starts ('' while unknown),
# its score (for the other shards' count)}; {-1, '', ''} when it is not waiting.
PLACE = (
    _ESTIMATE
    + """
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
if not rank then
  return {-1, '', ''}
end
local start_in = estimate(rank, KEYS[2], KEYS[3], KEYS[4], ARGV[2])
return {rank, start_in, redis.call('ZSCORE', KEYS[1], ARGV[1])}
"""
)

# KEYS: waiting jobs, job stats, live workers, the queue's pace. ARGV: a priority step, now (unix s).
# Seconds until a job queued now at that step should be done ('' while unknown).
WAIT = (
    _WAITING
    + _ESTIMATE
    + """
local ahead = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. waiting_score(tonumber(ARGV[1]) + 1, 0))
local _, wait = estimate(ahead, KEYS[2], KEYS[3], KEYS[4], ARGV[2])
return wait
"""
)

# KEYS: status, waiting jobs, queue tickets, the job's priority list, the list one step up. ARGV: job id, the step
# up, its priority's name, now, how many of the oldest messages to look through, now (unix s).
# Promotes an aged pending job one priority step: its message moves to the higher list (behind the jobs already
# there, ahead of later arrivals), with its `priority` property, which kombu reads when it restores a message. 1 when
# promoted; 0 when the job is no longer waiting, or its message is not among the oldest (a worker has fetched it).
PROMOTE = (
    _WAITING
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
local messages = redis.call('LRANGE', KEYS[4], -tonumber(ARGV[5]), -1)
for i = #messages, 1, -1 do
  local message = messages[i]
  if string.find(message, ARGV[1], 1, true) then
    local envelope = cjson.decode(message)
    envelope['properties']['priority'] = tonumber(ARGV[2])
    redis.call('LREM', KEYS[4], -1, message)
    redis.call('LPUSH', KEYS[5], cjson.encode(envelope))
    redis.call('ZADD', KEYS[2], waiting_score(ARGV[2], ticket(KEYS[3], ARGV[6])), ARGV[1])
    redis.call('HSET', KEYS[1], 'queue_priority', ARGV[3], 'promoted_at', ARGV[4])
    return 1
  end
end
return 0
"""
)

# KEYS: status, live, events, processing, image, waiting jobs, deadlines, the queue's pace, the queue's outbox.
# ARGV: now, worker_id, deadline, now (unix s), the message's id ('' for a job's first message, which has none).
# A message whose id is not the one the job names (STALE, -4: a copy the job was published again after, see
# jobs/queue.py) is not run: nothing is written.
# Marks the job taken by this worker (a delivery more, processing, its deadline pushed on) and returns what
# the worker needs to run it, in the same round trip: {delivery number (attempts), crashes so far, the status
# hash (flat), the image or nil}; 0 when the job is no longer live; -1, with nothing written, when it is still
# pending past its own `deadline` (the worker expires it). A follower of a cached job's leader (`follows`, see
# SUBMIT) is not taken while its leader runs (-2: the worker looks again later), is completed from the leader's
# result once it has one ({-3, 0, the status hash, that result}), and runs on its own if the leader failed, as the
# cache entry's new leader when no other job has taken that place. Its leader's keys are named from its own hash
# (in the same shard: the cache entry's, keys.Shards).
# A job's first start also measures the queue's pace: the seconds since the previous start, when jobs were waiting
# then, go into an average (`visionq:queue:{queue}:pace`).
TAKE = (
    _PUBLISH
    + _STAMP
    + _BATCH
    + _LIVE_JOB
    + """
if (redis.call('HGET', KEYS[1], 'message') or '') ~= ARGV[5] then
  return -4
end
local job_id = redis.call('HGET', KEYS[1], 'job_id')
redis.call('ZREM', KEYS[9], job_id)
local due = redis.call('ZSCORE', KEYS[7], job_id)
if due and state == 'pending' and tonumber(due) < tonumber(ARGV[4]) then
  return -1
end
local leader = redis.call('HGET', KEYS[1], 'follows')
if leader and state == 'pending' then
  local leading = redis.call('HGET', 'job:{' .. leader .. '}:status', 'status')
  if leading == 'pending' or leading == 'processing' then
    return -2
  end
  local result = redis.call('GET', 'job:{' .. leader .. '}:result')
  if leading == 'completed' and result then
    return {-3, 0, redis.call('HGETALL', KEYS[1]), result}
  end
  redis.call('HDEL', KEYS[1], 'follows')
  local entry = redis.call('HGET', KEYS[1], 'cache_key')
  if entry and redis.call('HSETNX', entry, 'leader', job_id) == 1 then
    redis.call('EXPIRE', entry, math.max(redis.call('TTL', KEYS[1]), 1))
  end
end
redis.call('ZREM', KEYS[7], job_id)
if state == 'pending' then
  batch_count(KEYS[1], 'processing', state)
end
if redis.call('ZREM', KEYS[6], job_id) == 1 then
  local pace = redis.call('HMGET', KEYS[8], 'at', 'busy', 'interval')
  if pace[1] and pace[2] == '1' then
    local gap = math.min(tonumber(ARGV[4]) - tonumber(pace[1]), 60)
    local interval = gap
    if pace[3] then
      interval = 0.8 * tonumber(pace[3]) + 0.2 * gap
    end
    redis.call('HSET', KEYS[8], 'interval', string.format('%.6f', interval))
  end
  redis.call('HSET', KEYS[8], 'at', ARGV[4], 'busy', redis.call('ZCARD', KEYS[6]) > 0 and '1' or '0')
end
redis.call('SADD', KEYS[4], job_id)
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'processing', 'stage', 'initializing', 'worker_id', ARGV[2],
           'updated_at', stamp(KEYS[1], ARGV[1]), 'started_at', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], job_id)
publish(KEYS[1], KEYS[3])
local crashes = tonumber(redis.call('HGET', KEYS[1], 'crashes') or '0')
return {attempts, crashes, redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[5])}
"""
)


# KEYS: status. ARGV: now, why the process died.
# The pool process running the job died (seen by its parent). If it died reading or running the image
# (preprocessing, inference), that counts in `crashes`, with its evidence appended to `crash_log` (JSON):
# enough of them and the image is taken for poison. Returns the crashes so far (0 if not live).
CRASHED = (
    _LIVE_JOB
    + """
local stage = redis.call('HGET', KEYS[1], 'stage')
if stage ~= 'preprocessing' and stage ~= 'inference' then
  return tonumber(redis.call('HGET', KEYS[1], 'crashes') or '0')
end
local log = cjson.decode(redis.call('HGET', KEYS[1], 'crash_log') or '[]')
log[#log + 1] = {attempt = tonumber(redis.call('HGET', KEYS[1], 'attempts')), stage = stage,
                 worker_id = redis.call('HGET', KEYS[1], 'worker_id'),
                 started_at = redis.call('HGET', KEYS[1], 'started_at'), noticed_at = ARGV[1], reason = ARGV[2]}
redis.call('HSET', KEYS[1], 'crash_log', cjson.encode(log))
return redis.call('HINCRBY', KEYS[1], 'crashes', 1)
"""
)

# Shared: stage changes, in order, each published in turn, so a watcher still sees every stage: ARGV from `first` on
# holds a stage and its progress for each. Progress never goes down: a redelivered job keeps the furthest it reached.
_ADVANCE = """
local function advance(status_key, channel, at, first)
  local progress = tonumber(redis.call('HGET', status_key, 'progress') or '0')
  for i = first, #ARGV, 2 do
    progress = math.max(progress, tonumber(ARGV[i + 1]))
    redis.call('HSET', status_key, 'stage', ARGV[i], 'progress', progress, 'updated_at', at)
    publish(status_key, channel)
  end
end
"""

# KEYS: status, live, events. ARGV: now, deadline, then a stage and its progress for each stage, in order.
# One or several stage changes in one step (a worker writes the stages that lasted only milliseconds together,
# see worker/stages.py; those that end with the job go in COMPLETE itself).
ADVANCE = (
    _PUBLISH
    + _STAMP
    + _ADVANCE
    + _LIVE_JOB
    + """
advance(KEYS[1], KEYS[3], stamp(KEYS[1], ARGV[1]), 3)
redis.call('ZADD', KEYS[2], ARGV[2], redis.call('HGET', KEYS[1], 'job_id'))
return 1
"""
)

# Shared: the result cache's side of a job that ends. A leader that completed with a result worth reusing (`keep`)
# leaves it in its cache entry; one that did not ends the entry, so that the next identical submit runs afresh.
# Returns the leader's followers (job ids), for the caller to complete from its result; a follower is queued too,
# so one no caller completes (a crash) completes itself when a worker reaches it.
_CACHE_END = """
local function cache_end(status_key, keep, result, ttl)
  local entry = redis.call('HGET', status_key, 'cache_key')
  if not entry or redis.call('HGET', entry, 'leader') ~= redis.call('HGET', status_key, 'job_id') then
    return {}
  end
  if keep then
    redis.call('HSET', entry, 'result', result)
    redis.call('EXPIRE', entry, ttl)
  else
    redis.call('DEL', entry)
  end
  local followers = redis.call('LRANGE', entry .. ':followers', 0, -1)
  redis.call('DEL', entry .. ':followers')
  return followers
end
"""

# KEYS: status, result, image, live, events, job stats, processing, archive outbox, callbacks due, waiting jobs.
# ARGV: result JSON, now, result_ttl, processing seconds, now (unix seconds), '1' when the result may be reused
# (served by the job's own model), '1' when the job is a follower completed from its leader's result, then a stage
# and its progress for each stage not yet written (short ones: worker/stages.py), written first, in the same atomic
# step: an archiver reading the job between them and the completion would stamp an older state as late as it.
# Returns {the `updated_at` written, the job's followers…} (see _STAMP, _CACHE_END), 0 when the job is no longer live.
COMPLETE = (
    _PUBLISH
    + _STAMP
    + _ADVANCE
    + _CALLBACK_DUE
    + _CACHE_END
    + _BATCH
    + _LIVE_JOB
    + """
local at = stamp(KEYS[1], ARGV[2])
advance(KEYS[1], KEYS[5], at, 8)
redis.call('HSET', KEYS[1], 'status', 'completed', 'stage', 'completed', 'progress', 100, 'updated_at', at)
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], redis.call('HGET', KEYS[1], 'job_id'))
redis.call('SREM', KEYS[7], redis.call('HGET', KEYS[1], 'job_id'))
redis.call('ZREM', KEYS[10], redis.call('HGET', KEYS[1], 'job_id'))
redis.call('HINCRBY', KEYS[6], 'completed', 1)
if ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[6], 'cache_hits', 1)
else
  redis.call('HINCRBYFLOAT', KEYS[6], 'processing_seconds', ARGV[4])
end
redis.call('ZADD', KEYS[8], ARGV[5], redis.call('HGET', KEYS[1], 'job_id'))
callback_due(KEYS[1], KEYS[9], ARGV[5])
batch_count(KEYS[1], 'completed', state, at, ARGV[5], KEYS[9], KEYS[8])
local followers = cache_end(KEYS[1], ARGV[6] == '1', ARGV[1], ARGV[3])
publish(KEYS[1], KEYS[5], ARGV[1])
return {at, unpack(followers)}
"""
)

# KEYS: status, image, live, events, job stats, processing, archive outbox, callbacks due, dead letters, waiting
# jobs, deadlines.
# ARGV: status (failed|cancelled|expired), code, message, now, result_ttl, now (unix seconds), dead-letter TTL,
# '1' to finish the job only while it is pending (expiry), else ''.
# A dead-lettered job (dead-letter TTL > 0) keeps its status and image for that long, so it can be retried. A cache
# leader's entry ends with it; its followers, queued, run on their own.
FINISH_UNSUCCESSFULLY = (
    _PUBLISH
    + _STAMP
    + _CALLBACK_DUE
    + _CACHE_END
    + _BATCH
    + _LIVE_JOB
    + """
if ARGV[8] == '1' and state ~= 'pending' then
  return 0
end
local at = stamp(KEYS[1], ARGV[4])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'stage', ARGV[1], 'error_code', ARGV[2], 'error_message', ARGV[3],
           'updated_at', at)
local job_id = redis.call('HGET', KEYS[1], 'job_id')
if tonumber(ARGV[7]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  redis.call('ZADD', KEYS[9], ARGV[6], job_id)
else
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('DEL', KEYS[2])
end
redis.call('ZREM', KEYS[3], job_id)
redis.call('SREM', KEYS[6], job_id)
redis.call('ZREM', KEYS[10], job_id)
redis.call('ZREM', KEYS[11], job_id)
redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
redis.call('ZADD', KEYS[7], ARGV[6], job_id)
callback_due(KEYS[1], KEYS[8], ARGV[6])
batch_count(KEYS[1], ARGV[1], state, at, ARGV[6], KEYS[8], KEYS[7])
cache_end(KEYS[1], false)
publish(KEYS[1], KEYS[4])
return 1
"""
)

# KEYS: status, image, live, events, dead letters, archive outbox, the job's priority list (or the queue's outbox),
# waiting jobs, tickets.
# ARGV: now, deadline (unix seconds), status TTL, image TTL, now (unix seconds), the task message, priority step, its
# message id, '1' when the broker is apart (see SUBMIT).
# Puts a dead-lettered job back in the queue: pending, no attempts, no error, and its message queued (or its outbox
# entry written) in the same step. Returns 1, 0 if the job is not in the dead-letter queue, -1 if its image (kept in
# Redis) has expired; the caller checks an image kept in an image store beforehand.
REVIVE = (
    _PUBLISH
    + _STAMP
    + _WAITING
    + """
if not redis.call('ZSCORE', KEYS[5], redis.call('HGET', KEYS[1], 'job_id') or '') then
  return 0
end
local in_redis = (redis.call('HGET', KEYS[1], 'image_store') or 'redis') == 'redis'
if in_redis and redis.call('EXISTS', KEYS[2]) == 0 then
  return -1
end
local job_id = redis.call('HGET', KEYS[1], 'job_id')
local batch_id = redis.call('HGET', KEYS[1], 'batch_id')
local batch = batch_id and 'batch:{' .. batch_id .. '}'
if batch and redis.call('EXISTS', batch) == 1 then
  redis.call('HINCRBY', batch, 'failed', -1)
  redis.call('HINCRBY', batch, 'ended', -1)
  redis.call('HSET', batch, 'state', 'open')
end
redis.call('HSET', KEYS[1], 'status', 'pending', 'stage', 'queued', 'progress', 0, 'attempts', 0,
           'updated_at', stamp(KEYS[1], ARGV[1]), 'message', ARGV[8])
redis.call('HDEL', KEYS[1], 'error_code', 'error_message', 'worker_id', 'started_at', 'crashes',
           'crash_log', 'queue_priority', 'promoted_at')
redis.call('EXPIRE', KEYS[1], ARGV[3])
if in_redis then
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
redis.call('ZADD', KEYS[3], ARGV[2], job_id)
redis.call('ZREM', KEYS[5], job_id)
redis.call('ZADD', KEYS[6], ARGV[5], job_id)
if ARGV[9] == '1' then
  redis.call('ZADD', KEYS[7], ARGV[5], job_id)
else
  redis.call('LPUSH', KEYS[7], ARGV[6])
end
redis.call('ZADD', KEYS[8], waiting_score(ARGV[7], ticket(KEYS[9], ARGV[5])), job_id)
publish(KEYS[1], KEYS[4])
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS: status, the queue's outbox, waiting jobs, tickets. ARGV: job id, a new message id, now (unix s), and to promote
# the job: the step up, its priority's name, now (RFC 3339); '' for each when it is republished as it is.
# A broker apart from job state (jobs/publisher.py): gives a pending job a new message id and records it in the
# outbox, for the caller to publish its message; any earlier message of it is then stale (TAKE drops it). Promotes it
# on the way when asked (PROMOTE's work, for a broker whose messages cannot be moved). Returns the priority to publish
# at, or '' when the job is not pending (promoting: not waiting) any more (its outbox entry dropped).
REPUBLISH = (
    _WAITING
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return ''
end
if ARGV[4] ~= '' then
  if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then
    return ''
  end
  redis.call('ZADD', KEYS[3], waiting_score(ARGV[4], ticket(KEYS[4], ARGV[3])), ARGV[1])
  redis.call('HSET', KEYS[1], 'queue_priority', ARGV[5], 'promoted_at', ARGV[6])
end
redis.call('HSET', KEYS[1], 'message', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return redis.call('HGET', KEYS[1], 'queue_priority') or redis.call('HGET', KEYS[1], 'priority')
"""
)

# KEYS: status, the job's priority list, the live jobs. ARGV: a new message id, the task message carrying it, a new
# deadline, the job id.
# Queues a live job's message again (its last was lost, see JobTracker.lost_messages), as the job's current one; a
# processing job's deadline is pushed on, for a worker to take the message before the sweep gives the job up.
REQUEUE = """
local state = redis.call('HGET', KEYS[1], 'status')
if state ~= 'pending' and state ~= 'processing' then
  return 0
end
redis.call('HSET', KEYS[1], 'message', ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
if state == 'processing' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
end
return 1
"""

# KEYS: status, the queue's outbox. ARGV: job id, the message id published ('' for its first message).
# Takes a job off the outbox once its message is in the broker: unless it has been given a newer message meanwhile.
PUBLISHED = """
if (redis.call('HGET', KEYS[1], 'message') or '') == ARGV[2] then
  return redis.call('ZREM', KEYS[2], ARGV[1])
end
return 0
"""

# KEYS: archive outbox, then the status hash of each job. ARGV: job id, archived status, for each job in order.
# Takes a job off the outbox once its archive row is current: when the status written is still the job's
# status, or the job has expired from Redis. A job that changed meanwhile stays, for the next pass.
ARCHIVED = """
local removed = 0
for i = 2, #KEYS do
  local job_id, written = ARGV[2 * i - 3], ARGV[2 * i - 2]
  local current = redis.call('HGET', KEYS[i], 'status')
  if not current or current == written then
    removed = removed + redis.call('ZREM', KEYS[1], job_id)
  end
end
return removed
"""
