-- token_buckets.lua: check every limit of one request, and charge all of them or none.
-- (Runs with buckets.lib.lua prepended: the bucket format and clock rules are there.)
--
-- KEYS[1..n]  bucket hashes, fs:rl:{<route>:<identity>}:<limit> or fs:rl:{<route>}:<limit>:<identity>
--             (service/core/keys.py), all under one {hash tag} (one Redis Cluster slot)
-- ARGV[1]     the caller's time in µs, or "" to use Redis TIME (the default)
-- ARGV[3i-1], ARGV[3i], ARGV[3i+1]  for KEYS[i]: capacity (whole tokens >= 1),
--             refill (micro-tokens per second >= 1), cost (whole tokens >= 0; 0 only reads;
--             -c: a shadow limit of cost c, which never denies: see buckets.lib.lua)
-- returns     {admitted (1|0), now µs, then for each key: allowed (1|0), remaining whole tokens,
--              ms until its cost fits (0 when it fits), ms until full}
--
-- All or nothing: when any enforced bucket lacks its cost, none is charged. Every reply value is an
-- integer (Lua floats are truncated in replies).

local now, app_clock = bucket_clock(ARGV[1])
local admitted, buckets = bucket_check(KEYS, 1, ARGV, 2, #KEYS, now, app_clock)
if admitted == 1 then
  bucket_charge(buckets)
end
return bucket_reply({admitted, now}, buckets)
