-- admit.lua: admissions, each all or nothing across the total and every named group, in
-- the order given (several callers of one process share a call when they come together).
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1]  lease in milliseconds (expiry = the server's TIME + lease)
-- ARGV[2]  the calling process's id (whose `n:<proc>` list is told when a waiter is granted)
-- ARGV[3]  how many expired holders and waiters to reap (at most) when a group is full, and
--          expired waiters before the releases
-- ARGV[4]  the generation of the pool's limits the calling process has seen (see lib.lua), `0`
--          if it has seen none
-- ARGV[5]  r, how many ids to release first (holders and waiters this process gave back
--          since its last call, as release.lua releases them: what it gave back is free for
--          the admissions that follow, as in the in-process pool)
-- ARGV[6..5+r] those ids
-- ARGV[6+r..] the admissions, one after the other, each as:
--          mode: `try` (refuse when full) or `wait` (become a waiter when full);
--          the new holder's id (unique in the fleet: the process id and a counter);
--          n, the number of group segments; then the n segments, deduplicated, in the
--          caller's order
--
-- Returns two integers per admission, in order: 1, 0 admitted (the id holds a lease); 0, i
-- refused, the first full group being the total (i = 0) or the i-th segment (try mode only;
-- counted in the statistics); 2, 0 waiting (the id is a waiter, leased; poll.lua or the
-- `n:<proc>` list tells when it is granted). Then one more integer: the generation of the
-- pool's limits (0 if they are not set).
-- If the caller has seen the limits set (ARGV[4]) and `cfg` and `lim` are gone, Redis has lost
-- the pool's data and with it the limits: the ids are released, nothing is admitted, and the
-- reply is the single integer -1 (fail closed: an admission into a pool without its limits
-- would exceed them, a whole fleet's queue at once). If they are set, but in another
-- generation than the caller's, they were lost and written again since, perhaps only some
-- of them: the ids are released, nothing is admitted, and the reply is -2 and that
-- generation (the caller writes the limits it knows where they are missing first, or takes
-- the pool as it is).
-- Repeating an admission with an id that already exists returns its state and changes nothing
-- (a try-mode admission checks only for a holder: only wait mode makes waiters, under fresh
-- ids).

local lease, owner, reap_max = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local now = now_ms()

-- Reaps at most once per call (a refusal's reap found everything there was to find).
local reaped = false
local function reap_once()
  if reaped then return 0 end
  reaped = true
  return reap(now, reap_max)
end

local function admit(mode, id, segs)
  if redis.call('ZSCORE', K_H, id) then return 1, 0 end
  -- Only a wait-mode call makes a waiter: a try-mode id (always fresh) cannot name one.
  if mode == 'wait' then
    -- Strict: an unreadable record at this id fails the call here, before this admission
    -- writes anything (read as "none", the HSET below would fail after its reservations and
    -- queue places). The releases, and the admissions before it in this call, are made
    -- already: their callers get the error, and what they hold is reaped when its lease
    -- ends.
    local existing = wget(id, true)
    if existing then
      if existing.ph == 'g' then return 1, 0 end
      return 2, 0
    end
  end

  -- The fields of the total (`t`) and of every group (`g:<seg>`), the total first.
  local names = { 't' }
  for i, seg in ipairs(segs) do names[i + 1] = 'g:' .. seg end
  -- The fields of the limits to read: the default, then the names.
  local limit_fields = { 'd', 't' }
  for i = 2, #names do limit_fields[i + 1] = names[i] end

  -- Counts the admission in the total, then in each group in the caller's order, checking
  -- each against its limit as it goes (counting first spares reading and parsing the counts:
  -- HINCRBY answers with a number). At the first that has no room, takes back what it
  -- counted and returns that place (0 the total, i the i-th segment) and the group's count
  -- before the call; returns nil and the new counts when all had room. The limits and the
  -- groups' reservations are read in one command per hash; the total has no reservation
  -- between transitions (T.tres is 0 here).
  local limits, reserved
  local function take()
    limits = call_chunked('HMGET', K_LIM, limit_fields)
    reserved = call_chunked('HMGET', K_RES, names)
    local default = limits[1] and tonumber(limits[1])
    local counts = {}
    for i, name in ipairs(names) do
      local r = redis.call('HINCRBY', K_RUN, name, 1)
      local limit
      if i == 1 then
        limit = limits[2] and tonumber(limits[2])
      elseif limits[i + 1] then
        limit = tonumber(limits[i + 1])
      else
        limit = default
      end
      if limit and r + num(reserved[i]) > limit then
        for j = 1, i do add(K_RUN, names[j], -1) end
        return i - 1, r - 1
      end
      counts[i] = r
    end
    return nil, counts
  end

  -- `got`: the new counts if admitted, else the full group's count before the call.
  local full, got = take()
  -- Expired leases are reaped by every process on a timer; an admission that finds a group
  -- full reaps first itself, so that it never waits or is refused for a slot a crashed holder
  -- left. (With room, reaping first would change nothing: it frees slots and hands them to
  -- queued waiters, and a group with queued waiters has no room.)
  if full ~= nil and reap_once() > 0 then full, got = take() end

  if full == nil then
    -- Statistics: one more admitted in the total and every group; a peak read and written
    -- only where the count passed it.
    local peaks = {}
    for i, name in ipairs(names) do
      redis.call('HINCRBY', K_ST, 'a:' .. name, 1)
      peaks[i] = 'p:' .. name
    end
    local old = call_chunked('HMGET', K_ST, peaks)
    local new = {}
    for i, r in ipairs(got) do
      if not old[i] or r > tonumber(old[i]) then
        new[#new + 1] = peaks[i]
        new[#new + 1] = r
      end
    end
    call_chunked('HSET', K_ST, new)
    redis.call('ZADD', K_H, now + lease, id)
    redis.call('HSET', K_HG, id, table.concat(segs, '\n'))
    return 1, 0
  end

  if mode ~= 'wait' then
    -- A refusal counts in the total, and in the group that refused if it exists (has running
    -- admissions, reservations, an explicit limit or a queue).
    redis.call('HINCRBY', K_ST, 'x:t', 1)
    if full > 0 then
      local seg = segs[full]
      if got > 0 or reserved[full + 1] or limits[full + 2]
          or redis.call('EXISTS', qkey(seg)) == 1 then
        redis.call('HINCRBY', K_ST, 'x:g:' .. seg, 1)
      end
    end
    return 0, full
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
    return 1, 0
  end
  return 2, 0
end

local released = tonumber(ARGV[5])
if released > 0 then reap_waiters_before_release(now, reap_max) end
for j = 1, released do release_id(ARGV[5 + j], now) end

-- `lim` alone (limits set by a release that did not mark `cfg`) is generation 1.
local gen, seen = limits_gen(), tonumber(ARGV[4])
if seen ~= 0 and gen == 0 then return { -1 } end
if seen ~= 0 and gen ~= seen then return { -2, gen } end

local out = {}
local i = 6 + released
while i <= #ARGV do
  local mode, id, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local segs = {}
  for j = 1, n do segs[j] = ARGV[i + 2 + j] end
  i = i + 3 + n
  local code, at = admit(mode, id, segs)
  out[#out + 1] = code
  out[#out + 1] = at
end
out[#out + 1] = gen
return out
