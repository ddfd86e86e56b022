-- wrk script for the chaos benchmark: predictPrice like predict.lua (all inputs valid), and
-- every id answered OK is kept, so the script can check each one is in prediction_log.
-- OK_IDS names the file the ids are written to; errors are counted by their extensions.code.
local counter = 0
ids = {}
errors = {}

setup = function(thread)
  thread:set("ids", {})
  thread:set("errors", {})
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"query":"query($i: HouseInput!) { predictPrice(input: $i) { id } }","variables":{"i":{"squareFeet":%d,"bedrooms":%d,"bathrooms":2}}}',
    800 + (counter % 2000), 1 + counter % 5)
  return wrk.format("POST", "/graphql", { ["Content-Type"] = "application/json" }, body)
end

response = function(status, headers, body)
  local id = body:match('"id":"([0-9a-f%-]+)"')
  if id then
    ids[#ids + 1] = id
  else
    local code = body:match('"code":"([A-Z_]+)"') or ("HTTP_" .. status)
    errors[code] = (errors[code] or 0) + 1
  end
end

done = function(summary, latency, requests)
  local file = io.open(os.getenv("OK_IDS"), "a")
  local ok, failed = 0, {}
  for _, thread in ipairs(threads) do
    for _, id in ipairs(thread:get("ids")) do
      file:write(id, "\n")
      ok = ok + 1
    end
    for code, n in pairs(thread:get("errors")) do failed[code] = (failed[code] or 0) + n end
  end
  file:close()
  io.write(string.format("ok answers: %d\n", ok))
  for code, n in pairs(failed) do io.write(string.format("errors %s: %d\n", code, n)) end
end
