-- reserve_stock.lua: take units from a product's stock gate, all or none.
--
-- KEYS[1]  stock gate, e.g. fs:{p:1}:stock; units not yet promised to an admitted order
-- ARGV[1]  quantity wanted (>= 1)
-- returns  {1, units left} when reserved; {0, units left} when fewer than wanted remain;
--          {-1, 0} when the gate is missing and must be rebuilt from the database
--
-- The gate is the fast "no" in front of PostgreSQL, not the truth: the worker's
-- optimistic-lock update still decides every order.

local left = redis.call('GET', KEYS[1])
if not left then
  return {-1, 0}
end
left = tonumber(left)
local wanted = tonumber(ARGV[1])
if left < wanted then
  return {0, left}
end
return {1, redis.call('DECRBY', KEYS[1], wanted)}
