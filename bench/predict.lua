-- wrk script: POST predictPrice with varying inputs (one in ten invalid, to exercise the
-- rejected path too). Every request is logged to PostgreSQL by the server.
local counter = 0

request = function()
  counter = counter + 1
  local sq = 800 + (counter % 2000)
  local bedrooms = (counter % 10 == 0) and 99 or (1 + counter % 5)
  local body = string.format(
    '{"query":"query($i: HouseInput!) { predictPrice(input: $i) { id price } }","variables":{"i":{"squareFeet":%d,"bedrooms":%d,"bathrooms":2}}}',
    sq, bedrooms)
  return wrk.format("POST", "/graphql", { ["Content-Type"] = "application/json" }, body)
end
