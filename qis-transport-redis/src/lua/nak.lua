-- Hands a delivery back: resets its idle time so it is claimed again after
-- the delay; a delay longer than the ack wait is also kept in the delayed
-- set (scored by the retry time in ms).
--
-- KEYS: 1 stream, 2 delayed naks, 3 consumer definition.
-- ARGV: 1 group, 2 member, 3 entry id, 4 ack wait ms (used when the
-- definition keeps none), 5 delay ms.
-- Returns 1 if the entry was pending, else 0.
local ack_wait = tonumber(redis.call('HGET', KEYS[3], 'ack_wait')) or tonumber(ARGV[4])
local delay = tonumber(ARGV[5])
local idle = ack_wait - delay
if idle < 0 then idle = 0 end
local r = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', string.format('%d', idle), 'JUSTID')
if #r == 0 then return 0 end
local m = KEYS[1] .. ' ' .. ARGV[3]
if delay > ack_wait then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], string.format('%d', now + delay), m)
else
  redis.call('ZREM', KEYS[2], m)
end
return 1
