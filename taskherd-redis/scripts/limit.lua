-- limit.lua: one limit field, with the generation of the pool's limits, in one atomic read.
--
-- KEYS[1]  the pool's prefix `taskherd:{<pool>}:` (every key is derived from it; see lib.lua)
-- ARGV[1]  the field of `lim`: `t` (the total), `d` (the default) or `g:<segment>`
--
-- Returns a list of two strings: the generation of the pool's limits (see lib.lua, `0` if
-- they are not set); then the limit as stored, or `` for none. (A script rather than a
-- pipeline, which another client's commands could split, or `MULTI`/`EXEC`, which a Redis
-- user may not be allowed to run.)

local gen = string.format('%.0f', limits_gen())
local limit = redis.call('HGET', K_LIM, ARGV[1])
return { gen, limit or '' }
