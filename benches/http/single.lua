-- wrk script: one JSON event per POST to the native endpoint (durable ack per request).
-- Usage: wrk -t2 -c64 -d20s --latency -s benches/http/single.lua http://127.0.0.1:PORT/ingest/v1/bench
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"user":"u-1234","event":"page_view","path":"/products/42","amount":12.5,"ts":1700000000000}'

-- Count non-2xx answers so a run full of errors cannot pass for a fast one.
local errors = 0
function response(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
function done(summary, latency, requests)
  io.write(string.format("non-200 answers: %d (socket errors: connect %d, read %d, write %d, timeout %d)\n",
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
