-- Retention for streams nobody may be depositing to: the sweep and the
-- readers call it (trim_fn.lua is prepended).
--
-- KEYS: 1 subject index, 2 subject-index version, 3.. subject streams.
-- ARGV: 1 stream max length, 2 max age ms, 3 length of the stream key
-- prefix.
-- Each stream is trimmed by length (MAXLEN ~) and exactly by age (MINID
-- now - max age). A stream that is then empty and got its last entry
-- longer than max age ago is deleted with its consumer groups, and its
-- subject leaves the index (the version goes up, so readers look again);
-- an indexed subject without a stream leaves the index too (a deposit
-- recreates both). A key of another type (not ours) is left alone.
-- Returns {entries removed, {subject, group, unacked count, ...},
-- {deleted subject, ...}}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_age = tonumber(ARGV[2])
local skip = tonumber(ARGV[3])
local minid = false
local oldest = 0
if max_age > 0 and now > max_age then
  oldest = now - max_age
  minid = string.format('%d', oldest)
end
local removed = 0
local dropped = {}
local deleted = {}
local function forget(subject)
  if redis.call('ZREM', KEYS[1], subject) == 1 then
    redis.call('INCR', KEYS[2])
  end
  deleted[#deleted + 1] = subject
end
for i = 3, #KEYS do
  local key = KEYS[i]
  local subject = string.sub(key, skip + 1)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    if redis.call('ZSCORE', KEYS[1], subject) then forget(subject) end
  elseif kind == 'stream' then
    removed = removed + trim_stream(key, subject, ARGV[1], minid, true, dropped)
    if minid and redis.call('XLEN', key) == 0 then
      local last = field(redis.call('XINFO', 'STREAM', key), 'last-generated-id')
      local ms = tonumber(string.match(last or '0', '^(%d+)')) or 0
      if ms < oldest then
        redis.call('DEL', key)
        forget(subject)
      end
    end
  end
end
return {removed, dropped, deleted}
