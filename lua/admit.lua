-- admit.lua: one POST /buy, decided and queued in one atomic step on the main Redis.
-- (Runs with buckets.lib.lua prepended.) "Yes" and "queued" are the same step: an API
-- process that dies before or after this call can neither leak a unit nor drop an order.
--
-- Key names are built by service/core/keys.py; the caller passes every key this script touches.
--
-- KEYS[1]     stock gate, fs:{p:<id>}:stock: units not yet promised
-- KEYS[2]     idempotency record, fs:idem:{<digest>} of the customer and its key (any unused key
--             when there is none)
-- KEYS[3]     a draining job's hash, rq:job:drain-<id>[_<lane>]-<order_id>, written only when
--             the order's lane has no draining job (KEYS[9] absent)
-- KEYS[4]     the RQ queue list, rq:queue:orders
-- KEYS[5]     the product's sale, fs:{p:<id>}:sale: opens_ms, closes_ms, per_customer (0 = none)
-- KEYS[6]     units this customer was admitted for, fs:{p:<id>}:bought:<customer_digest>
-- KEYS[7]     admitted orders not yet decided, fs:admitted: order id scored by admission ms
-- KEYS[8]     the undecided orders of the order's lane of the product, fs:{p:<id>}:pending[:<lane>]:
--             one compact entry each, oldest first, the queue the lane's draining job applies in
--             batches (the caller draws the lane from the order id)
-- KEYS[9]     the lane's draining job, fs:{p:<id>}:drain[:<lane>]: the id of the one queued or
--             running
-- KEYS[10..]  the route's rate-limit buckets (see token_buckets.lua), when they live on this Redis
--             (else none)
-- ARGV[1]     the caller's time in µs, or "" for Redis TIME (see buckets.lib.lua)
-- ARGV[2]     quantity (>= 1)
-- ARGV[3]     order id
-- ARGV[4]     the id of the draining job of KEYS[3] (what the queue list holds)
-- ARGV[5]     request fingerprint for the idempotency key, or "" when the request has none
-- ARGV[6]     seconds an idempotency record lives
-- ARGV[7]     seconds a customer's purchase count lives
-- ARGV[8]     n, the number of buckets in KEYS[10..]
-- ARGV[9..8+3n]   capacity, refill (micro-tokens/s), cost of each bucket
-- ARGV[9+3n]      the order's pending entry (service/sale/order_jobs.py: order_entry)
-- ARGV[10+3n..]   the draining job's hash, field, value, ... in RQ's own format
--                 (service/sale/order_jobs.py builds it), written only when KEYS[9] is absent
-- returns     {outcome, now µs, detail, then per bucket: allowed, remaining, retry ms, full ms}
--             outcome 1 admitted (detail: units left), 0 rate-limited, 2 not enough stock
--             (detail: units left), 3 gate missing (rebuild it from PostgreSQL, then retry),
--             4 idempotent replay (detail: the first order's id), 5 idempotency key reused with
--             a different request, 6 sale not open yet (detail: opens, ms since the epoch),
--             7 sale closed (detail: closed, ms), 8 over the per-customer limit (detail: units
--             this customer may still buy)
--
-- Checks run before anything is written, so a "no" charges nothing: no tokens, no units.
-- A replay is answered before the limits are enforced, so a client retrying a request it
-- already got a 202 for is not charged twice; its reply still reports the buckets (read, not
-- charged), as every reply does: its RateLimit fields are the same whichever Redis holds them.

local now, app_clock = bucket_clock(ARGV[1])
local quantity = tonumber(ARGV[2])
local fingerprint = ARGV[5]
local limits = tonumber(ARGV[8])

local admitted, buckets = bucket_check(KEYS, 10, ARGV, 9, limits, now, app_clock)

if fingerprint ~= '' then
  local earlier = redis.call('HMGET', KEYS[2], 'fp', 'order')
  if earlier[1] then
    if earlier[1] == fingerprint then
      return bucket_reply({4, now, earlier[2]}, buckets)
    end
    return bucket_reply({5, now, earlier[2]}, buckets)
  end
end

if admitted == 0 then
  return bucket_reply({0, now, 0}, buckets)
end

local sale = redis.call('HMGET', KEYS[5], 'opens_ms', 'closes_ms', 'per_customer')
local now_ms = math.floor(now / 1000)
if sale[1] and now_ms < tonumber(sale[1]) then
  return bucket_reply({6, now, tonumber(sale[1])}, buckets)
end
if sale[2] and now_ms >= tonumber(sale[2]) then
  return bucket_reply({7, now, tonumber(sale[2])}, buckets)
end

local left = redis.call('GET', KEYS[1])
if not left then
  return bucket_reply({3, now, 0}, buckets)
end
left = tonumber(left)
if left < quantity then
  return bucket_reply({2, now, left}, buckets)
end

local per_customer = tonumber(sale[3] or 0)
if per_customer > 0 then
  local bought = tonumber(redis.call('GET', KEYS[6]) or 0)
  if bought + quantity > per_customer then
    return bucket_reply({8, now, math.max(per_customer - bought, 0)}, buckets)
  end
  redis.call('INCRBY', KEYS[6], quantity)
  redis.call('EXPIRE', KEYS[6], tonumber(ARGV[7]))
end

bucket_charge(buckets)
left = redis.call('DECRBY', KEYS[1], quantity)
redis.call('RPUSH', KEYS[8], ARGV[9 + 3 * limits])
redis.call('ZADD', KEYS[7], now_ms, ARGV[3])
-- One draining job per lane: queue one unless the lane has one. Its job ends only in
-- a step that finds the pending list empty and deletes the flag (settle.lua), so this entry
-- is either seen by the running drain or finds the flag gone and queues a new one. The flag
-- of a queued job has no TTL (RQ's list keeps the job); a running drain holds it on a lease
-- its worker renews every third of it and at every batch (settle.lua), so the flag of a drain
-- whose worker died lapses and the next order in the lane queues a new one.
if redis.call('SET', KEYS[9], ARGV[4], 'NX') then
  redis.call('HSET', KEYS[3], unpack(ARGV, 10 + 3 * limits))
  redis.call('RPUSH', KEYS[4], ARGV[4])
end
if fingerprint ~= '' then
  redis.call('HSET', KEYS[2], 'fp', fingerprint, 'order', ARGV[3])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
end
return bucket_reply({1, now, left}, buckets)
