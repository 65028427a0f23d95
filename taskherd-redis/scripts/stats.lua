-- stats.lua: statistics of the total and of some groups, read in one consistent snapshot.
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1..] group segments
--
-- Returns, for the total then each segment in order, a list of seven strings:
-- running, waiting, reserved, limit (`` for none), admitted, rejected, peak.
-- The total's waiting counts every waiter not granted; a group's counts its queued and
-- reserved waiters. Limits are the ones in force (explicit, else the default).

local function s(v) if v == nil then return '' end return tostring(v) end
local out = {}
local function row(field, running, waiting, reserved, limit)
  return { s(running), s(waiting), s(reserved), s(limit),
           s(num(redis.call('HGET', K_ST, 'a:' .. field))),
           s(num(redis.call('HGET', K_ST, 'x:' .. field))),
           s(num(redis.call('HGET', K_ST, 'p:' .. field))) }
end
out[1] = row('t', num(redis.call('HGET', K_RUN, 't')), redis.call('ZCARD', K_WL), 0, tlimit())
for i = 1, #ARGV do
  local seg = ARGV[i]
  local r = gres(seg)
  out[i + 1] = row('g:' .. seg, grun(seg), redis.call('ZCARD', qkey(seg)) + r, r, glimit(seg))
end
return out
