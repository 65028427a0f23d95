-- renew.lua: extends the leases of one process's holders and waiters, in one call.
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1]  lease in milliseconds (new expiry = the server's TIME + lease)
-- ARGV[2..] ids of holders and waiters
--
-- Returns the ids that are gone (not a holder nor a waiter any more: their lease was lost).
-- Only the ids named are touched: nobody's traffic extends anyone else's lease.

local expiry = now_ms() + tonumber(ARGV[1])
local gone = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', K_H, id) then
    redis.call('ZADD', K_H, 'XX', expiry, id)
  elseif redis.call('ZSCORE', K_WL, id) then
    redis.call('ZADD', K_WL, 'XX', expiry, id)
  else
    gone[#gone + 1] = id
  end
end
return gone
