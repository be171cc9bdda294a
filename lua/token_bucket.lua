-- token_bucket.lua: one client's token bucket, checked and charged atomically.
--
-- KEYS[1]  bucket hash, e.g. fs:rl:{buy:ip:203.0.113.7}; fields t (micro-tokens), ts (µs)
-- ARGV[1]  capacity, whole tokens (>= 1)
-- ARGV[2]  refill rate, micro-tokens per second (>= 1)
-- ARGV[3]  cost, whole tokens (>= 0; 0 only reads the bucket)
-- returns  {allowed (1|0), remaining whole tokens, ms until the cost fits (0 when allowed),
--           ms until the bucket is full}
--
-- Time is Redis's own (TIME, microseconds), never a pod's clock. Tokens are kept in
-- micro-tokens so fractional refill rates stay exact in integer arithmetic, and the
-- reply holds integers only (Lua floats are truncated in replies). A bucket is written
-- only when it is charged, and expires when it would be full again: a missing bucket
-- and a full one are the same thing.

local capacity = tonumber(ARGV[1]) * 1000000
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3]) * 1000000

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local tokens = capacity
local stamp = now
local bucket = redis.call('HMGET', KEYS[1], 't', 'ts')
if bucket[1] then
  tokens = tonumber(bucket[1])
  stamp = tonumber(bucket[2])
  -- A clock that steps back (failover to a replica) must never refill a bucket twice.
  if now > stamp then
    tokens = math.min(capacity, tokens + math.floor((now - stamp) * rate / 1000000))
    stamp = now
  end
end

local function ms_to_fill(missing)
  if missing <= 0 then return 0 end
  return math.ceil(missing * 1000 / rate)
end

if tokens < cost then
  return {0, math.floor(tokens / 1000000), ms_to_fill(cost - tokens), ms_to_fill(capacity - tokens)}
end

tokens = tokens - cost
local full_in = ms_to_fill(capacity - tokens)
if cost > 0 then
  redis.call('HSET', KEYS[1], 't', tokens, 'ts', stamp)
  redis.call('PEXPIRE', KEYS[1], math.max(full_in, 1))
end
return {1, math.floor(tokens / 1000000), 0, full_in}
