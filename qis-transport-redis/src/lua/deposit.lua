-- Stores a chunk of packets, atomically with their de-duplication markers
-- (trim_fn.lua is prepended).
--
-- KEYS: 1 subject index, 2 new-subject stream, 3 subject-index version,
-- then one stream key per packet.
-- ARGV: 1 dedup window ms (0: off), 2 stream max length, 3 max age ms
-- (0: off), 4 live channel prefix, 5 new-subjects max length, 6 prefix of
-- the de-duplication buckets, 7 prefix of the stream keys, then per packet:
-- packet id, body.
-- Returns {per packet: 0 or 1 (duplicate), position; {subject, group,
-- unacked count, ...} for deliveries the trims took before they were
-- acked}. A new packet's position is its entry id; a duplicate's is
-- "{entry id} {subject}" of the original (an entry id alone for markers
-- written before the subject was kept).
--
-- De-duplication is per transport, not per subject: markers live in
-- hashes, one per window-long bucket of server time
-- ({prefix}:d:{window}:{floor(now / window)}: packet id -> "{entry id}
-- {subject}"), read with one HMGET per bucket (this one and the one before)
-- and written with one HSET per chunk; each bucket expires once the next
-- one is over. A re-deposit, on any subject, is thus recognised for at
-- least one window and at most two. Per packet the script costs one XADD,
-- one hash field looked up and one written; the two markers cost Redis
-- about as much as the XADD (the README's Redis deposit profile). Trimming and indexing happen once per stream per chunk; nothing
-- is published when no live subscriber (a pattern subscription) exists.
local window = tonumber(ARGV[1])
local max_age = tonumber(ARGV[3])
local chan = ARGV[4]
local skip = #ARGV[7]
local n = #KEYS - 3
local live = redis.call('PUBSUB', 'NUMPAT') > 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = {}
local cur
local expire_at
local fresh = {}
if window > 0 then
  local b = math.floor(now / window)
  cur = ARGV[6] .. string.format('%d', b)
  expire_at = string.format('%d', (b + 2) * window)
  local prev = ARGV[6] .. string.format('%d', b - 1)
  local pids = {}
  for i = 1, n do pids[i] = ARGV[6 + 2 * i] end
  local a = {}
  if redis.call('EXISTS', cur) == 1 then
    a = redis.call('HMGET', cur, unpack(pids))
  else
    -- A new bucket: its first write carries a value longer than a
    -- listpack holds (hash-max-listpack-value, 64 by default), so Redis
    -- makes it a hash table at once. As a listpack (up to 512 fields) every
    -- lookup and insert scans the whole list: the first chunks of each
    -- window would cost time quadratic in their size. Packet ids are hex,
    -- so this field is never taken for one.
    fresh[1] = 'encoding'
    fresh[2] = string.rep('h', 65)
  end
  local p = {}
  if redis.call('EXISTS', prev) == 1 then p = redis.call('HMGET', prev, unpack(pids)) end
  for i = 1, n do
    local v = a[i] or p[i]
    if v then known[pids[i]] = v end
  end
end
local out = {}
local touched = {}
local order = {}
local nout, nfresh = 0, #fresh
local function remember()
  if nfresh > 0 then
    redis.call('HSET', cur, unpack(fresh))
    redis.call('PEXPIREAT', cur, expire_at)
  end
end
local pcall = redis.pcall
local dedup = window > 0
for i = 1, n do
  local skey = KEYS[3 + i]
  local pid = ARGV[6 + 2 * i]
  local v = known[pid]
  if v then
    out[nout + 1] = 1
    out[nout + 2] = v
  else
    local body = ARGV[7 + 2 * i]
    local r = pcall('XADD', skey, '*', 'id', pid, 'body', body)
    if type(r) == 'table' then
      remember()
      return redis.error_reply(r.err)
    end
    local subject = touched[skey]
    if not subject then
      subject = string.sub(skey, skip + 1)
      touched[skey] = subject
      order[#order + 1] = {skey, subject}
    end
    if dedup then
      local m = r .. ' ' .. subject
      known[pid] = m
      fresh[nfresh + 1] = pid
      fresh[nfresh + 2] = m
      nfresh = nfresh + 2
    end
    if live then redis.call('PUBLISH', chan .. subject, body) end
    out[nout + 1] = 0
    out[nout + 2] = r
  end
  nout = nout + 2
end
remember()
local minid = false
if max_age > 0 and now - max_age > 0 then minid = string.format('%d', now - max_age) end
local dropped = {}
for _, e in ipairs(order) do
  trim_stream(e[1], e[2], ARGV[2], minid, false, dropped)
  if redis.call('ZADD', KEYS[1], 'NX', 0, e[2]) == 1 then
    redis.call('INCR', KEYS[3])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 's', e[2])
  end
end
return {out, dropped}
