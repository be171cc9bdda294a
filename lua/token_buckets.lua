-- token_buckets.lua: check every limit of one request, and charge all of them or none.
--
-- KEYS[1..n]  bucket hashes, all under one {hash tag} (one Redis Cluster slot);
--             fields t (micro-tokens), ts (µs of the last refill), f (ms the key was set to live)
-- ARGV[1]     the caller's time in µs, or "" to use Redis TIME (the default)
-- ARGV[3i-1], ARGV[3i], ARGV[3i+1]  for KEYS[i]: capacity (whole tokens >= 1),
--             refill (micro-tokens per second >= 1), cost (whole tokens >= 0; 0 only reads)
-- returns     {admitted (1|0), now µs, then for each key: allowed (1|0), remaining whole tokens,
--              ms until its cost fits (0 when it fits), ms until full}
--
-- All or nothing: when any bucket lacks its cost, none is charged. Tokens are kept in
-- micro-tokens and time in µs so fractional refill rates stay exact in integer arithmetic,
-- and every reply value is an integer (Lua floats are truncated in replies). A bucket is
-- written only when charged and expires when it would be full again: missing means full.
--
-- The last-refill time never moves backwards, so a caller whose clock lags refills nothing
-- twice. With the caller's clock, Redis's own expiry clock also caps the refill: the key was
-- given f ms to live, so f - PTTL ms have really passed since it was written, and a caller
-- whose clock runs ahead cannot mint tokens.

local app_clock = ARGV[1] ~= ''
local now
if app_clock then
  now = tonumber(ARGV[1])
else
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end

local function ms_to_fill(missing, rate)
  if missing <= 0 then return 0 end
  return math.ceil(missing * 1000 / rate)
end

local buckets = {}
local admitted = 1
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[3 * i - 1]) * 1000000
  local rate = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1]) * 1000000
  local tokens, stamp = capacity, now
  local stored = redis.call('HMGET', key, 't', 'ts', 'f')
  if stored[1] then
    tokens, stamp = tonumber(stored[1]), tonumber(stored[2])
    local elapsed = now - stamp
    if app_clock then
      -- PTTL counts whole ms: one ms less than it shows has surely passed.
      local lived = math.max(tonumber(stored[3]) - redis.call('PTTL', key) - 1, 0) * 1000
      if elapsed > lived then elapsed = lived end
    end
    if elapsed > 0 then
      tokens = math.min(capacity, tokens + math.floor(elapsed * rate / 1000000))
      stamp = stamp + elapsed
    end
  end
  if tokens < cost then admitted = 0 end
  buckets[i] = {capacity = capacity, rate = rate, cost = cost, tokens = tokens, stamp = stamp}
end

local reply = {admitted, now}
for i, key in ipairs(KEYS) do
  local b = buckets[i]
  local retry = ms_to_fill(b.cost - b.tokens, b.rate)
  if admitted == 1 and b.cost > 0 then
    b.tokens = b.tokens - b.cost
    local full_in = math.max(ms_to_fill(b.capacity - b.tokens, b.rate), 1)
    redis.call('HSET', key, 't', b.tokens, 'ts', b.stamp, 'f', full_in)
    redis.call('PEXPIRE', key, full_in)
  end
  local allowed = 0
  if retry == 0 then allowed = 1 end
  reply[#reply + 1] = allowed
  reply[#reply + 1] = math.floor(b.tokens / 1000000)
  reply[#reply + 1] = retry
  reply[#reply + 1] = ms_to_fill(b.capacity - b.tokens, b.rate)
end
return reply
