-- admit.lua: one admission, all or nothing, across the total and every named group.
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1]  mode: `try` (refuse when full) or `wait` (become a waiter when full)
-- ARGV[2]  the new holder's id (unique in the fleet: the process id and a counter)
-- ARGV[3]  lease in milliseconds (expiry = the server's TIME + lease)
-- ARGV[4]  the calling process's id (whose `n:<proc>` list is told when a waiter is granted)
-- ARGV[5]  how many expired holders and waiters to reap first (at most)
-- ARGV[6..] the group segments, deduplicated, in the caller's order
--
-- Returns {1} admitted (the id holds a lease), {0, i} refused, the first full group being the
-- total (i = 0) or the i-th segment (try mode only; counted in the statistics), or {2} waiting
-- (the id is a waiter, leased; poll.lua or the `n:<proc>` list tells when it is granted).
-- Repeating a call with an id that already exists returns its state and changes nothing.

local mode, id, lease, owner = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
reap(now, tonumber(ARGV[5]))

if redis.call('ZSCORE', K_H, id) then return { 1 } end
local existing = wget(id)
if existing then
  if existing.ph == 'g' then return { 1 } end
  return { 2 }
end

local segs = {}
for i = 6, #ARGV do segs[#segs + 1] = ARGV[i] end

-- Try: the total first, then each group in the caller's order. The limits and counts of every
-- group are read in three commands (one per hash), not three per group.
local names = { 't' }
for i, seg in ipairs(segs) do names[i + 1] = 'g:' .. seg end
local limits = redis.call('HMGET', K_LIM, 'd', unpack(names))
local running = redis.call('HMGET', K_RUN, unpack(names))
local reserved = redis.call('HMGET', K_RES, unpack(names))
local default = limits[1]
local full = nil
-- (No reservation of the total exists between transitions: T.tres is 0 here.)
if limits[2] and num(running[1]) >= tonumber(limits[2]) then
  full = 0
else
  for i = 1, #segs do
    local limit = limits[i + 2] or default
    if limit and num(running[i + 1]) + num(reserved[i + 1]) >= tonumber(limit) then
      full = i
      break
    end
  end
end

if full == nil then
  -- Count in the total and every group; peaks are read and written once for all of them.
  local peaks = {}
  for i, name in ipairs(names) do peaks[i] = 'p:' .. name end
  local old_peaks = redis.call('HMGET', K_ST, unpack(peaks))
  local new_peaks = {}
  for i, name in ipairs(names) do
    local r = redis.call('HINCRBY', K_RUN, name, 1)
    redis.call('HINCRBY', K_ST, 'a:' .. name, 1)
    if r > num(old_peaks[i]) then
      new_peaks[#new_peaks + 1] = peaks[i]
      new_peaks[#new_peaks + 1] = r
    end
  end
  if #new_peaks > 0 then redis.call('HSET', K_ST, unpack(new_peaks)) end
  redis.call('ZADD', K_H, now + lease, id)
  redis.call('HSET', K_HG, id, table.concat(segs, '\n'))
  return { 1 }
end

if mode ~= 'wait' then
  -- A refusal counts in the total, and in the group that refused if it exists.
  redis.call('HINCRBY', K_ST, 'x:t', 1)
  if full > 0 and not gidle(segs[full]) then
    redis.call('HINCRBY', K_ST, 'x:g:' .. segs[full], 1)
  end
  return { 0, full }
end

-- Wait: join every named group (a slot if it has room and nobody queues, else the queue).
local ticket = redis.call('INCR', K_SEQ)
local w = { id = id, t = ticket, g = segs, gs = table.concat(segs, '\n'), pl = '', m = #segs,
            tp = 'o', ph = 'w', o = owner, ls = lease }
local places = {}
for i, seg in ipairs(segs) do
  if redis.call('EXISTS', qkey(seg)) == 0 and ghas_room(seg) then
    redis.call('HINCRBY', K_RES, 'g:' .. seg, 1)
    places[i] = 'r'
    w.m = w.m - 1
  else
    redis.call('ZADD', qkey(seg), ticket, id)
    redis.call('SADD', K_QG, seg)
    places[i] = 'q'
  end
end
w.pl = table.concat(places)
redis.call('HSET', wkey(id), 't', ticket, 'g', w.gs, 'pl', w.pl, 'm', w.m, 'tp', 'o', 'ph', 'w',
  'o', owner, 'ls', lease)
redis.call('ZADD', K_WL, now + lease, id)
if w.m == 0 then tjoin(w) end
if w.m == 0 and w.tp == 'r' then
  -- Not reached (the try above would have admitted); handled rather than assumed.
  grant(w, now)
  redis.call('DEL', wkey(id))
  redis.call('LREM', P .. 'n:' .. owner, 0, id)
  return { 1 }
end
return { 2 }
