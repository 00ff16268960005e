-- Creates a durable consumer: its definition and a group on each existing
-- stream it matches, atomically with respect to deposits (so `new` misses
-- nothing and sees nothing old).
--
-- KEYS: 1 definition hash, 2 subject-index version, 3.. matching streams.
-- ARGV: 1 pattern, 2 start (description), 3 start id for streams found
-- later, 4 index version the caller saw, 5 group, 6 start id for the
-- streams, 7 ack wait ms.
-- Returns {'created'}, {'exists', pattern} or {'retry'} (the index changed).
local existing = redis.call('HGET', KEYS[1], 'pattern')
if existing then return {'exists', existing} end
local version = tonumber(redis.call('GET', KEYS[2])) or 0
if version ~= tonumber(ARGV[4]) then return {'retry'} end
for i = 3, #KEYS do
  local r = redis.pcall('XGROUP', 'CREATE', KEYS[i], ARGV[5], ARGV[6], 'MKSTREAM')
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'BUSYGROUP', 1, true) then
      redis.call('XGROUP', 'SETID', KEYS[i], ARGV[5], ARGV[6])
    else
      return redis.error_reply(r.err)
    end
  end
end
redis.call('HSET', KEYS[1], 'pattern', ARGV[1], 'start', ARGV[2], 'lazy_start', ARGV[3], 'ack_wait', ARGV[7])
return {'created'}
