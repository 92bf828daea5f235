"""Lua scripts that change a job atomically and publish the change in the same step.

Each script refuses to touch a job that is missing (expired) or already terminal, so a late or
duplicate worker can never overwrite a result, and the first terminal state wins. The published
message is the status hash itself (field → string), and the completion's carries the result JSON too
(`result`); subscribers parse it in jobs/events.py. `SUBMIT` makes a job and queues its Celery message
(jobs/queue.py) in one step.
"""

from __future__ import annotations

# Shared prologue: KEYS[1] is the status hash. Stops with 0 unless the job is live.
_LIVE_JOB = """
local state = redis.call('HGET', KEYS[1], 'status')
if not state or state == 'completed' or state == 'failed' or state == 'cancelled' then
  return 0
end
"""

#: The fields a job update carries: those a change can change. A watcher has the rest from its first read.
CHANGING = ("job_id", "status", "stage", "progress", "updated_at", "started_at", "worker_id", "attempts",
            "error_code", "error_message")  # fmt: skip

# Shared: publish the CHANGING fields ('' for one the job no longer has), and the result JSON on the completion:
# a few hundred bytes per update, where the whole hash would be a kilobyte, to every watching API process.
_PUBLISH = (
    "local CHANGING = {"
    + ", ".join(f"'{name}'" for name in CHANGING)
    + "}"
    + """
local function publish(status_key, channel, result)
  local values = redis.call('HMGET', status_key, unpack(CHANGING))
  local fields = {}
  for i, name in ipairs(CHANGING) do fields[name] = values[i] or '' end
  if result then fields['result'] = result end
  redis.call('PUBLISH', channel, cjson.encode(fields))
end
"""
)

# KEYS: status, image, live, archive outbox, the job's priority list, the queue's four priority lists (highest
# first), job stats, live workers, then the Idempotency-Key's entry or nothing.
# ARGV: the status hash (JSON object), its TTL, the image ('' when an image store holds it), its TTL, the job's
# deadline in the live set, now (unix s), the task message, the most jobs that may wait (0: no bound), how many
# of the four lists are at the job's priority or higher, then the Idempotency-Key's entry (JSON) and its TTL.
# A submit in one step: the job's record, its image, its archive mark and its queue message are written together
# or not at all, so a job exists if and only if it is queued (a reply lost to a Redis restart leaves the client
# unsure, never the job half made; with an Idempotency-Key, its answer is written in the same step, with the
# estimated wait in its `wait`). Returns {1, or 0 when refused because the queue is full (nothing written), jobs
# queued before this one, the estimated seconds until it is done: (jobs ahead + 1) × mean processing seconds ÷
# live workers, '' while unknown}. The estimate is a string: Lua would truncate a float reply to an integer.
SUBMIT = """
local queued, ahead = 0, 0
for i = 6, 9 do
  local depth = redis.call('LLEN', KEYS[i])
  queued = queued + depth
  if i - 5 <= tonumber(ARGV[9]) then ahead = ahead + depth end
end
local stats = redis.call('HMGET', KEYS[10], 'completed', 'processing_seconds')
local completed = tonumber(stats[1] or '0')
local workers = redis.call('ZCOUNT', KEYS[11], ARGV[6], '+inf')
local wait = ''
if completed > 0 and workers > 0 then
  wait = string.format('%.6f', (ahead + 1) * tonumber(stats[2] or '0') / completed / workers)
end
local bound = tonumber(ARGV[8])
if bound > 0 and queued >= bound then
  return {0, queued, wait}
end
local fields = cjson.decode(ARGV[1])
local flat = {}
for name, value in pairs(fields) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('EXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
end
local job_id = fields['job_id']
redis.call('ZADD', KEYS[3], ARGV[5], job_id)
redis.call('ZADD', KEYS[4], ARGV[6], job_id)
redis.call('LPUSH', KEYS[5], ARGV[7])
if KEYS[12] then
  local entry = cjson.decode(ARGV[10])
  entry['wait'] = wait
  redis.call('SET', KEYS[12], cjson.encode(entry), 'EX', ARGV[11], 'XX')
end
return {1, queued, wait}
"""

# KEYS: status, live, events, processing, image. ARGV: now, worker_id, deadline.
# Marks the job taken by this worker (a delivery more, processing, its deadline pushed on) and returns what
# the worker needs to run it, in the same round trip: {delivery number (attempts), crashes so far, the status
# hash (flat), the image or nil}; 0 when the job is no longer live.
TAKE = (
    _PUBLISH
    + _LIVE_JOB
    + """
local job_id = redis.call('HGET', KEYS[1], 'job_id')
redis.call('SADD', KEYS[4], job_id)
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'processing', 'stage', 'initializing', 'worker_id', ARGV[2],
           'updated_at', ARGV[1], 'started_at', ARGV[1])
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

# KEYS: status, live, events. ARGV: now, deadline, then a stage and its progress for each stage, in order.
# One or several stage changes in one step (a worker writes the stages that lasted only milliseconds together,
# see worker/stages.py), each published in turn, so a watcher still sees every stage in order.
# Progress never goes down: a redelivered job keeps the furthest progress it reached.
ADVANCE = (
    _PUBLISH
    + _LIVE_JOB
    + """
local progress = tonumber(redis.call('HGET', KEYS[1], 'progress') or '0')
for i = 3, #ARGV, 2 do
  progress = math.max(progress, tonumber(ARGV[i + 1]))
  redis.call('HSET', KEYS[1], 'stage', ARGV[i], 'progress', progress, 'updated_at', ARGV[1])
  publish(KEYS[1], KEYS[3])
end
redis.call('ZADD', KEYS[2], ARGV[2], redis.call('HGET', KEYS[1], 'job_id'))
return 1
"""
)

# Shared: a finished job with a callback URL is queued for delivery (KEYS[n] is the callbacks-due set).
_CALLBACK_DUE = """
local function callback_due(status_key, due_key, now)
  if redis.call('HEXISTS', status_key, 'callback_url') == 1 then
    redis.call('ZADD', due_key, now, redis.call('HGET', status_key, 'job_id'))
  end
end
"""

# KEYS: status, result, image, live, events, job stats, processing, archive outbox, callbacks due.
# ARGV: result JSON, now, result_ttl, processing seconds, now (unix seconds).
COMPLETE = (
    _PUBLISH
    + _CALLBACK_DUE
    + _LIVE_JOB
    + """
redis.call('HSET', KEYS[1], 'status', 'completed', 'stage', 'completed', 'progress', 100, 'updated_at', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], redis.call('HGET', KEYS[1], 'job_id'))
redis.call('SREM', KEYS[7], redis.call('HGET', KEYS[1], 'job_id'))
redis.call('HINCRBY', KEYS[6], 'completed', 1)
redis.call('HINCRBYFLOAT', KEYS[6], 'processing_seconds', ARGV[4])
redis.call('ZADD', KEYS[8], ARGV[5], redis.call('HGET', KEYS[1], 'job_id'))
callback_due(KEYS[1], KEYS[9], ARGV[5])
publish(KEYS[1], KEYS[5], ARGV[1])
return 1
"""
)

# KEYS: status, image, live, events, job stats, processing, archive outbox, callbacks due, dead letters.
# ARGV: status (failed|cancelled), code, message, now, result_ttl, now (unix seconds), dead-letter TTL.
# A dead-lettered job (dead-letter TTL > 0) keeps its status and image for that long, so it can be retried.
FINISH_UNSUCCESSFULLY = (
    _PUBLISH
    + _CALLBACK_DUE
    + _LIVE_JOB
    + """
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'stage', ARGV[1], 'error_code', ARGV[2], 'error_message', ARGV[3],
           'updated_at', ARGV[4])
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
redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
redis.call('ZADD', KEYS[7], ARGV[6], job_id)
callback_due(KEYS[1], KEYS[8], ARGV[6])
publish(KEYS[1], KEYS[4])
return 1
"""
)

# KEYS: status, image, live, events, dead letters, archive outbox, the job's priority list.
# ARGV: now, deadline (unix seconds), status TTL, image TTL, now (unix seconds), the task message.
# Puts a dead-lettered job back in the queue: pending, no attempts, no error, and its message queued in the same
# step. Returns 1, 0 if the job is not in the dead-letter queue, -1 if its image (kept in Redis) has expired;
# the caller checks an image kept in an image store beforehand.
REVIVE = (
    _PUBLISH
    + """
if not redis.call('ZSCORE', KEYS[5], redis.call('HGET', KEYS[1], 'job_id') or '') then
  return 0
end
local in_redis = (redis.call('HGET', KEYS[1], 'image_store') or 'redis') == 'redis'
if in_redis and redis.call('EXISTS', KEYS[2]) == 0 then
  return -1
end
local job_id = redis.call('HGET', KEYS[1], 'job_id')
redis.call('HSET', KEYS[1], 'status', 'pending', 'stage', 'queued', 'progress', 0, 'attempts', 0,
           'updated_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'error_code', 'error_message', 'worker_id', 'started_at', 'crashes',
           'crash_log')
redis.call('EXPIRE', KEYS[1], ARGV[3])
if in_redis then
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
redis.call('ZADD', KEYS[3], ARGV[2], job_id)
redis.call('ZREM', KEYS[5], job_id)
redis.call('ZADD', KEYS[6], ARGV[5], job_id)
redis.call('LPUSH', KEYS[7], ARGV[6])
publish(KEYS[1], KEYS[4])
return redis.call('HGETALL', KEYS[1])
"""
)

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
