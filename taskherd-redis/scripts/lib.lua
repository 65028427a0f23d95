-- lib.lua: the shared part of every script (prepended to each one at compile time, so every
-- script is self-contained for EVALSHA). It defines no entry point and reads no ARGV.
--
-- KEYS[1]: the pool's prefix `taskherd:{<pool name>}:`. Every key a script touches is this
-- prefix plus a suffix, so all keys of one pool share one hash tag: each script is legal on a
-- Redis Cluster, and one pool lives on one shard.
--
-- The data model (suffixes of the prefix):
--   lim        HASH  t = total limit, d = default limit, g:<seg> = explicit group limits
--   run        HASH  t = total running, g:<seg> = running per group (field deleted at 0)
--   res        HASH  g:<seg> = slots reserved for waiters (field deleted at 0)
--   st         HASH  a:g:<seg>, x:g:<seg>, p:g:<seg> admitted/rejected/peak per group; a:t, x:t,
--                    p:t for the total (the `g:` keeps a group named `t` apart from the total)
--   q:<seg>    ZSET  waiters queued for a slot of the group, scored by ticket (FIFO)
--   qg         SET   segments whose queue is not empty (to pump them on a default limit change)
--   qt         ZSET  waiters queued for the total, scored by the order they became ready
--   seq        STRING counter: tickets and ready order
--   h          ZSET  holder id -> lease expiry (ms, the server's TIME)
--   hg         HASH  holder id -> its groups (segments joined by "\n"), after a byte 0x01 if the
--                    holder was a waiter (its record `w:<id>` may still exist)
--   w:<id>     HASH  a waiter: t ticket, g groups, pl places (one char per group: r reserved,
--                    q queued), m named groups still missing, tp total place (o outside,
--                    q queued), ph phase (w waiting, g granted), o owner process, ls lease ms
--   wl         ZSET  waiting (not granted) waiter id -> lease expiry
--   n:<proc>   LIST  ids of that process's waiters that were granted (its wake-ups)
--
-- A group "exists" (has an entry, in the in-process pool's words) while it has running
-- admissions, reservations, queued waiters or an explicit limit; its statistics are deleted
-- when it becomes idle, so memory is bounded by live state.

local P = KEYS[1]
local K_LIM, K_RUN, K_RES, K_ST = P .. 'lim', P .. 'run', P .. 'res', P .. 'st'
local K_QG, K_QT, K_SEQ = P .. 'qg', P .. 'qt', P .. 'seq'
local K_H, K_HG, K_WL = P .. 'h', P .. 'hg', P .. 'wl'
-- The generation of the pool's limits: a random number written by the first limits.lua call
-- into a pool without it, kept by every later one. Gone only if Redis lost the pool's data
-- (restarted without persistence, flushed, failed over to a replica that lacked it); the
-- next write of limits then starts a new generation, so that a process that saw the old one
-- can tell "limits written again after a loss" from "the limits it saw" (earlier releases
-- wrote `1`).
local K_CFG = P .. 'cfg'

-- The generation of the pool's limits (see K_CFG), 0 if they are not set. Limits an earlier
-- release wrote without `cfg` (`lim` alone), or a `cfg` that is not a whole number from 1 to
-- below 2^53 (written by something else), are generation 1. Always below 2^53, so exact as a
-- Lua number and as a reply.
local function limits_gen()
  local gen = redis.call('GET', K_CFG)
  if gen then
    local n = tonumber(gen)
    if n and n >= 1 and n < 2^53 and n == math.floor(n) then return n end
    return 1
  end
  if redis.call('EXISTS', K_LIM) == 1 then return 1 end
  return 0
end

-- `redis.call(cmd, key, args...)` in calls of at most 1,000 arguments each, the replies
-- (HMGET's values) joined in order. Lua's `unpack` fails past about 8,000 values, and one
-- admission may name thousands of groups: failing halfway through a script would leave its
-- earlier writes (Redis does not roll a script back). The chunk is even, so HSET's
-- field-value pairs stay together. Does nothing for no arguments.
local function call_chunked(cmd, key, args)
  local out = {}
  for from = 1, #args, 1000 do
    local reply = redis.call(cmd, key, unpack(args, from, math.min(from + 999, #args)))
    if type(reply) == 'table' then
      for _, value in ipairs(reply) do out[#out + 1] = value end
    end
  end
  return out
end

-- The server's clock, in milliseconds. Never a client's.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Starts a granted waiter's groups in `hg` (no segment has a control character).
local GRANTED_MARK = 1

-- The segments of a group list joined by "\n" (`hg`, a waiter's `g`). Every field is kept,
-- even an empty one (clients never send an empty segment: the empty key is encoded as `%`);
-- only the empty string is the empty list (a holder of no named group).
local function split(s)
  local out = {}
  if s == nil or s == false or s == '' then return out end
  local from = 1
  while true do
    local at = string.find(s, '\n', from, true)
    if not at then
      out[#out + 1] = string.sub(s, from)
      return out
    end
    out[#out + 1] = string.sub(s, from, at - 1)
    from = at + 1
  end
end

local function num(v) if v then return tonumber(v) end return 0 end

local function wkey(id) return P .. 'w:' .. id end
local function qkey(seg) return P .. 'q:' .. seg end

-- The limit in force for a named group (nil = unbounded).
local function glimit(seg)
  local l = redis.call('HGET', K_LIM, 'g:' .. seg)
  if not l then l = redis.call('HGET', K_LIM, 'd') end
  if l then return tonumber(l) end
  return nil
end

local function tlimit()
  local l = redis.call('HGET', K_LIM, 't')
  if l then return tonumber(l) end
  return nil
end

local function grun(seg) return num(redis.call('HGET', K_RUN, 'g:' .. seg)) end
local function gres(seg) return num(redis.call('HGET', K_RES, 'g:' .. seg)) end

-- Adds d to a count field, deleting it at 0.
local function add(key, field, d)
  local v = redis.call('HINCRBY', key, field, d)
  if v <= 0 then
    if v < 0 then redis.log(redis.LOG_WARNING, 'taskherd: count below zero ' .. key .. ' ' .. field) end
    redis.call('HDEL', key, field)
  end
  return v
end

-- One transition's context: the total's reservations exist only within a transition.
local T = { tres = 0 }

local function ghas_room(seg)
  local l = glimit(seg)
  return l == nil or grun(seg) + gres(seg) < l
end

local function thas_room()
  local l = tlimit()
  return l == nil or num(redis.call('HGET', K_RUN, 't')) + T.tres < l
end

-- Counts one admission in `name` (`t` for the total, `g:<seg>` for a group).
local function admit_one(name)
  local r = redis.call('HINCRBY', K_RUN, name, 1)
  redis.call('HINCRBY', K_ST, 'a:' .. name, 1)
  if r > num(redis.call('HGET', K_ST, 'p:' .. name)) then
    redis.call('HSET', K_ST, 'p:' .. name, r)
  end
end

local function gidle(seg)
  return redis.call('HEXISTS', K_RUN, 'g:' .. seg) == 0
    and redis.call('HEXISTS', K_RES, 'g:' .. seg) == 0
    and redis.call('EXISTS', qkey(seg)) == 0
    and redis.call('HEXISTS', K_LIM, 'g:' .. seg) == 0
end

-- Drops an idle group's statistics (invariant 4).
local function reclaim(seg)
  if gidle(seg) then redis.call('HDEL', K_ST, 'a:g:' .. seg, 'x:g:' .. seg, 'p:g:' .. seg) end
end

-- A waiter's record, or nil if there is none (or it is not a hash: something else wrote that
-- key, whose places cannot be read; read with `pcall`, so that one such key does not fail
-- every release, reap and pump that meets its id). `strict`: such a key fails the call.
local function wget(id, strict)
  local read = strict and redis.call or redis.pcall
  local f = read('HMGET', wkey(id), 't', 'g', 'pl', 'm', 'tp', 'ph', 'o', 'ls')
  if f.err or not f[1] then return nil end
  return { id = id, t = tonumber(f[1]), g = split(f[2]), gs = f[2], pl = f[3], m = tonumber(f[4]),
           tp = f[5], ph = f[6], o = f[7], ls = tonumber(f[8]) }
end

local function wput(w)
  redis.call('HSET', wkey(w.id), 'pl', w.pl, 'm', w.m, 'tp', w.tp, 'ph', w.ph)
end

local function setplace(w, i, c)
  w.pl = string.sub(w.pl, 1, i - 1) .. c .. string.sub(w.pl, i + 1)
end

local function index_of(w, seg)
  for i, s in ipairs(w.g) do if s == seg then return i end end
  return nil
end

-- Hands free slots of a group to its oldest queued waiters; waiters now ready go to `granted`.
local function gpump(seg, granted)
  local q = qkey(seg)
  -- Nobody queued (the common release): nothing to hand out, one command. (A group's segment
  -- is in `qg` only while its queue is not empty, so there is nothing to tidy either.)
  if redis.call('ZCARD', q) == 0 then return end
  while ghas_room(seg) do
    local popped = redis.call('ZPOPMIN', q)
    if #popped == 0 then break end
    local w = wget(popped[1])
    if w then
      redis.call('HINCRBY', K_RES, 'g:' .. seg, 1)
      local i = index_of(w, seg)
      if i then setplace(w, i, 'r') end
      w.m = w.m - 1
      wput(w)
      if w.m == 0 and w.tp == 'o' then granted[#granted + 1] = w.id end
    end
  end
  if redis.call('EXISTS', q) == 0 then redis.call('SREM', K_QG, seg) end
end

local function tpump(granted)
  -- Nobody queued for the total (the common release): nothing to hand out, one command.
  if redis.call('ZCARD', K_QT) == 0 then return end
  while thas_room() do
    local popped = redis.call('ZPOPMIN', K_QT)
    if #popped == 0 then break end
    local w = wget(popped[1])
    if w then
      T.tres = T.tres + 1
      w.tp = 'r'
      wput(w)
      granted[#granted + 1] = w.id
    end
  end
end

-- A waiter that holds every slot becomes a holder, leased, and its process is told.
local function grant(w, now)
  T.tres = T.tres - 1
  admit_one('t')
  for _, seg in ipairs(w.g) do
    add(K_RES, 'g:' .. seg, -1)
    admit_one('g:' .. seg)
  end
  w.ph = 'g'
  w.tp = 'o'
  wput(w)
  -- The holder keeps the waiter's lease (its process renews both alike): a crashed
  -- process's waiter granted a slot must not hold it for a fresh lease.
  local expiry = tonumber(redis.call('ZSCORE', K_WL, w.id)) or (now + w.ls)
  redis.call('ZREM', K_WL, w.id)
  redis.call('ZADD', K_H, expiry, w.id)
  redis.call('HSET', K_HG, w.id, string.char(GRANTED_MARK) .. (w.gs or ''))
  local n = P .. 'n:' .. w.o
  redis.call('RPUSH', n, w.id)
  redis.call('PEXPIRE', n, 3 * w.ls)
end

-- Joins the total's queue (or takes its slot) for a waiter that holds every named group.
local function tjoin(w)
  if redis.call('ZCARD', K_QT) == 0 and thas_room() then
    T.tres = T.tres + 1
    w.tp = 'r'
  else
    redis.call('ZADD', K_QT, redis.call('INCR', K_SEQ), w.id)
    w.tp = 'q'
  end
  wput(w)
end

-- Completes the waiters a transition gave slots to, oldest ticket first.
-- `now` may be nil (a release that had no need of the clock): read only if someone is granted.
local function grant_all(granted, now)
  if #granted == 0 then return end
  now = now or now_ms()
  local ws, seen = {}, {}
  for _, id in ipairs(granted) do
    if not seen[id] then
      seen[id] = true
      local w = wget(id)
      if w then ws[#ws + 1] = w end
    end
  end
  table.sort(ws, function(a, b) return a.t < b.t end)
  for _, w in ipairs(ws) do
    if w.ph == 'w' and w.m == 0 and w.tp == 'o' then tjoin(w) end
    if w.ph == 'w' and w.m == 0 and w.tp == 'r' then grant(w, now) end
  end
end

-- Gives back one holder's slots and pumps: the total first, then each group.
local function release_groups(groups, now)
  add(K_RUN, 't', -1)
  local idle = {}
  for _, seg in ipairs(groups) do
    if add(K_RUN, 'g:' .. seg, -1) <= 0 then idle[#idle + 1] = seg end
  end
  -- Nobody waits (the common release): no queue and no reservation exists anywhere, so there
  -- is nothing to hand out, and a group without running admissions is idle unless it has an
  -- explicit limit. (Every waiter not granted yet, queued or holding reservations, is in `wl`.)
  if redis.call('ZCARD', K_WL) == 0 then
    if #idle == 0 then return end
    local fields = {}
    for i, seg in ipairs(idle) do fields[i] = 'g:' .. seg end
    local explicit = call_chunked('HMGET', K_LIM, fields)
    local stats = {}
    for i, seg in ipairs(idle) do
      if not explicit[i] then
        stats[#stats + 1] = 'a:g:' .. seg
        stats[#stats + 1] = 'x:g:' .. seg
        stats[#stats + 1] = 'p:g:' .. seg
      end
    end
    call_chunked('HDEL', K_ST, stats)
    return
  end
  -- Counts first, then the pumps (each pump looks at its own group's counts only, so the
  -- hand-out is the same as decrementing and pumping group by group).
  local granted = {}
  tpump(granted)
  for _, seg in ipairs(groups) do gpump(seg, granted) end
  for _, seg in ipairs(idle) do reclaim(seg) end
  grant_all(granted, now)
end

-- Cancels a waiter that is not granted: its reservations are handed on, its queue places left.
local function cancel_waiting(w, now)
  local granted = {}
  if w.tp == 'q' then
    redis.call('ZREM', K_QT, w.id)
  elseif w.tp == 'r' then
    T.tres = T.tres - 1
    tpump(granted)
  end
  for i, seg in ipairs(w.g) do
    local c = string.sub(w.pl, i, i)
    if c == 'r' then
      add(K_RES, 'g:' .. seg, -1)
      gpump(seg, granted)
    elseif c == 'q' then
      redis.call('ZREM', qkey(seg), w.id)
      if redis.call('EXISTS', qkey(seg)) == 0 then redis.call('SREM', K_QG, seg) end
    end
    reclaim(seg)
  end
  redis.call('DEL', wkey(w.id))
  redis.call('ZREM', K_WL, w.id)
  grant_all(granted, now)
end

-- A waiter whose record cannot be read, just taken out of `wl`: its queue places are taken
-- out of every queue, and the reservations are recounted from the readable records (each
-- reservation belongs to a waiter in `wl`), the groups that lose some pumped.
local function drop_unreadable(id, now)
  redis.call('ZREM', K_QT, id)
  for _, seg in ipairs(redis.call('SMEMBERS', K_QG)) do
    if redis.call('ZREM', qkey(seg), id) == 1 and redis.call('EXISTS', qkey(seg)) == 0 then
      redis.call('SREM', K_QG, seg)
    end
  end
  local counted = {}
  for _, other in ipairs(redis.call('ZRANGE', K_WL, 0, -1)) do
    local w = wget(other)
    if w and w.ph == 'w' then
      for i, seg in ipairs(w.g) do
        if string.sub(w.pl, i, i) == 'r' then counted[seg] = (counted[seg] or 0) + 1 end
      end
    end
  end
  local granted = {}
  for _, f in ipairs(redis.call('HKEYS', K_RES)) do
    local seg = string.sub(f, 3)
    local extra = num(redis.call('HGET', K_RES, f)) - (counted[seg] or 0)
    if extra > 0 then
      add(K_RES, f, -extra)
      gpump(seg, granted)
      reclaim(seg)
    end
  end
  tpump(granted)
  grant_all(granted, now)
end

-- Releases a holder (a granted waiter not collected yet included) or cancels a waiter, by id.
-- Idempotent: an unknown id is a no-op. Returns 1 if something was given back.
local function release_id(id, now)
  if redis.call('ZREM', K_H, id) == 1 then
    local groups = redis.call('HGET', K_HG, id) or ''
    redis.call('HDEL', K_HG, id)
    if string.byte(groups, 1) == GRANTED_MARK then
      -- A granted waiter: its record is still there if its process has not collected it.
      redis.call('DEL', wkey(id))
      groups = string.sub(groups, 2)
    end
    release_groups(split(groups), now)
    return 1
  end
  local w = wget(id)
  if w then
    if w.ph == 'w' then cancel_waiting(w, now) else redis.call('DEL', wkey(id)) end
    return 1
  end
  -- Waiting without a readable record (overwritten by something else): no longer a waiter,
  -- so that the reaper does not meet it again, and its places and reservations go back.
  if redis.call('ZREM', K_WL, id) == 1 then
    drop_unreadable(id, now)
    return 1
  end
  return 0
end

-- Cancels at most `max` waiters whose lease expired (their reservations and places are handed
-- on to live waiters). Returns how many.
local function reap_waiters(now, max)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_WL, '-inf', now, 'LIMIT', 0, max)) do
    n = n + release_id(id, now)
  end
  return n
end

-- Before a release (release.lua, or the releases an admission carries): cancels the expired
-- waiters first, so that the slots given back go to live ones, not to a waiter whose process
-- stopped renewing it (granted, it would hold the slot with its expired lease until the next
-- reap, and count an admission nobody made). Nobody waits (the common release): one
-- command, and the clock is not read. Returns the clock if it read it, else `now`.
local function reap_waiters_before_release(now, max)
  if redis.call('ZCARD', K_WL) == 0 then return now end
  now = now or now_ms()
  reap_waiters(now, max)
  return now
end

-- Cancels expired waiters, then releases expired holders, at most `max` of each. Waiters
-- first: a slot freed by an expired holder must not go to an expired waiter.
local function reap(now, max)
  local n = reap_waiters(now, max)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_H, '-inf', now, 'LIMIT', 0, max)) do
    n = n + release_id(id, now)
  end
  return n
end
