-- release.lua: gives back holders and cancels waiters, by id. Idempotent: an unknown id (already
-- released, reaped, or never admitted) is a no-op.
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1]  how many expired waiters to cancel first (at most)
-- ARGV[2..] ids of holders or waiters (a granted waiter not collected yet is released)
--
-- Expired waiters are cancelled first (see `reap_waiters_before_release`). Each release then
-- pumps like the in-process pool: the total first, then each group, then the waiters made
-- ready are granted oldest ticket first.
-- Returns the number of ids that were live.

-- The clock is read only if someone waits.
local now = reap_waiters_before_release(nil, tonumber(ARGV[1]))
local n = 0
for i = 2, #ARGV do n = n + release_id(ARGV[i], now) end
return n
