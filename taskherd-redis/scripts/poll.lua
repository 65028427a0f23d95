-- poll.lua: the state of waiters; collects the granted ones.
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1..] waiter ids
--
-- Returns one status per id, in order: `g` granted (its waiter record is deleted: it is a
-- holder now, under the same id), `w` still waiting, `x` gone (its lease expired, or it was
-- released), `e` unreadable (its record is not a hash: something else wrote that key; read
-- with `pcall`, so that one such key does not fail the poll of every other waiter).

local out = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  local ph = redis.pcall('HGET', wkey(id), 'ph')
  if type(ph) == 'table' and ph.err then
    out[i] = 'e'
  elseif ph == 'w' then
    out[i] = 'w'
  elseif redis.call('ZSCORE', K_H, id) then
    redis.call('DEL', wkey(id))
    out[i] = 'g'
  else
    redis.call('DEL', wkey(id))
    out[i] = 'x'
  end
end
return out
