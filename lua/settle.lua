-- settle.lua: a draining job's batch is decided (its rows committed in PostgreSQL): take its
-- orders off the pending list and fs:admitted in one step, give back the units of the orders
-- rejected as failed among those it takes off (in the same step, so units come back exactly
-- once, with the entry, whichever job settles it), and end the drain when nothing is left. Only the job the lane's flag
-- names may settle (a job finding no flag takes it: the lease of a drain whose worker died
-- has lapsed), so a stale run of a draining job (one whose lease lapsed and another job took
-- the lane, or one RQ retried while it still ran) touches nothing: its orders stay pending
-- and their owner finds them decided. Called with no ids, it claims or renews the lease (and
-- ends a drain with nothing left): what a draining job does before its first batch.
--
-- Key names are built by service/core/keys.py; the caller passes every key this script touches.
--
-- KEYS[1]     one lane of the product's undecided orders, fs:{p:<id>}:pending[:<lane>] (entries
--             start with the order id)
-- KEYS[2]     admitted orders not yet decided, fs:admitted
-- KEYS[3]     the lane's draining job, fs:{p:<id>}:drain[:<lane>]
-- KEYS[4]     the product's stock gate, fs:{p:<id>}:stock
-- ARGV[1]     the settling job's id
-- ARGV[2]     the lease, ms: the flag lapses unless its job settles again within it
-- ARGV[3..]   pairs, in the order the batch's orders sit at the head of the list: an order's
--             id, then the units to give back to the gate if this call takes it off the list
--             (its quantity when it was rejected as failed, else 0)
-- returns     {settled, left, given_back}: orders taken off the list (-1: this job does not
--             own the lane, nothing was touched), entries left (0: the drain ended, the
--             flag is deleted and the next admission queues a new draining job), units given
--             back to the gate
--
-- The entries are compared with the ids before they are taken, so only entries this batch
-- applied leave the list. The list has no TTL: it is the queue, emptied by the drain; the flag
-- lives for its lease, renewed at every settle, and is deleted in the step that finds the list
-- empty.

local owner = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[1] then
  return {-1, redis.call('LLEN', KEYS[1]), 0}
end
local count = (#ARGV - 2) / 2
local settled = 0
local given_back = 0
if count > 0 then
  local head = redis.call('LRANGE', KEYS[1], 0, count - 1)
  local ids = {}
  while settled < #head and string.sub(head[settled + 1], 1, 36) == ARGV[2 * settled + 3] do
    ids[#ids + 1] = ARGV[2 * settled + 3]
    given_back = given_back + tonumber(ARGV[2 * settled + 4])
    settled = settled + 1
  end
  if settled > 0 then
    redis.call('LTRIM', KEYS[1], settled, -1)
    redis.call('ZREM', KEYS[2], unpack(ids))
  end
  if given_back > 0 then
    redis.call('INCRBY', KEYS[4], given_back)
  end
end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], ARGV[1], 'PX', tonumber(ARGV[2]))
end
return {settled, left, given_back}
