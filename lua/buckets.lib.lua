-- buckets.lib.lua: token-bucket functions shared by token_buckets.lua, refund_buckets.lua and
-- admit.lua.
-- service/core/lua.py prepends this file to each script that uses it (Redis scripts cannot import).
--
-- Buckets are hashes: t (micro-tokens), ts (µs of the last refill), f (ms the key was set to
-- live). Tokens are kept in micro-tokens and time in µs so fractional refill rates stay exact
-- in integer arithmetic. A bucket is written only when charged or refunded and expires when it
-- would be full again: missing means full. The last-refill time never moves backwards, so a caller
-- whose clock lags refills nothing twice. With the caller's clock, Redis's own expiry clock
-- caps the refill: the key was given f ms to live, so f - PTTL ms have really passed since it
-- was written, and a caller whose clock runs ahead cannot mint tokens.

-- The clock: the caller's µs when given, else Redis TIME. Returns now, app_clock.
local function bucket_clock(caller_time)
  if caller_time ~= '' then
    return tonumber(caller_time), true
  end
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000000 + tonumber(clock[2]), false
end

local function ms_to_fill(missing, rate)
  if missing <= 0 then return 0 end
  return math.ceil(missing * 1000 / rate)
end

-- Refill and check `count` buckets: keys[first_key + i - 1] with (capacity, micro-tokens/s,
-- cost) at args[first_arg + 3(i-1)]. A negative cost -c is a shadow limit of cost c: checked and
-- charged like the others, but it never denies, and it is charged only when it has room (so it
-- holds what the limit would hold if it were enforced). Returns admitted (1 when every enforced
-- bucket has its cost), buckets.
local function bucket_check(keys, first_key, args, first_arg, count, now, app_clock)
  local buckets = {}
  local admitted = 1
  for i = 1, count do
    local key = keys[first_key + i - 1]
    local at = first_arg + 3 * (i - 1)
    local capacity = tonumber(args[at]) * 1000000
    local rate = tonumber(args[at + 1])
    local cost = tonumber(args[at + 2])
    local shadow = cost < 0
    if shadow then cost = -cost end
    cost = cost * 1000000
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
    if tokens < cost and not shadow then admitted = 0 end
    buckets[i] = {key = key, capacity = capacity, rate = rate, cost = cost, tokens = tokens, stamp = stamp,
                  retry = ms_to_fill(cost - tokens, rate), shadow = shadow}
  end
  return admitted, buckets
end

-- Write a bucket, to live until it would be full again; a full one is deleted (missing means full).
local function bucket_store(b)
  if b.tokens >= b.capacity then
    redis.call('DEL', b.key)
    return
  end
  local full_in = math.max(ms_to_fill(b.capacity - b.tokens, b.rate), 1)
  redis.call('HSET', b.key, 't', b.tokens, 'ts', b.stamp, 'f', full_in)
  redis.call('PEXPIRE', b.key, full_in)
end

-- Take every bucket's cost (a shadow bucket's only when it has room).
local function bucket_charge(buckets)
  for _, b in ipairs(buckets) do
    if b.cost > 0 and not (b.shadow and b.tokens < b.cost) then
      b.tokens = b.tokens - b.cost
      bucket_store(b)
    end
  end
end

-- Give every bucket its cost back, never past its capacity. Whatever was charged or refilled
-- since, the bucket ends as if the refunded request had never been charged:
-- min(capacity, min(capacity, x - cost + refill) + cost) = min(capacity, x + refill).
local function bucket_refund(buckets)
  for _, b in ipairs(buckets) do
    if b.cost > 0 then
      b.tokens = math.min(b.capacity, b.tokens + b.cost)
      b.retry = ms_to_fill(b.cost - b.tokens, b.rate)
      bucket_store(b)
    end
  end
end

-- Append per bucket: allowed (1|0), remaining whole tokens, ms until its cost fits, ms until full.
local function bucket_reply(reply, buckets)
  for _, b in ipairs(buckets) do
    local allowed = 0
    if b.retry == 0 then allowed = 1 end
    reply[#reply + 1] = allowed
    reply[#reply + 1] = math.floor(b.tokens / 1000000)
    reply[#reply + 1] = b.retry
    reply[#reply + 1] = ms_to_fill(b.capacity - b.tokens, b.rate)
  end
  return reply
end
