-- bench/concurrency.lua: a six-month cdr_1 (6 windows of 31 days) against the
-- fake server with 200 ms of injected latency per call, fetched serially
-- (max_concurrent = 1) and two at a time (the default).  Prints wall time,
-- calls and rows for each; the figures vary with the machine.
--   make bench   (or: LUA_PATH=... lua5.4 bench/concurrency.lua [rounds])
local socket = require "socket"
local wolkvox = require "wolkvox"
local fake = require "wolkvox.fake"

local rounds = tonumber(arg and arg[1]) or 3
local srv = fake.spawn { latency = 0.2 }
local range = { from = "2026-01-01", to = "2026-06-30" }

local function run(limit)
    local c = assert(wolkvox.new { base_url = srv.url, token = srv.token, max_concurrent = limit })
    local best, rows, calls = math.huge, 0, 0
    for _ = 1, rounds do
        local t0 = socket.gettime()
        local r, meta = assert(c:report("cdr_1", range))
        best = math.min(best, socket.gettime() - t0)
        rows, calls = #r, meta.calls
    end
    local peak = srv:control("stats").max_inflight
    srv:control("reset")
    srv:control("config", { latency = 0.2 })
    c:close()
    return best, rows, calls, peak
end

print(string.format("cdr_1 2026-01-01..2026-06-30, 200 ms latency per call, best of %d", rounds))
print(string.format("%-22s %9s %7s %7s %12s", "mode", "seconds", "calls", "rows", "max in flight"))
local serial = { run(1) }
local two = { run(2) }
print(string.format("%-22s %9.3f %7d %7d %12d", "serial (1 in flight)", serial[1], serial[3], serial[2], serial[4]))
print(string.format("%-22s %9.3f %7d %7d %12d", "2-way (2 in flight)", two[1], two[3], two[2], two[4]))
print(string.format("speed-up: %.2fx", serial[1] / two[1]))
srv:stop()
