-- wrk script for the chaos benchmark: predictPrice like predict.lua (all inputs valid). Every id
-- answered OK is written to the file OK_IDS (line-buffered, so nothing is lost when wrk exits),
-- and every other answer as `ERR <extensions.code or HTTP status>`, so the benchmark can check
-- each OK id against prediction_log and count the errors.
local counter = 0
local out

init = function(args)
  out = assert(io.open(os.getenv("OK_IDS"), "a"))
  out:setvbuf("line")
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
    out:write(id, "\n")
  else
    out:write("ERR ", body:match('"code":"([A-Z_]+)"') or ("HTTP_" .. status), "\n")
  end
end
