-- Shared by every script that trims (prepended to deposit.lua and
-- trim.lua, after field_fn.lua): trim one stream, and account for the deliveries the trim took
-- from consumer groups before they were acked.
--
-- trim_stream(key, subject, max_len, minid, exact, dropped) trims `key` to
-- about `max_len` entries (MAXLEN ~: whole macro nodes) and, when `minid`
-- is set, removes the entries below it: exactly when `exact`, else whole
-- nodes only (MINID ~). When entries went, every group's pending entries
-- below the first entry left are acked away (they can never be delivered
-- again) and reported by appending subject, group, count to `dropped`.
-- Returns how many entries were removed.
local PEL_PAGE = 1000
local PEL_PAGES = 100

local function trim_stream(key, subject, max_len, minid, exact, dropped)
  local n = redis.call('XTRIM', key, 'MAXLEN', '~', max_len)
  if minid then
    if exact then
      n = n + redis.call('XTRIM', key, 'MINID', minid)
    else
      n = n + redis.call('XTRIM', key, 'MINID', '~', minid)
    end
  end
  if n == 0 then return 0 end
  local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
  local upto = '+'
  if first[1] then upto = '(' .. first[1][1] end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local group = field(g, 'name')
    local pending = field(g, 'pending')
    if pending and pending > 0 then
      local count = 0
      for _ = 1, PEL_PAGES do
        local p = redis.call('XPENDING', key, group, '-', upto, PEL_PAGE)
        if #p == 0 then break end
        local ids = {}
        for i, e in ipairs(p) do ids[i] = e[1] end
        redis.call('XACK', key, group, unpack(ids))
        count = count + #p
        if #p < PEL_PAGE then break end
      end
      if count > 0 then
        dropped[#dropped + 1] = subject
        dropped[#dropped + 1] = group
        dropped[#dropped + 1] = count
      end
    end
  end
  return n
end
