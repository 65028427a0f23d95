-- limits.lua: a batch of limit changes applied as one (invariant 9): every value first, then
-- the take-back of reservations above lowered limits (youngest waiter first), then one pump.
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1]  how many expired holders and waiters to reap first (at most)
-- ARGV[2]  `set`; `restore`: only into a pool whose limits were never set or were lost with
--          Redis's data (neither `cfg` nor `lim`; `lim` alone: set by a release that did not
--          mark `cfg`), else nothing is changed; or `fill`: each limit only where the pool has
--          none (the total, the default, a group's explicit limit)
-- ARGV[3]  the generation of the pool's limits the caller expects (see lib.lua), `0` for any:
--          if the pool's is another (or it has none), nothing is changed (the caller catches
--          up first: writes its limits to restore, then this batch on top)
-- ARGV[4]  the generation to start if the pool has none, or an earlier release's (1): a
--          random number from 2 to below 2^52
-- ARGV[5]  the total's limit: `-` unchanged, `` (empty) none, or a number
-- ARGV[6]  the default limit: same encoding
-- ARGV[7..] pairs: a group segment, then its explicit limit (`` clears it, or a number); each
--          segment at most once
--
-- Marks the pool's limits set (`cfg`: a new generation if it had none, or an earlier
-- release's, see lib.lua). Returns two integers: the number of waiters granted, or -1 if in
-- `restore` mode the pool had limits (no limit changed; a pool of an earlier release gets a
-- generation, and expired leases are reaped), or -2 if the pool's generation is not the one
-- expected (nothing changed); then the generation of the pool's limits after the call.

local gen = limits_gen()
local expected = tonumber(ARGV[3])
if expected ~= 0 and gen ~= expected then return { -2, gen } end
local now = now_ms()
reap(now, tonumber(ARGV[1]))
local configured = gen ~= 0
if gen <= 1 then
  -- No generation yet, or an earlier release's (`cfg` 1, or `lim` alone, which it may write
  -- again after a loss): a new one.
  gen = tonumber(ARGV[4])
  redis.call('SET', K_CFG, string.format('%.0f', gen))
end
if ARGV[2] == 'restore' and configured then return { -1, gen } end

local function set(field, v)
  if v == '' then redis.call('HDEL', K_LIM, field) else redis.call('HSET', K_LIM, field, v) end
end
-- Whether a field is to be written in this mode.
local fill = ARGV[2] == 'fill'
local function wanted(field) return not fill or redis.call('HEXISTS', K_LIM, field) == 0 end

if ARGV[5] ~= '-' and wanted('t') then set('t', ARGV[5]) end
local default_changed = false
if ARGV[6] ~= '-' and wanted('d') then
  local old = redis.call('HGET', K_LIM, 'd') or ''
  if old ~= ARGV[6] then
    set('d', ARGV[6])
    default_changed = true
  end
end

-- Values. A group that exists is "touched" (its room may change); one that does not exist
-- gets an entry only for an explicit limit (nothing to pump there).
local touched = {}
for i = 7, #ARGV - 1, 2 do
  local seg, v = ARGV[i], ARGV[i + 1]
  if wanted('g:' .. seg) then
    local exists = not gidle(seg)
    set('g:' .. seg, v)
    if exists then touched[#touched + 1] = seg end
  end
end

local function over_limit(seg)
  local l = glimit(seg)
  if l == nil then return 0 end
  local r = gres(seg)
  local excess = grun(seg) + r - l
  if excess < 0 then excess = 0 end
  if excess > r then excess = r end
  return excess
end

-- Take back reservations above every lowered limit, before any room is handed out.
local over, n_over = {}, 0
if default_changed then
  local fields = redis.call('HKEYS', K_RES)
  for _, f in ipairs(fields) do
    local seg = string.sub(f, 3)
    if redis.call('HEXISTS', K_LIM, 'g:' .. seg) == 0 then
      local e = over_limit(seg)
      if e > 0 then over[seg] = e n_over = n_over + 1 end
    end
  end
end
for _, seg in ipairs(touched) do
  if over[seg] == nil then
    local e = over_limit(seg)
    if e > 0 then over[seg] = e n_over = n_over + 1 end
  end
end
if n_over > 0 then
  -- Every reserved place in those groups, youngest waiter first (scan of the waiters).
  local holders = {}
  for _, id in ipairs(redis.call('ZRANGE', K_WL, 0, -1)) do
    local w = wget(id)
    if w and w.ph == 'w' then
      for i, seg in ipairs(w.g) do
        if over[seg] and string.sub(w.pl, i, i) == 'r' then
          holders[#holders + 1] = { t = w.t, id = id, i = i, seg = seg }
        end
      end
    end
  end
  table.sort(holders, function(a, b) return a.t > b.t end)
  for _, hd in ipairs(holders) do
    if over[hd.seg] > 0 then
      over[hd.seg] = over[hd.seg] - 1
      local w = wget(hd.id)
      add(K_RES, 'g:' .. hd.seg, -1)
      setplace(w, hd.i, 'q')
      -- Re-queued with its ticket: ahead of every younger waiter (it keeps its turn).
      redis.call('ZADD', qkey(hd.seg), w.t, w.id)
      redis.call('SADD', K_QG, hd.seg)
      w.m = w.m + 1
      if w.tp == 'q' then
        redis.call('ZREM', K_QT, w.id)
        w.tp = 'o'
      end
      wput(w)
    end
  end
end

-- Then hand out the room there is: the total, every group under the default, the touched.
local granted = {}
tpump(granted)
if default_changed then
  for _, seg in ipairs(redis.call('SMEMBERS', K_QG)) do
    if redis.call('HEXISTS', K_LIM, 'g:' .. seg) == 0 then gpump(seg, granted) end
  end
end
for _, seg in ipairs(touched) do
  gpump(seg, granted)
  reclaim(seg)
end
local before = redis.call('ZCARD', K_WL)
grant_all(granted, now)
return { before - redis.call('ZCARD', K_WL), gen }
