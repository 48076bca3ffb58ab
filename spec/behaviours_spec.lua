-- Documented behaviours a user would notice if they broke (issue #10):
-- window edges and split boundaries, object answers across windows, the
-- per-endpoint limits of diagram_9 and campaign_5, utc_offset, the
-- environment variables, proxies, the transport reasons and c:stats().
-- Everything runs against the fake over loopback (or a hostile server);
-- row contents are checked against the fake's own data: every row of a
-- detail report carries the wall time of its slot.
local dates = require "wolkvox.dates"
local data = require "wolkvox.fake.data"
local registry = require "wolkvox.api.registry"
local socket = require "socket"
local support = require "support"
local wolkvox = require "wolkvox"

local HOUR = 3600

-- The "date" of every row the fake has between wall times `from` and `to`
-- at `per_day` rows a day, in time order.
local function expected_dates(from, to, per_day)
    local first, last = data.slots(from, to, per_day)
    local out = {}
    for n = first, last do
        out[#out + 1] = dates.iso(data.slot_time(n, per_day))
    end
    return out
end

-- `rows` are exactly the fake's rows of [from, to]: none missing, none twice,
-- in time order (each row's "date" is its slot's own time).
local function assert_all_rows(rows, from, to, per_day)
    local want = expected_dates(from, to, per_day)
    assert.is_true(#want > 0)
    assert.equal(#want, #rows, "rows of " .. dates.iso(from) .. " .. " .. dates.iso(to))
    for i, d in ipairs(want) do
        if rows[i].date ~= d then
            error(string.format("row %d is at %s, expected %s", i, tostring(rows[i].date), d), 2)
        end
    end
end

-- The requests the fake logged for api `name`, as wall values.
local function asked(srv, name)
    local out = {}
    for _, entry in ipairs(support.calls(srv, name)) do
        out[#out + 1] = { from = dates.parse(entry.params.date_ini), to = dates.parse(entry.params.date_end) }
    end
    table.sort(out, function(a, b) return a.from < b.from end)
    return out
end

-- Windows (plan windows, meta windows or logged ranges) cover [from, to]
-- one after the other, and every cut lies on a multiple of `step`.
local function assert_cuts(list, from, to, step)
    local ws = {}
    for i, w in ipairs(list) do
        ws[i] = { from = type(w.from) == "string" and dates.parse(w.from) or w.from,
            to = type(w.to) == "string" and dates.parse(w.to) or w.to }
    end
    assert.equal(from, ws[1].from)
    assert.equal(to, ws[#ws].to)
    for i = 2, #ws do
        assert.equal(ws[i - 1].to + 1, ws[i].from)
        if step then
            assert.equal(0, ws[i].from % step, "window " .. i .. " starts at " .. dates.iso(ws[i].from))
        end
    end
end

local function free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return port
end

-- Run `code` in a child Lua process of this flavour after the shell text
-- `env` (exports); its output.
local function child(env, code)
    local p = assert(io.popen(env .. " " .. support.lua_command(code) .. " 2>&1", "r"))
    local out = p:read("*a")
    p:close()
    return out
end

local function count_keys(t)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n
end

describe("documented behaviours", function()
    local srv, c
    support.suite({}, {}, function(s, x) srv, c = s, x end)

    describe("window edges", function()
        it("a range ending exactly on a window boundary gets every row, its last second included", function()
            local from, to = dates.parse("2026-01-01"), dates.parse("2026-02-01 00:00:00")
            local p = assert(c:plan("cdr_1", { from = "2026-01-01", to = "2026-02-01 00:00:00" }))
            assert.equal(2, p.calls)
            assert.equal("2026-01-31 23:59:59", p.windows[1].to)
            assert.equal("2026-02-01 00:00:00", p.windows[2].from)
            assert.equal("2026-02-01 00:00:00", p.windows[2].to)
            local rows, meta = c:cdr_1 { from = "2026-01-01", to = "2026-02-01 00:00:00" }
            assert.is_table(rows, tostring(meta))
            assert_all_rows(rows, from, to, 100)
            assert.equal(3101, #rows)
            assert.equal("2026-02-01 00:00:00", rows[#rows].date)
            assert_cuts(asked(srv, "cdr_1"), from, to)
            assert.equal(2, meta.calls)
        end)

        it("the same on an hour-split report: the last window is one second long", function()
            srv:control("config", { rows_per_day = 1440 }) -- a row every minute
            local from, to = dates.parse("2026-01-01 05:00:00"), dates.parse("2026-02-01 05:00:00")
            local rows, meta = c:agent_8 { from = "2026-01-01 05:00:00", to = "2026-02-01 05:00:00" }
            assert.is_table(rows, tostring(meta))
            assert.equal(2, #meta.windows)
            assert.equal("2026-02-01 04:59:59", meta.windows[1].to)
            assert.equal("2026-02-01 05:00:00", meta.windows[2].from)
            assert_all_rows(rows, from, to, 1440)
            assert.equal("2026-02-01 05:00:00", rows[#rows].date)
        end)
    end)

    describe("split boundaries", function()
        -- 05:40 is on no hour and no half hour: the first 31-day window
        -- ends on the boundary the report allows, or anywhere for cdr_1.
        local RANGE = { from = "2026-01-01 05:40:00", to = "2026-03-10 00:00:00" }

        it("agent_8 is cut on hours, agent_8_1 on half hours, cdr_1 anywhere", function()
            local from, to = dates.parse(RANGE.from), dates.parse(RANGE.to)
            local p8 = assert(c:plan("agent_8", RANGE))
            assert.equal("2026-02-01 04:59:59", p8.windows[1].to)
            assert_cuts(p8.windows, from, to, HOUR)
            local p81 = assert(c:plan("agent_8_1", RANGE))
            assert.equal("2026-02-01 05:29:59", p81.windows[1].to)
            assert_cuts(p81.windows, from, to, 1800)
            local p1 = assert(c:plan("cdr_1", RANGE))
            assert.equal("2026-02-01 05:39:59", p1.windows[1].to)
            assert_cuts(p1.windows, from, to)
            assert.equal(0, #srv:log())
        end)

        for _, case in ipairs { { "agent_8", HOUR }, { "agent_8_1", 1800 } } do
            local name, step = case[1], case[2]
            it(name .. ": windows split again after truncation still cut on its boundary", function()
                srv:control("config", { max_rows = 300 })
                local from, to = dates.parse("2026-01-01 05:40:00"), dates.parse("2026-01-08 17:10:00")
                local rows, meta = c:report(name, { from = "2026-01-01 05:40:00", to = "2026-01-08 17:10:00",
                    max_rows = 300 })
                assert.is_table(rows, tostring(meta))
                assert.is_true(meta.truncated > 0)
                assert_all_rows(rows, from, to, 100)
                assert_cuts(meta.windows, from, to, step)
                -- what the server was asked: every request starts on the boundary
                -- (but the range's own start), truncated ones included
                for _, r in ipairs(asked(srv, name)) do
                    assert.is_true(r.from == from or r.from % step == 0, dates.iso(r.from))
                    assert.is_true(r.to == to or (r.to + 1) % step == 0, dates.iso(r.to))
                end
            end)
        end
    end)

    describe("object answers across windows", function()
        -- A report answered as an object keyed by bucket (cdr_4's shape)
        -- that may be split: the registry's cdr_4 entry as a detail report.
        local function cdr4_style()
            local e = {}
            for k, v in pairs(registry.find("reports_manager", "cdr_4")) do
                e[k] = v
            end
            e.kind = "detail"
            return e
        end

        it("the fake keys each window's buckets by their own time", function()
            local a = assert(c:cdr_4 { from = "2026-01-01", to = "2026-01-10" })
            local b = assert(c:cdr_4 { from = "2026-01-11", to = "2026-01-20" })
            assert.is_nil(a[1])
            assert.equal(5, count_keys(a))
            for k in pairs(a) do
                assert.is_nil(b[k], "both windows have key " .. k)
                local t = dates.parse(k)
                assert.is_true(t >= dates.parse("2026-01-01") and t <= dates.parse("2026-01-10", true), k)
            end
        end)

        it("a multi-window report keeps every window's keys", function()
            local rows, meta = c:report(cdr4_style(), { from = "2026-01-01", to = "2026-03-15" })
            assert.is_table(rows, tostring(meta))
            assert.is_nil(rows[1])
            assert.equal(3, #meta.windows)
            assert.equal(3, #srv:log())
            assert.equal(15, count_keys(rows))
            for _, w in ipairs(meta.windows) do
                local from, to, n = dates.parse(w.from), dates.parse(w.to), 0
                for k, bucket in pairs(rows) do
                    local t = dates.parse(k)
                    if t >= from and t <= to then
                        n = n + 1
                        assert.is_string(bucket.calls)
                    end
                end
                assert.equal(5, n, "buckets of window " .. w.from .. " .. " .. w.to)
            end
        end)
    end)

    describe("diagram_9 and campaign_5", function()
        it("diagram_9 splits a window that reaches 6,000 rows; cdr_1 takes it whole", function()
            srv:control("config", { rows_per_day = 1000, max_rows = 6000 })
            local from, to = dates.parse("2026-01-01"), dates.parse("2026-01-10", true)
            local rows, meta = c:diagram_9 { from = "2026-01-01", to = "2026-01-10" }
            assert.is_table(rows, tostring(meta))
            assert_all_rows(rows, from, to, 1000)
            assert.equal(10000, #rows)
            assert.is_true(meta.truncated >= 1)
            for _, w in ipairs(meta.windows) do
                assert.is_true(w.rows < 6000)
            end
            srv:control("reset")
            srv:control("config", { rows_per_day = 1000 })
            local all, m2 = c:cdr_1 { from = "2026-01-01", to = "2026-01-10" }
            assert.equal(10000, #all)
            assert.equal(1, m2.calls)
            assert.equal(0, m2.truncated)
        end)

        it("diagram_9 splits even when the server sends more than 6,000 rows", function()
            srv:control("config", { rows_per_day = 700 })   -- 7,000 in 10 days: no server cap hit
            local rows, meta = c:diagram_9 { from = "2026-01-01", to = "2026-01-10" }
            assert.is_table(rows, tostring(meta))
            assert.equal(7000, #rows)
            assert.equal(1, meta.truncated)
            assert.equal(3, meta.calls)
        end)

        it("campaign_5 asks for the whole range in one call, never split", function()
            local p = assert(c:plan("campaign_5", { campaign_id = "all", from = "2026-01-01", to = "2026-01-31" }))
            assert.equal(1, p.calls)
            assert.equal("window", p.mode)
            local rows, meta = c:campaign_5 { campaign_id = "all", from = "2026-01-01", to = "2026-01-31" }
            assert.is_table(rows, tostring(meta))
            assert.equal(3100, #rows)
            local log = srv:log()
            assert.equal(1, #log)
            assert.equal("20260101000000", log[1].params.date_ini)
            assert.equal("20260131235959", log[1].params.date_end)
        end)

        it("campaign_5 refuses a range over 31 days, and a truncated answer, instead of splitting", function()
            local rows, err = c:campaign_5 { campaign_id = "all", from = "2026-01-01", to = "2026-02-01" }
            assert.is_nil(rows)
            assert.equal("params", err.kind)
            assert.matches("31 days", err.message)
            assert.equal(0, #srv:log())
            srv:control("config", { max_rows = 500 })
            rows, err = c:campaign_5 { campaign_id = "all", from = "2026-01-01", to = "2026-01-10", max_rows = 500 }
            assert.is_nil(rows)
            assert.equal("truncated", err.kind)
            assert.equal(1, #srv:log())
        end)
    end)

    describe("utc_offset", function()
        -- 2026-01-01 12:00:00 UTC as os.time() gives it.
        local EPOCH = 1767268800

        it("turns os.time() numbers into the operation's wall clock", function()
            assert.equal("20260101120000", dates.format(EPOCH)) -- the epoch itself is UTC
            local cases = {
                { nil, "20260101070000", "20260101075959" },      -- default: Bogota, UTC-5
                { "-05:00", "20260101070000", "20260101075959" },
                { 0, "20260101120000", "20260101125959" },
                { 2 * HOUR, "20260101140000", "20260101145959" },
                { "+05:30", "20260101173000", "20260101182959" },
            }
            for _, case in ipairs(cases) do
                srv:control("reset")
                local x = support.client(srv, { utc_offset = case[1] })
                local rows, err = x:cdr_1 { from = EPOCH, to = EPOCH + 3599 }
                assert.is_table(rows, tostring(err))
                local log = srv:log()
                assert.equal(1, #log)
                assert.equal(case[2], log[1].params.date_ini, tostring(case[1]))
                assert.equal(case[3], log[1].params.date_end, tostring(case[1]))
                x:close()
            end
        end)

        it("leaves strings and date tables alone", function()
            local x = support.client(srv, { utc_offset = 9 * HOUR })
            assert(x:cdr_1 { from = "2026-01-01 07:00", to = { year = 2026, month = 1, day = 1, hour = 7, min = 59,
                sec = 59 } })
            local log = srv:log()
            assert.equal("20260101070000", log[1].params.date_ini)
            assert.equal("20260101075959", log[1].params.date_end)
            x:close()
        end)
    end)

    describe("the environment", function()
        local CODE = [[
            local c, err = require("wolkvox").new { state_dir = false, retries = 0 }
            if not c then
                io.write("new: ", err.kind, ": ", err.message, "\n")
                return
            end
            local rows, e = c:services()
            io.write(rows and ("licenses " .. rows[1].licenses) or (e.kind .. ": " .. e.message), "\n")
        ]]

        it("WOLKVOX_TOKEN and WOLKVOX_SERVER give the token and the server", function()
            local out = child("export WOLKVOX_TOKEN=" .. srv.token .. " WOLKVOX_SERVER=" .. srv.url .. ";", CODE)
            assert.equal("licenses 25\n", out)
            local log = srv:log()
            assert.equal(1, #log)
            assert.equal("ok", log[1].token)
            -- the token from the environment is the one sent: a wrong one is refused there
            srv:control("reset")
            out = child("export WOLKVOX_TOKEN=not-the-token WOLKVOX_SERVER=" .. srv.url .. ";", CODE)
            assert.matches("^auth: ", out)
            assert.equal("bad", srv:log()[1].token)
        end)

        it("without them new() says what is missing", function()
            local out = child("unset WOLKVOX_TOKEN; export WOLKVOX_SERVER=" .. srv.url .. ";", CODE)
            assert.matches("^new: auth: no token", out)
            out = child("unset WOLKVOX_SERVER; export WOLKVOX_TOKEN=" .. srv.token .. ";", CODE)
            assert.matches("^new: params: no server", out)
            assert.equal(0, #srv:log())
        end)
    end)

    describe("proxies", function()
        it("an explicit proxy is used: the request goes to it, for the server asked", function()
            local port = free_port() -- nothing there: only the proxy can answer
            local x = assert(wolkvox.new { base_url = "http://127.0.0.1:" .. port, proxy = srv.url,
                token = srv.token, state_dir = false, retries = 0 })
            local rows, err = x:services()
            assert.is_table(rows, tostring(err))
            assert.equal("25", rows[1].licenses)
            local log = srv:log()
            assert.equal(1, #log)
            assert.equal("127.0.0.1:" .. port, log[1].proxied)
            x:close()
        end)

        it("an explicit proxy on a closed port is a transport error (connect), nothing sent", function()
            local x = assert(wolkvox.new { base_url = srv.url, proxy = "http://127.0.0.1:" .. free_port(),
                token = srv.token, state_dir = false, retries = 0 })
            local rows, err = x:services()
            assert.is_nil(rows)
            assert.equal("transport", err.kind)
            assert.equal("connect", err.reason)
            assert.equal(0, #srv:log())
            x:close()
        end)

        it("http_proxy from the environment is used, and proxy = \"\" turns proxies off", function()
            local code = string.format([[
                local wolkvox = require "wolkvox"
                for _, proxy in ipairs { false, "" } do
                    local c = assert(wolkvox.new { base_url = "http://wv9999.invalid", insecure = true,
                        token = %q, state_dir = false, retries = 0, proxy = proxy or nil })
                    local rows, err = c:services()
                    io.write(rows and ("rows " .. rows[1].licenses) or (err.kind .. " " .. tostring(err.reason)), "\n")
                    c:close()
                end
            ]], srv.token)
            local out = child("unset no_proxy NO_PROXY ALL_PROXY all_proxy; export http_proxy=" .. srv.url .. ";",
                code)
            assert.equal("rows 25\ntransport dns\n", out)
            local log = srv:log()
            assert.equal(1, #log)
            assert.equal("wv9999.invalid", log[1].proxied)
        end)
    end)

    describe("transport reasons", function()
        it("dns: a host name that does not resolve", function()
            local x = assert(wolkvox.new { base_url = "https://wv9999.invalid", token = "t", state_dir = false,
                retries = 0 })
            local rows, err = x:services()
            assert.is_nil(rows)
            assert.equal("transport", err.kind)
            assert.equal("dns", err.reason)
            assert.equal(0, x:stats().calls)
            x:close()
            local s = require("wolkvox.core").session { token = "t", timeout = 5 }
            local res = s:request { url = "http://wv9999.invalid/api/v2/information.php?api=services" }
            assert.equal("dns", res.error.reason)
            assert.is_false(res.error.sent)
            s:close()
        end)

        it("url: the C core refuses a malformed URL", function()
            local s = require("wolkvox.core").session { token = "t", timeout = 5 }
            local res = s:request { url = "http://[::1/api/v2/information.php" }
            assert.equal("transport", res.error.kind)
            assert.equal("url", res.error.reason)
            assert.is_false(res.error.sent)
            s:close()
        end)

        describe("protocol: a server that answers garbage", function()
            local hostile = require "hostile"
            local function call(answer)
                local h = hostile.start { responses = { answer } }
                local x = assert(wolkvox.new { base_url = h.url, token = "t", state_dir = false, retries = 0 })
                local rows, err = x:services()
                x:close()
                h:stop()
                assert.is_nil(rows)
                return err
            end

            it("a malformed header", function()
                local err = call("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n")
                assert.equal("transport", err.kind)
                assert.equal("protocol", err.reason)
            end)

            it("bytes that are not HTTP at all (not a URL problem)", function()
                local err = call("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\r\n")
                assert.equal("transport", err.kind)
                assert.equal("protocol", err.reason)
            end)

            it("a status line of an HTTP version that does not exist (not a URL problem)", function()
                for _, line in ipairs { "HTTP/7.1 200 OK", "HTTP/1.1 abc OK" } do
                    local err = call(line .. "\r\nContent-Length: 2\r\n\r\n{}")
                    assert.equal("transport", err.kind)
                    assert.equal("protocol", err.reason, line)
                end
            end)
        end)
    end)

    describe("c:stats()", function()
        it("counts calls, retries, throttled starts, bytes, connects and the day's quota", function()
            local throttles, bytes = 0, 0
            local x = support.client(srv, { state_dir = support.tmpdir(), min_interval = 0.2,
                retry_base = 0.01, retry_cap = 0.01,
                on_throttle = function() throttles = throttles + 1 end,
                on_response = function(info) bytes = bytes + (info.bytes or 0) end })
            local fresh = x:stats()
            assert.same({ calls = 0, retries = 0, throttled = 0, bytes = 0, connects = 0, quota_used = 0,
                cache_hits = 0, by_endpoint = {}, in_flight = 0, rows = 0 },
                { calls = fresh.calls, retries = fresh.retries, throttled = fresh.throttled, bytes = fresh.bytes,
                    connects = fresh.connects, quota_used = fresh.quota_used, cache_hits = fresh.cache_hits,
                    by_endpoint = fresh.by_endpoint, in_flight = fresh.in_flight, rows = fresh.rows })
            assert.equal(0, fresh.quota.used)

            local _, meta = assert(x:services())
            local s = x:stats()
            assert.equal(1, s.calls)
            assert.equal(0, s.retries)
            assert.equal(1, s.connects)
            assert.equal(1, s.quota_used)
            assert.is_true(meta.bytes > 100)
            assert.equal(meta.bytes, s.bytes)

            support.faults(srv, { { match = "routing_points", status = 500 } })
            assert(x:routing_points())
            s = x:stats()
            assert.equal(3, s.calls)        -- the failed attempt cost a call too
            assert.equal(1, s.retries)
            assert.equal(3, s.quota_used)

            assert(x.agentbox:change_status { status = "ready", agent_id = "1001" })
            s = x:stats()
            assert.equal(4, s.calls)
            assert.equal(1, s.retries)
            assert.equal(3, s.quota_used)   -- agentbox calls are free

            -- what the fake saw: four requests over the connections counted
            local log, conns = srv:log(), {}
            assert.equal(4, #log)
            for _, entry in ipairs(log) do
                conns[entry.conn] = true
            end
            assert.equal(count_keys(conns), s.connects)
            assert.equal(bytes, s.bytes)
            assert.is_true(throttles >= 1)  -- min_interval held back the starts that followed quickly
            assert.equal(throttles, s.throttled)
            x:close()
        end)
    end)
end)
