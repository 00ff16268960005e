-- One look: the subject-index version, due redeliveries (if asked), then
-- new entries read stream by stream (if asked), so that the total never
-- exceeds what was asked. The common read path does not use it: native
-- XREADGROUP is about three times cheaper for Redis than the same read
-- converted to Lua and back.
--
-- KEYS: 1 subject-index version, 2 delayed naks, 3 consumer definition,
-- 4.. streams.
-- ARGV: 1 group, 2 member, 3 most to claim (0: no claim), 4 most to read
-- (0: no read), 5 ack wait ms (used when the definition keeps none), 6
-- which stream to read first (0-based).
-- Returns: index version, ms until the next redelivery is due (-1:
-- unknown), the ack wait used (ms), then per entry: stream key, entry id,
-- fields, delivery count.
--
-- The ack wait is the consumer's, kept in its definition. Due entries are
-- found with XPENDING IDLE, page by page: an entry held back by a nak
-- (in the delayed set until its retry time) is skipped and hidden again
-- (its idle time reset) until it is due, so held entries never take the
-- places of others in a page.
local CLAIM_PAGES = 16
local group, member = ARGV[1], ARGV[2]
local remaining = tonumber(ARGV[3])
local ack_wait = tonumber(redis.call('HGET', KEYS[3], 'ack_wait')) or tonumber(ARGV[5])
local out = {tonumber(redis.call('GET', KEYS[1])) or 0, -1, ack_wait}
if remaining > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local has_delay = redis.call('EXISTS', KEYS[2]) == 1
  local due = -1
  local function later(d)
    if d < 0 then d = 0 end
    if due < 0 or d < due then due = d end
  end
  local function held(key, id)
    if not has_delay then return nil end
    local at = redis.call('ZSCORE', KEYS[2], key .. ' ' .. id)
    if at and tonumber(at) > now then return tonumber(at) - now end
    return nil
  end
  for i = 4, #KEYS do
    local key = KEYS[i]
    local start = '-'
    for _ = 1, CLAIM_PAGES do
      if remaining <= 0 then break end
      local asked = remaining
      local p = redis.pcall('XPENDING', key, group, 'IDLE', ack_wait, start, '+', asked)
      if type(p) ~= 'table' or p.err or #p == 0 then break end
      for _, e in ipairs(p) do
        local id = e[1]
        local wait = held(key, id)
        if wait then
          later(wait)
          local idle = ack_wait - math.min(wait, ack_wait)
          redis.call('XCLAIM', key, group, member, 0, id, 'IDLE', string.format('%d', idle), 'JUSTID')
        elseif remaining > 0 then
          local c = redis.call('XCLAIM', key, group, member, ack_wait, id)
          if c[1] then
            out[#out + 1] = key
            out[#out + 1] = c[1][1]
            out[#out + 1] = c[1][2]
            out[#out + 1] = e[4] + 1
            remaining = remaining - 1
          else
            redis.call('XACK', key, group, id)
          end
        end
      end
      if #p < asked then break end
      start = '(' .. p[#p][1]
    end
    local p2 = redis.pcall('XPENDING', key, group, '-', '+', 32)
    if type(p2) == 'table' and not p2.err then
      for _, e in ipairs(p2) do
        local wait = held(key, e[1])
        if wait then later(wait) else later(ack_wait - tonumber(e[3])) end
      end
    end
  end
  if has_delay then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now))
  end
  out[2] = due
end
remaining = tonumber(ARGV[4])
local n = #KEYS - 3
local first = tonumber(ARGV[6]) % math.max(n, 1)
for j = 0, n - 1 do
  if remaining <= 0 then break end
  local key = KEYS[4 + (first + j) % n]
  local r = redis.pcall('XREADGROUP', 'GROUP', group, member, 'COUNT', remaining, 'STREAMS', key, '>')
  if type(r) == 'table' and not r.err then
    for _, s in ipairs(r) do
      for _, e in ipairs(s[2]) do
        out[#out + 1] = key
        out[#out + 1] = e[1]
        out[#out + 1] = e[2]
        out[#out + 1] = 1
        remaining = remaining - 1
      end
    end
  end
end
return out
