-- wrk script: NDJSON batches of 100 events per POST to the native endpoint.
-- Usage: wrk -t2 -c64 -d20s --latency -s benches/http/batch.lua http://127.0.0.1:PORT/ingest/v1/bench-batch
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
local lines = {}
for i = 1, 100 do
  lines[i] = string.format('{"user":"u-%d","event":"page_view","path":"/products/%d","amount":12.5,"ts":1700000000000}', i, i)
end
wrk.body = table.concat(lines, "\n") .. "\n"

function done(summary, latency, requests)
  io.write(string.format("events/s: %.0f (100 events per request)\n", summary.requests / (summary.duration / 1e6) * 100))
  io.write(string.format("non-200 answers: %d (socket errors: connect %d, read %d, write %d, timeout %d)\n",
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
