-- reap.lua: releases holders and cancels waiters whose lease expired (by the server's clock).
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1]  at most this many expired holders, and as many expired waiters, per call
--
-- Returns the number of ids released or cancelled.

return reap(now_ms(), tonumber(ARGV[1]))
