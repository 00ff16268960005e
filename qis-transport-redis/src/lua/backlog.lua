-- A consumer's backlog on some of its streams: entries not yet delivered
-- to its group, and entries delivered and not yet acked.
--
-- KEYS: subject streams the consumer's pattern matches.
-- ARGV: 1 group, 2 start id of a group created later (for streams that
-- have no group of the consumer yet), 3 most entries counted one by one
-- per stream.
-- Returns {waiting, unacked}.
--
-- Waiting is, per stream: nothing when the group has read up to the last
-- entry; the whole stream when the group has not reached its first entry
-- (also when retention removed entries it had not read); the group's lag
-- (XINFO GROUPS) where Redis knows it and no entry was deleted from the
-- middle of the stream (XDEL: Redis 7.0 then miscounts a group reading
-- past it); else the entries after the group's last delivered id, counted
-- one by one, at most ARGV[3].
local group = ARGV[1]
local cap = tonumber(ARGV[3])
local waiting, unacked = 0, 0

-- Whether stream id a < b ("ms-seq"; seq may exceed a double's precision).
local function id_less(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not ams or not bms then return false end
  if #ams ~= #bms then return #ams < #bms end
  if ams ~= bms then return ams < bms end
  if #aseq ~= #bseq then return #aseq < #bseq end
  return aseq < bseq
end

local function count_after(key, id)
  return #redis.call('XRANGE', key, '(' .. id, '+', 'COUNT', cap)
end

for _, key in ipairs(KEYS) do
  if redis.call('TYPE', key)['ok'] == 'stream' then
    local info = redis.call('XINFO', 'STREAM', key)
    local len = field(info, 'length') or 0
    local first = field(info, 'first-entry')
    local last_entry = field(info, 'last-entry')
    local deleted = field(info, 'max-deleted-entry-id') or '0-0'
    local mine = nil
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      if field(g, 'name') == group then mine = g break end
    end
    if mine then
      unacked = unacked + (field(mine, 'pending') or 0)
    end
    if len > 0 and first and last_entry then
      local first_id, last_id = first[1], last_entry[1]
      if mine then
        local read = field(mine, 'last-delivered-id') or '0-0'
        local lag = field(mine, 'lag')
        if not id_less(read, last_id) then
          -- read up to the end: nothing waits
        elseif id_less(read, first_id) then
          waiting = waiting + len
        elseif type(lag) == 'number' and id_less(deleted, first_id) then
          waiting = waiting + math.min(lag, len)
        else
          waiting = waiting + count_after(key, read)
        end
      else
        local start = ARGV[2]
        if start == '0' or id_less(start, first_id) then
          waiting = waiting + len
        else
          waiting = waiting + count_after(key, start)
        end
      end
    end
  end
end
return {waiting, unacked}
