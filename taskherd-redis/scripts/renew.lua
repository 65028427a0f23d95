-- renew.lua: extends the leases of one process's holders and waiters, in one call.
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1]  lease in milliseconds (new expiry = the server's TIME + lease)
-- ARGV[2]  how many of the ids that follow are holders (the rest are waiters)
-- ARGV[3..] ids of holders, then ids of waiters
--
-- Returns the ids that are gone (their lease was lost): a holder that is not a holder any
-- more (reaped, or, after a failover that lost its grant, queued as a waiter again: renewed as
-- such, its work would run uncounted while Redis could grant the id again), and a waiter that
-- is neither a waiter nor a holder (a waiter granted since is renewed as a holder).
-- Only the ids named are touched: nobody's traffic extends anyone else's lease.

local expiry = now_ms() + tonumber(ARGV[1])
local holders = tonumber(ARGV[2])
local gone = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', K_H, id) then
    redis.call('ZADD', K_H, 'XX', expiry, id)
  elseif i > 2 + holders and redis.call('ZSCORE', K_WL, id) then
    redis.call('ZADD', K_WL, 'XX', expiry, id)
  else
    gone[#gone + 1] = id
  end
end
return gone
