-- wrk script: the seed-compatible REST route.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"square_feet": 1500, "num_bedrooms": 3, "num_bathrooms": 2}'
