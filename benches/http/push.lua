-- wrk script: durable pushes, one job per request, to project 54.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-jsonlines"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/jobq/54/push", nil, '{"spider":"bench","tags":["t' .. (n % 50) .. '"],"n":' .. n .. '}')
end
