-- stats.lua: statistics of the total and of some groups, read in one consistent snapshot.
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1..] group segments
--
-- Returns, for the total then each segment in order, a list of seven strings:
-- running, waiting, reserved, limit (`` for none), admitted, rejected, peak; then a last
-- list of one string, the generation of the pool's limits (see lib.lua; `0` if they are not
-- set: a process that has seen them set fails the read, the limits above would say "none").
-- The total's waiting counts every waiter not granted; a group's counts its queued and
-- reserved waiters. Limits are the ones in force (explicit, else the default).

-- Values stored in Redis (counts, limits) are returned as stored, not through a Lua number:
-- `tostring` of a number of 15 digits or more gives `1e+14`, which a client cannot read
-- back (a limit of `usize::MAX` included). Numbers counted here are formatted in full.
local function s(v)
  if v == nil or v == false then return '' end
  if type(v) == 'number' then return string.format('%.0f', v) end
  return v
end
local out = {}
local function row(field, running, waiting, reserved, limit)
  return { s(running), s(waiting), s(reserved), s(limit),
           s(redis.call('HGET', K_ST, 'a:' .. field)),
           s(redis.call('HGET', K_ST, 'x:' .. field)),
           s(redis.call('HGET', K_ST, 'p:' .. field)) }
end
out[1] = row('t', redis.call('HGET', K_RUN, 't'), redis.call('ZCARD', K_WL), 0,
  redis.call('HGET', K_LIM, 't'))
for i = 1, #ARGV do
  local seg = ARGV[i]
  local r = gres(seg)
  local limit = redis.call('HGET', K_LIM, 'g:' .. seg)
  if not limit then limit = redis.call('HGET', K_LIM, 'd') end
  out[i + 1] = row('g:' .. seg, redis.call('HGET', K_RUN, 'g:' .. seg),
    redis.call('ZCARD', qkey(seg)) + r, r, limit)
end
out[#out + 1] = { string.format('%.0f', limits_gen()) }
return out
