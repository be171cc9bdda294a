-- settle.lua: a draining job's batch is decided (its rows committed in PostgreSQL): take its
-- orders off the pending list and fs:admitted in one step, give back the units of orders it
-- rejected as failed, and end the drain when nothing is left. Only the job the product's flag
-- names may settle (a job finding no flag takes it: the lease of a drain whose worker died
-- has lapsed), so a stale run of a draining job (one whose lease lapsed and another job took
-- the product, or one RQ retried while it still ran) touches nothing: its orders stay pending
-- and their owner finds them decided. Called with no ids, it claims or renews the lease (and
-- ends a drain with nothing left): what a draining job does before its first batch.
--
-- Key names are built by service/core/keys.py; the caller passes every key this script touches.
--
-- KEYS[1]     the product's undecided orders, fs:{p:<id>}:pending (entries start with the order id)
-- KEYS[2]     admitted orders not yet decided, fs:admitted
-- KEYS[3]     the product's draining job, fs:{p:<id>}:drain
-- KEYS[4]     the product's stock gate, fs:{p:<id>}:stock
-- ARGV[1]     the settling job's id
-- ARGV[2]     units to give back to the gate (orders rejected as failed), 0 for none
-- ARGV[3]     the lease, ms: the flag lapses unless its job settles again within it
-- ARGV[4..]   the ids of the batch's orders, in the order they sit at the head of the list
-- returns     {settled, left}: orders taken off the list (-1: this job does not own the
--             product, nothing was touched), then entries left; left 0 means the drain ended
--             (the flag is deleted: the next admission queues a new draining job)
--
-- The entries are compared with the ids before they are taken, so only entries this batch
-- applied leave the list. The list has no TTL: it is the queue, emptied by the drain; the flag
-- lives for its lease, renewed at every settle, and is deleted in the step that finds the list
-- empty.

local owner = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[1] then
  return {-1, redis.call('LLEN', KEYS[1])}
end
local count = #ARGV - 3
local settled = 0
if count > 0 then
  local head = redis.call('LRANGE', KEYS[1], 0, count - 1)
  while settled < #head and string.sub(head[settled + 1], 1, 36) == ARGV[settled + 4] do
    settled = settled + 1
  end
  if settled > 0 then
    redis.call('LTRIM', KEYS[1], settled, -1)
    redis.call('ZREM', KEYS[2], unpack(ARGV, 4, settled + 3))
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('INCRBY', KEYS[4], tonumber(ARGV[2]))
end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], ARGV[1], 'PX', tonumber(ARGV[3]))
end
return {settled, left}
