-- Reports over any range against the fake: windows, truncation, concurrency.
local dates = require "wolkvox.dates"
local support = require "support"

local DAY = 86400

-- The ids the fake gives a detail report between two wall times at
-- `per_day` rows a day: row n sits at floor(n * 86400 / per_day).
local function expected_ids(from, to, per_day)
    local first = math.ceil(from * per_day / DAY)
    local last = math.ceil((to + 1) * per_day / DAY) - 1
    return first, last
end

-- The [ini, end] of every logged request, as wall values, in log order.
local function logged_ranges(srv)
    local out = {}
    for _, entry in ipairs(srv:log()) do
        if entry.params.date_ini then
            out[#out + 1] = { from = dates.parse(entry.params.date_ini), to = dates.parse(entry.params.date_end),
                t_start = entry.t_start, t_end = entry.t_end }
        end
    end
    return out
end

describe("reports over a range", function()
    local srv, c
    support.suite({ max_rows = 500 }, { max_rows = 500 }, function(s, x) srv, c = s, x end)

    describe("plan()", function()
        it("cuts six months into 31-day windows, each starting a second after the last, for free", function()
            local p = assert(c:plan("cdr_1", { from = "2026-01-01", to = "2026-06-30" }))
            assert.equal(6, p.calls)
            assert.equal("windows", p.mode)
            assert.equal("2026-01-01 00:00:00", p.windows[1].from)
            assert.equal("2026-01-31 23:59:59", p.windows[1].to)
            assert.equal("2026-02-01 00:00:00", p.windows[2].from)
            assert.equal("2026-06-30 23:59:59", p.windows[6].to)
            for i = 2, #p.windows do
                assert.equal(dates.parse(p.windows[i - 1].to) + 1, dates.parse(p.windows[i].from))
            end
            for _, w in ipairs(p.windows) do
                assert.is_true(dates.parse(w.to) - dates.parse(w.from) < 31 * DAY)
            end
            assert.equal(0, #srv:log())
        end)

        it("counts one call for an endpoint without a range", function()
            local p = assert(c:plan("services"))
            assert.equal(1, p.calls)
            assert.equal("single", p.mode)
        end)
    end)

    describe("a six-month cdr_1 at 100 rows a day with a row cap of 500", function()
        local rows, meta, log, stats, plan

        setup(function()
            srv:control("reset")
            srv:control("config", { latency = 0.02 })
            plan = assert(c:plan("cdr_1", { from = "2026-01-01", to = "2026-06-30" }))
            rows, meta = c:report("cdr_1", { from = "2026-01-01", to = "2026-06-30" })
            assert.is_table(rows, tostring(meta))
            log = logged_ranges(srv)
            stats = srv:control("stats")
        end)

        it("returns every expected id exactly once", function()
            local first, last = expected_ids(dates.parse("2026-01-01"), dates.parse("2026-06-30", true), 100)
            assert.equal(18100, last - first + 1)
            assert.equal(last - first + 1, #rows)
            local seen = {}
            for _, row in ipairs(rows) do
                local id = tonumber(row.conn_id)
                assert.is_nil(seen[id], "duplicate id " .. row.conn_id)
                assert.is_true(id >= first and id <= last)
                seen[id] = true
            end
        end)

        it("returns the rows in time order", function()
            for i = 2, #rows do
                assert.is_true(rows[i - 1].date <= rows[i].date)
                assert.is_true(tonumber(rows[i - 1].conn_id) < tonumber(rows[i].conn_id))
            end
        end)

        it("spends one call per window asked, truncated ones included, and says so", function()
            assert.equal(#log, meta.calls)
            assert.equal(#meta.windows + meta.truncated, meta.calls)
            assert.is_true(meta.truncated > 0)
            assert.equal(6, plan.calls) -- the first pass, before any truncation was seen
            local total = 0
            for _, w in ipairs(meta.windows) do
                assert.is_true(w.rows < 500)
                total = total + w.rows
            end
            assert.equal(#rows, total)
        end)

        it("asks for windows that cover the range without gaps or overlaps", function()
            local used = {}
            for _, w in ipairs(meta.windows) do
                used[#used + 1] = { from = dates.parse(w.from), to = dates.parse(w.to) }
            end
            assert.equal(dates.parse("2026-01-01"), used[1].from)
            assert.equal(dates.parse("2026-06-30", true), used[#used].to)
            for i = 2, #used do
                assert.equal(used[i - 1].to + 1, used[i].from)
            end
            for _, r in ipairs(log) do
                assert.is_true(r.to - r.from < 31 * DAY)
            end
        end)

        it("never has more than 2 requests in flight at the server, and uses 2", function()
            assert.equal(2, stats.max_inflight)
            local open = 0
            local events = {}
            for _, r in ipairs(log) do
                events[#events + 1] = { t = r.t_start, d = 1 }
                events[#events + 1] = { t = r.t_end, d = -1 }
            end
            table.sort(events, function(a, b) return a.t < b.t or (a.t == b.t and a.d < b.d) end)
            local peak = 0
            for _, ev in ipairs(events) do
                open = open + ev.d
                peak = math.max(peak, open)
            end
            assert.is_true(peak <= 2)
        end)
    end)

    it("spends exactly the planned calls when nothing is truncated", function()
        local x = support.client(srv)          -- default cap of 60,000 rows
        srv:control("config", { max_rows = 60000 })
        local p = assert(x:plan("cdr_1", { from = "2026-01-01", to = "2026-04-15" }))
        local rows, meta = x:cdr_1 { from = "2026-01-01", to = "2026-04-15" }
        assert.equal(105 * 100, #rows)
        assert.equal(p.calls, meta.calls)
        assert.equal(4, meta.calls)
        assert.equal(4, #srv:log())
        x:close()
    end)

    it("goes one window at a time with max_concurrent = 1", function()
        srv:control("config", { latency = 0.02 })
        local rows = c:report("cdr_1", { from = "2026-01-01", to = "2026-01-20", max_concurrent = 1 })
        assert.equal(2000, #rows)
        assert.equal(1, srv:control("stats").max_inflight)
    end)

    it("fails with 'truncated', naming the window, when a window cannot be split enough", function()
        local rows, err = c:report("cdr_1", { from = "2026-01-01", to = "2026-01-10", min_span = 30 * DAY })
        assert.is_nil(rows)
        assert.equal("truncated", err.kind)
        assert.equal("2026-01-01 00:00:00", err.window.from)
        assert.equal("2026-01-10 23:59:59", err.window.to)
        assert.matches("2026%-01%-01 00:00:00 %.%. 2026%-01%-10 23:59:59", tostring(err))
        assert.equal(1, err.calls)
    end)

    it("treats an empty window as no rows and goes on", function()
        support.faults(srv, { { empty = true, match = "cdr_1" } })
        local rows, meta = c:report("cdr_1", { from = "2026-01-01", to = "2026-01-02", max_concurrent = 1 })
        -- the first window (both days, 200 rows) answered 404: no rows, no error
        assert.equal(0, #rows)
        assert.equal(1, meta.calls)
    end)

    it("stops at a failing window and names it", function()
        srv:control("config", { max_rows = 60000, daily_limit = 2 })
        local x = support.client(srv, { max_concurrent = 1 })
        -- Windows: Jan 1-31, Feb 1-Mar 3, Mar 4-31; the quota runs out at the third.
        local rows, err = x:report("cdr_1", { from = "2026-01-01", to = "2026-03-31" })
        assert.is_nil(rows)
        assert.equal("quota", err.kind)
        assert.equal("2026-03-04 00:00:00", err.window.from)
        assert.equal("2026-03-31 23:59:59", err.window.to)
        assert.equal(3, err.calls)
        x:close()
    end)

    describe("each()", function()
        it("yields the same rows as report(), with their window", function()
            local all = assert(c:report("cdr_1", { from = "2026-01-01", to = "2026-01-12" }))
            local i = 0
            for row, w in c:each("cdr_1", { from = "2026-01-01", to = "2026-01-12" }) do
                i = i + 1
                assert.equal(all[i].conn_id, row.conn_id)
                assert.is_true(row.date >= w.from and row.date <= w.to)
            end
            assert.equal(#all, i)
        end)

        it("fetches window by window and stops fetching when the loop breaks", function()
            srv:control("config", { max_rows = 60000 })
            local x = support.client(srv, { max_concurrent = 1 })
            local n = 0
            for _ in x:each("cdr_1", { from = "2026-01-01", to = "2026-06-30" }) do
                n = n + 1
                if n == 10 then
                    break
                end
            end
            assert.equal(1, #srv:log())    -- one window of six
            -- The client goes on normally afterwards.
            assert.equal("25", x:services()[1].licenses)
            x:close()
        end)

        it("aborts the windows a broken loop left in flight before the next call", function()
            srv:control("config", { max_rows = 60000, latency = 0.2 })
            local x = support.client(srv)
            local it = x:each("cdr_1", { from = "2026-01-01", to = "2026-06-30" })
            assert.is_table(it()) -- one row read; the second window is in flight now
            assert.equal("25", x:services()[1].licenses)
            assert.is_true(x:stats().calls >= 3)
            x:close()
        end)

        it("aborts at once, through the loop's closing value, on Lua 5.4", function()
            if _VERSION ~= "Lua 5.4" then
                pending("closing values of for loops need Lua 5.4")
                return
            end
            srv:control("config", { max_rows = 60000, latency = 0.2 })
            local x = support.client(srv)
            local chunk = load([[
                local x = ...
                for _ in x:each("cdr_1", { from = "2026-01-01", to = "2026-06-30" }) do
                    break
                end
                return x._ctx.transport:inflight()
            ]])
            assert.equal(0, chunk(x))
            x:close()
        end)

        it("raises the structured error on a refused range", function()
            local ok, err = pcall(c.each, c, "agent_1", { from = "2026-01-01", to = "2026-03-01" })
            assert.is_false(ok)
            assert.equal("params", err.kind)
        end)
    end)

    describe("aggregates", function()
        it("refuse a range longer than one window, spending nothing", function()
            local rows, err = c:agent_1 { from = "2026-01-01", to = "2026-02-15" }
            assert.is_nil(rows)
            assert.equal("params", err.kind)
            assert.matches("per = ", err.message)
            assert.equal(0, #srv:log())
        end)

        it("answer one call for a range of one window", function()
            local rows, meta = c:agent_1 { from = "2026-01-01", to = "2026-01-31" }
            assert.equal(5, #rows)
            assert.equal(1, meta.calls)
            assert.equal("20260101000000", srv:log()[1].params.date_ini)
            assert.equal("20260131235959", srv:log()[1].params.date_end)
        end)

        it("answer one call per period with per, each labelled, fields untouched", function()
            local periods, meta = c:agent_1 { from = "2026-01-01", to = "2026-03-10", per = "month" }
            assert.equal(3, #periods)
            assert.same({ "2026-01", "2026-02", "2026-03" },
                { periods[1].period, periods[2].period, periods[3].period })
            assert.equal("2026-03-01 00:00:00", periods[3].from)
            assert.equal("2026-03-10 23:59:59", periods[3].to)
            assert.equal(3, meta.calls)
            for _, p in ipairs(periods) do
                for _, row in ipairs(p.rows) do
                    assert.is_nil(row.period)
                    assert.is_string(row.agent_id)
                end
            end
            -- figures depend on the span asked: February (28 days) differs from January.
            assert.are_not.equal(periods[1].rows[1].calls, periods[2].rows[1].calls)
            local days = c:agent_1 { from = "2026-01-30", to = "2026-02-02", per = "day" }
            assert.equal(4, #days)
            assert.equal("2026-02-01", days[3].period)
            local weeks = c:agent_1 { from = "2026-01-01", to = "2026-01-31", per = "week" }
            assert.equal("week of 2025-12-29", weeks[1].period)   -- 2026-01-01 is a Thursday
            assert.equal("2026-01-01 00:00:00", weeks[1].from)
            assert.equal("2026-01-04 23:59:59", weeks[1].to)
            assert.equal("week of 2026-01-26", weeks[#weeks].period)
        end)

        it("respect skill_5's 24-hour limit", function()
            local rows, err = c:skill_5 { skill_id = "all", from = "2026-01-01", to = "2026-01-02" }
            assert.is_nil(rows)
            assert.matches("24 hours", err.message)
            local days = assert(c:skill_5 { skill_id = "all", from = "2026-01-01", to = "2026-01-03", per = "day" })
            assert.equal(3, #days)
            rows, err = c:skill_5 { skill_id = "all", from = "2026-01-01", to = "2026-01-03", per = "week" }
            assert.is_nil(rows)
            assert.equal("params", err.kind)
            assert.equal(3, #srv:log())
        end)
    end)

    describe("reports that cannot be split", function()
        it("campaign_3 takes at most one window", function()
            local rows, err = c:campaign_3 { campaign_id = "all", from = "2026-01-01", to = "2026-03-01" }
            assert.is_nil(rows)
            assert.matches("cannot be split", err.message)
            assert.equal(0, #srv:log())
        end)

        it("a bucketed report is cut and halved on its boundary only", function()
            -- agent_7 rows are day buckets: windows end at 23:59:59.
            local p = assert(c:plan("agent_7", { from = "2026-01-01 08:00", to = "2026-03-01" }))
            for i = 1, #p.windows - 1 do
                assert.matches("23:59:59$", p.windows[i].to)
            end
            local rows, meta = c:agent_7 { from = "2026-01-01", to = "2026-01-20", max_rows = 150 }
            assert.is_table(rows, tostring(meta))
            for _, w in ipairs(meta.windows) do
                assert.matches("00:00:00$", w.from)
                assert.matches("23:59:59$", w.to)
            end
            assert.is_true(meta.truncated > 0)
        end)
    end)

    describe("dates", function()
        it("accept the documented forms; a date-only 'to' is the end of that day", function()
            local forms = {
                { "20260105000000", "20260106235959" },
                { "2026-01-05", "2026-01-06" },
                { "2026-01-05 00:00", "2026-01-06 23:59:59" },
                { { year = 2026, month = 1, day = 5 }, { year = 2026, month = 1, day = 6 } },
                { dates.parse("2026-01-05") + 5 * 3600, dates.parse("2026-01-06", true) + 5 * 3600 },
            }
            for _, f in ipairs(forms) do
                srv:control("reset")
                local rows = assert(c:cdr_1 { from = f[1], to = f[2] })
                assert.equal(200, #rows)
                local entry = srv:log()[1]
                assert.equal("20260105000000", entry.params.date_ini)
                assert.equal("20260106235959", entry.params.date_end)
            end
            srv:control("reset")
            assert.equal(200, #assert(c:cdr_1 { date_ini = "2026-01-05", date_end = "2026-01-06" }))
            assert.equal("20260106235959", srv:log()[1].params.date_end)
        end)

        it("refuse bad ranges before any call", function()
            local bad = {
                { from = "2026-01-05" },
                { from = "2026-02-30", to = "2026-03-01" },
                { from = "2026-01-05", to = "2026-01-01" },
                { from = "yesterday", to = "2026-01-01" },
                { from = "2026-01-01", to = "2026-01-02", date_ini = "20260101000000" },
                { from = 1.5, to = 2 },
                {},
            }
            for _, params in ipairs(bad) do
                local rows, err = c:cdr_1(params)
                assert.is_nil(rows)
                assert.equal("params", err.kind)
            end
            local rows, err = c:services { from = "2026-01-01", to = "2026-01-02" }
            assert.is_nil(rows)
            assert.matches("takes no date range", err.message)
            assert.equal(0, #srv:log())
        end)

        it("do not depend on the machine's time zone", function()
            local code = [[
                package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
                local d = require "wolkvox.dates"
                local w = require "wolkvox.call.windows"
                local out = {}
                for _, x in ipairs(w.split(d.parse("2026-03-01"), d.parse("2026-11-15", true), 31 * 86400 - 1)) do
                    out[#out + 1] = d.format(x.from) .. "-" .. d.format(x.to)
                end
                out[#out + 1] = d.format(d.parse(1772341200, false, -18000))
                for _, p in ipairs(w.periods(d.parse("2026-03-07"), d.parse("2026-03-30"), "week")) do
                    out[#out + 1] = p.label
                end
                io.write(table.concat(out, ","))
            ]]
            local function run(tz)
                local p = io.popen("env -u LD_PRELOAD TZ=" .. tz .. " lua5.4 -e '" .. code .. "'")
                local s = p:read("*a")
                p:close()
                return s
            end
            local utc, bogota, tokyo = run("UTC"), run("America/Bogota"), run("Asia/Tokyo")
            assert.matches("^20260301000000%-20260331235959,", utc)
            assert.truthy(utc:find("20260301000000,", 1, true)) -- 2026-03-01 05:00 UTC, in UTC-5
            assert.equal(utc, bogota)
            assert.equal(utc, tokyo)
        end)
    end)
end)
