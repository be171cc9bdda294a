-- wrk script: POST /buy {} from many clients, told apart by X-Forwarded-For.
-- BENCH_CLIENTS (default 2000) distinct addresses, spread over wrk's threads; 0 sends no
-- X-Forwarded-For (one client). BENCH_METHOD and BENCH_PATH (default POST /buy) measure
-- another route the same way (GET /healthz: the floor). BENCH_REQUESTS_PER_THREAD > 0 stops
-- each thread after that many answers. BENCH_DELAY_MS > 0 waits that long before each
-- request on a connection, to hold a rate below the maximum (bench/soak.py).
-- done() prints one JSON line (prefixed "BENCH ") for bench/buy_load.py to read.

local clients = tonumber(os.getenv("BENCH_CLIENTS") or "2000")
local method = os.getenv("BENCH_METHOD") or "POST"
local path = os.getenv("BENCH_PATH") or "/buy"
local per_thread = tonumber(os.getenv("BENCH_REQUESTS_PER_THREAD") or "0")
local thread_total = tonumber(os.getenv("BENCH_THREADS") or "1")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local answered = 0
local threads = {}
local thread_count = 0
local id = 0
local sent = 0
statuses = {}  -- globals: done() reads each thread's copy with thread:get
server_errors_at = {}  -- 5xx answers per unix second

function setup(thread)
  thread:set("id", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  id = wrk.thread:get("id")
end

function request()
  if method == "GET" then
    return wrk.format("GET", path)
  end
  local headers = {["Content-Type"] = "application/json"}
  if clients > 0 then
    local i = (sent * thread_total + id) % clients  -- threads interleave: every address is used
    sent = sent + 1
    headers["X-Forwarded-For"] = string.format(
      "10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
  end
  return wrk.format(method, path, headers, "{}")
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 500 then
    local second = os.time()
    server_errors_at[second] = (server_errors_at[second] or 0) + 1
  end
  answered = answered + 1
  if per_thread > 0 and answered == per_thread then
    io.write("BENCH-THREAD-DONE\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local function summed(name)
    local totals = {}
    for _, thread in ipairs(threads) do
      for key, count in pairs(thread:get(name)) do
        totals[key] = (totals[key] or 0) + count
      end
    end
    local parts = {}
    for key, count in pairs(totals) do
      table.insert(parts, string.format('"%d":%d', key, count))
    end
    return table.concat(parts, ",")
  end
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"socket_errors":%d,"statuses":{%s},"server_errors_at":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, errors, summed("statuses"), summed("server_errors_at")))
end
