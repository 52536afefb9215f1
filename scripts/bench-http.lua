-- wrk script for the HTTP gateway: read-only `get` calls spread over the
-- 1,000 counters `rio bench` warms (BenchCounter/load-0 … load-999).
-- wrk -t2 -c16 -d8s -s scripts/bench-http.lua http://127.0.0.1:8080
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/objects/BenchCounter/load-" .. (n % 1000) .. "/get", nil, "")
end
