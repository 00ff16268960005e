-- Shared by the scripts that read XINFO replies (prepended to them):
-- field(list, name) is the value after `name` in a flat name/value list
-- (an XINFO STREAM or XINFO GROUPS reply), nil when it is not there.
local function field(list, name)
  for i = 1, #list, 2 do
    if list[i] == name then return list[i + 1] end
  end
  return nil
end

