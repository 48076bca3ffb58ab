-- Windows sized by the density the server's answers show (issue #13):
-- a truncated window is cut by its rows' times, windows not started yet by
-- the density of windows that fitted; never more calls than halving, and
-- every row exactly once whatever rows a truncated answer holds.
local dates = require "wolkvox.dates"
local data = require "wolkvox.fake.data"
local registry = require "wolkvox.api.registry"
local schedule = require "wolkvox.call.schedule"
local sizing = require "wolkvox.call.sizing"
local support = require "support"

local DAY = 86400
local FROM, TO = "2026-01-01", "2026-06-30"
local CDR_1 = registry.get("reports_manager/cdr_1")

-- The conn_ids the fake holds between `from` and `to` with `cfg`.
local function expected_ids(from, to, cfg)
    local rows = data.detail(CDR_1, dates.parse(from), dates.parse(to, true), {
        rows_per_day = cfg.rows_per_day or 100, rates = cfg.rates or {} }, math.huge)
    local out = {}
    for _, row in ipairs(rows) do
        out[#out + 1] = row.conn_id
    end
    return out
end

describe("window sizing", function()
    local srv, c
    support.suite({ max_rows = 500 }, { max_rows = 500, max_calls = 10000 }, function(s, x) srv, c = s, x end)

    after_each(function() sizing.density = true end)

    -- Six months of cdr_1 with the fake set to `cfg`: the rows, the meta
    -- and the calls the fake counted; by density or by halving; `limit`:
    -- max_concurrent (default: the client's 2).
    local function run(cfg, density, limit)
        srv:control("reset")
        srv:control("config", cfg)
        sizing.density = density
        local rows, meta = c:report("cdr_1", { from = FROM, to = TO, max_concurrent = limit })
        assert.is_table(rows, tostring(meta))
        return rows, meta, srv:control("stats").requests
    end

    -- Every row of the range exactly once (by conn_id), in time order.
    local function assert_every_row_once(rows, cfg)
        local want = expected_ids(FROM, TO, cfg)
        assert.equal(#want, #rows)
        local seen = {}
        for i, row in ipairs(rows) do
            assert.is_nil(seen[row.conn_id], "twice: " .. row.conn_id)
            seen[row.conn_id] = true
            assert.equal(want[i], row.conn_id)
        end
    end

    for _, order in ipairs { "prefix", "subset" } do
        describe("six months at 100 rows a day, a cap of 500, truncated answers as " .. order, function()
            local cfg = { truncation = order }
            local rows, meta, calls, logged

            -- One window at a time: with two in flight, which answer comes
            -- back first changes what the next windows are sized from, and
            -- the count varies by a call or two with the machine's load
            -- (still under halving's: see below).
            setup(function()
                rows, meta, calls = run(cfg, true, 1)
                logged = #support.calls(srv, "cdr_1")
            end)

            it("delivers every row of the range exactly once", function()
                assert_every_row_once(rows, cfg)
            end)

            it("spends at most 46 calls one window at a time (the bound is 37), each counted by the fake", function()
                assert.is_true(calls <= 46, calls .. " calls")
                assert.equal(calls, meta.calls)
                assert.equal(calls, logged)
            end)

            it("says which windows were truncated and which were kept", function()
                assert.equal(meta.calls, #meta.windows + meta.truncated)
                assert.is_true(meta.truncated > 0)
                local total = 0
                for i, w in ipairs(meta.windows) do
                    assert.is_true(w.rows < 500)
                    assert.is_true(dates.parse(w.to) - dates.parse(w.from) < 31 * DAY)
                    if i > 1 then
                        assert.equal(dates.parse(meta.windows[i - 1].to) + 1, dates.parse(w.from))
                    end
                    total = total + w.rows
                end
                assert.equal(FROM .. " 00:00:00", meta.windows[1].from)
                assert.equal(TO .. " 23:59:59", meta.windows[#meta.windows].to)
                assert.equal(#rows, total)
            end)
        end)
    end

    -- (#property: the lua5.4 flavour runs it; ASan and LuaJIT leave it out:
    -- the same C paths as the rest, sixteen six-month exports.)
    describe("never more calls than halving #slow #property", function()
        local cases = {
            { name = "uniform, 100 a day", cfg = {} },
            { name = "uniform, 20 a day", cfg = { rows_per_day = 20 } },
            { name = "one busy week",
                cfg = { rates = { { from = "2026-03-02", to = "2026-03-08", rows_per_day = 1000 } } } },
            { name = "two empty months",
                cfg = { rates = { { from = "2026-03-01", to = "2026-04-30", rows_per_day = 0 } } } },
        }
        for _, case in ipairs(cases) do
            for _, order in ipairs { "prefix", "subset" } do
                it(case.name .. ", " .. order, function()
                    local cfg = { truncation = order, rows_per_day = case.cfg.rows_per_day or 100,
                        rates = case.cfg.rates or {} }
                    local halved_rows, _, halved = run(cfg, false)
                    local rows, _, calls = run(cfg, true)
                    assert_every_row_once(halved_rows, cfg)
                    assert_every_row_once(rows, cfg)
                    assert.is_true(calls <= halved, calls .. " calls, halving " .. halved)
                end)
            end
        end
    end)

    it("the fake's rates give a period its own density", function()
        srv:control("config", { max_rows = 60000, rates = {
            { from = "2026-03-02", to = "2026-03-08", rows_per_day = 1000 },
            { from = "2026-04-01", to = "2026-04-30", rows_per_day = 0 } } })
        local rows = assert(c:report("cdr_1", { from = "2026-03-01", to = "2026-03-09", max_rows = 60000 }))
        assert.equal(100 + 7000 + 100, #rows)
        assert.equal("2026-03-02 00:00:00", rows[101].date)
        assert.equal(0, #assert(c:report("cdr_1", { from = "2026-04-01", to = "2026-04-30", max_rows = 60000 })))
        assert.equal(100, #assert(c:report("cdr_1", { from = "2026-05-01", to = "2026-05-01", max_rows = 60000 })))
    end)

    it("fails with 'truncated' on a second holding more than the cap, in few calls", function()
        for _, order in ipairs { "prefix", "subset" } do
            srv:control("reset")
            srv:control("config", { truncation = order, rows_per_day = 10, rates = {
                { from = "2026-01-10 12:00:00", to = "2026-01-10 12:00:00", rows_per_day = 600 * DAY } } })
            local rows, err = c:report("cdr_1", { from = "2026-01-01", to = "2026-01-31" })
            assert.is_nil(rows)
            assert.equal("truncated", err.kind)
            assert.is_true(dates.parse(err.window.to) - dates.parse(err.window.from) < 60)
            assert.is_true(err.calls <= 40, order .. ": " .. err.calls .. " calls")
        end
    end)
end)

describe("window sizing by a truncated answer's rows", function()
    local W = { from = dates.parse("2026-01-01"), to = dates.parse("2026-01-31", true) }

    local function job()
        return { mode = "windows", e = CDR_1, min_span = 60, max_rows = 500, total = 1, span_cap = math.huge }
    end

    -- A schedule holding `items` (no transport: nothing is started here).
    local function plan(items)
        local sched = schedule.new({}, 2, {})
        for _, item in ipairs(items) do
            sched:add(item)
        end
        return sched
    end

    local function rows_at(times)
        local out = {}
        for i, t in ipairs(times) do
            out[i] = { conn_id = tostring(i), date = type(t) == "number" and dates.iso(t) or t }
        end
        return out
    end

    -- The parts cover the window in order, each shorter than it and at
    -- least `min_span` long.
    local function assert_cover(parts, w, min_span)
        assert.equal(w.from, parts[1].from)
        assert.equal(w.to, parts[#parts].to)
        for i, p in ipairs(parts) do
            assert.is_true(p.to >= p.from)
            assert.is_true(p.to - p.from < w.to - w.from)
            assert.is_true(p.to - p.from + 1 >= min_span)
            if i > 1 then
                assert.equal(parts[i - 1].to + 1, p.from)
            end
        end
    end

    it("reads a row's time from the registry's time_field", function()
        assert.equal("date", CDR_1.time_field)
        assert.is_nil(registry.get("reports_manager/agent_7").time_field)     -- day buckets
        assert.is_nil(registry.get("reports_manager/campaign_3").time_field)  -- one call per range
    end)

    it("cuts where the first rows in time end, and the rest at their density", function()
        local times = {}
        for i = 1, 500 do
            times[i] = W.from + (i - 1) * 864 -- 100 a day: five days
        end
        local item = { from = W.from, to = W.to }
        local j = job()
        local parts = sizing.truncated(j, plan({ item }), item, rows_at(times))
        assert_cover(parts, W, 60)
        -- The first window holds the first 95 % of the rows seen, the rest 4.75 days each.
        assert.equal(times[475] - 1, parts[1].to)
        assert.is_true(#parts >= 6 and #parts <= 8)
    end)

    it("halves when the rows show no time: missing, unreadable, or outside the window", function()
        local rows = rows_at({ "", "soon", "2026-13-01 00:00:00", dates.iso(W.to + 5), dates.iso(W.from - 1) })
        rows[#rows + 1] = { conn_id = "x" }
        rows[#rows + 1] = "not a row"
        local item = { from = W.from, to = W.to }
        local parts = sizing.truncated(job(), plan({ item }), item, rows)
        assert.equal(2, #parts)
        assert_cover(parts, W, 60)
    end)

    it("never cuts below min_span when every row is at one instant, and stops there", function()
        for _, at in ipairs { W.from, W.from + 10 * DAY, W.to } do
            local times = {}
            for i = 1, 500 do
                times[i] = at
            end
            local item = { from = W.from, to = W.to }
            local j = job()
            local sched = plan({ item })
            local parts = sizing.truncated(j, sched, item, rows_at(times))
            assert_cover(parts, W, 60)
            assert.is_true(#parts <= sizing.MAX_PARTS + 1)
            -- Asked again and again around that instant, it ends at min_span.
            local w, n = nil, 0
            for _, p in ipairs(parts) do
                if p.from <= at and at <= p.to then
                    w = p
                end
            end
            while w do
                n = n + 1
                assert.is_true(n < 40)
                local next_parts = sizing.truncated(j, plan({ w }), w, rows_at(times))
                if not next_parts then
                    break
                end
                assert_cover(next_parts, w, math.min(60, w.to - w.from + 1))
                local found
                for _, p in ipairs(next_parts) do
                    if p.from <= at and at <= p.to then
                        found = p
                    end
                end
                w = found
            end
            assert.is_true(w.to - w.from + 1 <= 60)
        end
    end)

    it("rows in no order of time give the same cut as in order", function()
        local times = {}
        for i = 1, 500 do
            times[i] = W.from + (i - 1) * 864
        end
        local shuffled = {}
        for i = 1, 500 do
            shuffled[i] = times[(i * 7919) % 500 + 1]
        end
        local a = { from = W.from, to = W.to }
        local b = { from = W.from, to = W.to }
        assert.same(sizing.truncated(job(), plan({ a }), a, rows_at(times)),
            sizing.truncated(job(), plan({ b }), b, rows_at(shuffled)))
    end)

    it("halves, as before, when density sizing is off or the endpoint names no time field", function()
        local item = { from = W.from, to = W.to }
        local j = job()
        j.e = registry.get("reports_manager/agent_2")
        assert.is_nil(j.e.time_field)
        local times = {}
        for i = 1, 500 do
            times[i] = W.from + i
        end
        local parts = sizing.truncated(j, plan({ item }), item, rows_at(times))
        assert.equal(2, #parts)
        sizing.density = false
        item = { from = W.from, to = W.to }
        parts = sizing.truncated(job(), plan({ item }), item, rows_at(times))
        sizing.density = true
        assert.equal(2, #parts)
    end)

    it("a window that fitted joins the windows after it, never around one that was truncated", function()
        local j = job()
        local first = { from = W.from, to = W.from + 4 * DAY - 1 }
        local items = { first }
        local s = first.to + 1
        for _ = 1, 20 do
            items[#items + 1] = { from = s, to = s + DAY - 1 }
            s = s + DAY
        end
        local sched = plan(items)
        j.total = #items
        first.attempts = 1 -- started: not pending
        -- A truncated window known inside what would be joined.
        j.sizing = { truncated = { { from = W.from + 6 * DAY, to = W.from + 8 * DAY } }, target = sizing.TARGET }
        local rows = {}
        for i = 1, 400 do
            rows[i] = { conn_id = tostring(i) }
        end
        sizing.fitted(j, sched, first, rows)
        local pending = sched:pending()
        assert.is_true(#pending < 20)
        assert.equal(first.to + 1, pending[1].from)
        assert.equal(s - 1, pending[#pending].to)
        for i, p in ipairs(pending) do
            assert.is_false(p.from <= W.from + 6 * DAY and p.to >= W.from + 8 * DAY)
            assert.is_true(p.to - p.from < 31 * DAY)
            if i > 1 then
                assert.equal(pending[i - 1].to + 1, p.from)
            end
        end
        assert.equal(1 + #pending, j.total)
    end)
end)
