-- refund_buckets.lua: give back what token_buckets.lua charged for a request that the main
-- Redis then refused (sold out, sale not open or closed, over the per-customer limit...), when
-- the buckets live on a Redis of their own and admit.lua cannot check them in its own call.
-- (Runs with buckets.lib.lua prepended.)
--
-- KEYS[1..n]  the bucket hashes of the charged call, all under one {hash tag}
-- ARGV        as token_buckets.lua: the caller's time in µs or "", then capacity, refill
--             (micro-tokens per second) and cost of each bucket, as charged
-- returns     {1, now µs, then for each key: allowed (1|0), remaining whole tokens, ms until
--              its cost fits (0 when it fits), ms until full}: the buckets after the refund
--
-- Refilled to now first, then topped up by each cost, never past capacity: the buckets end as
-- if the request had never been charged, whatever other requests did in between.

local now, app_clock = bucket_clock(ARGV[1])
local _, buckets = bucket_check(KEYS, 1, ARGV, 2, #KEYS, now, app_clock)
bucket_refund(buckets)
return bucket_reply({1, now}, buckets)
