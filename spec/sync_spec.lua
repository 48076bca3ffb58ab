-- c:sync and `wolkvox sync`: each run fetches what is new since the state's
-- watermark; runs together deliver exactly the rows of one report.
local core = require "wolkvox.core"
local support = require "support"

local function requests(srv)
    return srv:control("stats").requests
end

local function ids(rows)
    local out = {}
    for i, r in ipairs(rows) do
        out[i] = r.conn_id
    end
    return out
end

describe("c:sync", function()
    local srv, c, dir
    support.suite({ rows_per_day = 48 }, {}, function(s, x) srv, c = s, x end)
    setup(function() dir = support.tmpdir() end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

    local n = 0
    local function state()
        n = n + 1
        return dir .. "/s" .. n
    end

    it("two runs deliver together exactly the rows of one report, none twice", function()
        local st = state()
        local a, ma = c:sync("cdr_1", { state = st, since = "2026-01-01", ["until"] = "2026-01-10" })
        assert.is_truthy(a, tostring(ma))
        assert.equal("2026-01-10 23:59:59", ma.watermark)
        local b, mb = c:sync("cdr_1", { state = st, ["until"] = "2026-01-20", force = true })
        assert.is_truthy(b, tostring(mb))
        assert.equal("2026-01-10 23:00:00", mb.from) -- the overlap read again
        assert.is_true(mb.dropped > 0)
        local want = assert(c:report("cdr_1", { from = "2026-01-01", to = "2026-01-20" }))
        local got = ids(a)
        for _, id in ipairs(ids(b)) do
            got[#got + 1] = id
        end
        assert.same(ids(want), got)
        -- The state keeps the overlap's keys only, not every row.
        local saved = core.decode(support.read(st))
        local keys = 0
        for _ in pairs(saved.keys) do keys = keys + 1 end
        assert.is_true(keys > 0 and keys <= 48 / 24 + 1, "keys kept: " .. keys)
        assert.is_nil(support.read(st):find(srv.token, 1, true))
    end)

    it("catches rows recorded late, within the overlap", function()
        local st = state()
        srv:control("config", { recorded_until = "2026-01-10 23:20:00" })
        local a = assert(c:sync("cdr_1", { state = st, since = "2026-01-09", ["until"] = "2026-01-10" }))
        srv:control("config", { recorded_until = false })
        local b, mb = c:sync("cdr_1", { state = st, ["until"] = "2026-01-12", force = true })
        assert.is_truthy(b, tostring(mb))
        local want = assert(c:report("cdr_1", { from = "2026-01-09", to = "2026-01-12" }))
        local got = ids(a)
        for _, id in ipairs(ids(b)) do
            got[#got + 1] = id
        end
        table.sort(got)
        local w = ids(want)
        table.sort(w)
        assert.same(w, got)
        assert.equal(#a + #b, #want)
    end)

    it("appended to a file, two runs equal the report's CSV byte for byte", function()
        local st, out, ref = state(), dir .. "/sync.csv", dir .. "/report.csv"
        assert(c:sync("cdr_1", { state = st, since = "2026-01-01", ["until"] = "2026-01-07" },
            { output = out, append = true }))
        assert(c:sync("cdr_1", { state = st, ["until"] = "2026-01-14", force = true }, { output = out, append = true }))
        assert(c:export("cdr_1", { from = "2026-01-01", to = "2026-01-14" }, { output = ref }))
        assert.equal(support.read(ref), support.read(out))
    end)

    it("keeps what a failing run delivered, and the next run goes on from there", function()
        local st, out, ref = state(), dir .. "/f.csv", dir .. "/fref.csv"
        local p = { state = st, since = "2026-01-01", ["until"] = "2026-03-15", retries = 0, max_concurrent = 1 }
        support.faults(srv, { { match = "cdr_1", call = 2, status = 502 } })
        local got, err = c:sync("cdr_1", p, { output = out, append = true })
        assert.is_nil(got)
        assert.equal(1, #err.partial.windows)
        assert.equal("2026-01-31 23:59:59", core.decode(support.read(st)).watermark)
        srv:control("reset")
        p.since, p.force = nil, true
        assert(c:sync("cdr_1", p, { output = out, append = true }))
        assert(c:export("cdr_1", { from = "2026-01-01", to = "2026-03-15" }, { output = ref }))
        assert.equal(support.read(ref), support.read(out))
    end)

    it("run again at the live edge within the polling interval, warns and spends nothing unless forced", function()
        local st = state()
        local logged = {}
        local c2 = support.client(srv, { logger = function(level, msg) logged[#logged + 1] = level .. ": " .. msg end })
        -- From yesterday on the operation's clock: the run ends at now
        -- minus lag.  ("today" left nothing to sync, and no watermark, in
        -- the first minutes after the operation's midnight.)
        assert(c2:sync("cdr_1", { state = st, since = "yesterday" }))
        local before = requests(srv)
        local rows, meta = c2:sync("cdr_1", { state = st })
        assert.same({}, rows)
        assert.equal("interval", meta.skipped)
        assert.equal(before, requests(srv))
        assert.matches("polling interval", table.concat(logged, "\n"))
        assert.matches("force to sync anyway", table.concat(logged, "\n"))
        local rows2, meta2 = c2:sync("cdr_1", { state = st, force = true })
        assert.is_truthy(rows2, tostring(meta2))
        assert.is_nil(meta2.skipped) -- forced: not skipped (up to date when no second has passed)
        c2:close()
    end)

    it("catching up on time long past is not polling: a run right after another fetches it", function()
        local st = state()
        assert(c:sync("cdr_1", { state = st, since = "2026-01-01", ["until"] = "2026-01-02" }))
        local before = requests(srv)
        local rows, meta = c:sync("cdr_1", { state = st, ["until"] = "2026-01-03" })
        assert.is_truthy(rows, tostring(meta))
        assert.is_nil(meta.skipped)
        assert.is_true(#rows > 0)
        assert.is_true(requests(srv) > before)
        assert.equal("2026-01-03 23:59:59", meta.watermark)
    end)

    it("syncs aggregates per closed day, never a half day", function()
        local st = state()
        local a, ma = c:sync("cdr_2", { state = st, since = "2026-01-01", ["until"] = "2026-01-03 12:00", per = "day" })
        assert.is_truthy(a, tostring(ma))
        assert.equal("2026-01-02 23:59:59", ma.watermark)
        local b, mb = c:sync("cdr_2", { state = st, ["until"] = "2026-01-04 23:59:59", per = "day", force = true })
        assert.is_truthy(b, tostring(mb))
        assert.equal("2026-01-03 00:00:00", mb.from)
        local want = assert(c:report("cdr_2", { from = "2026-01-01", to = "2026-01-04", per = "day" }))
        local total = 0
        for _, p in ipairs(want) do
            total = total + #p.rows
        end
        assert.equal(total, #a + #b)
    end)

    it("refuses what cannot be synced, spending nothing", function()
        local st = state()
        assert(c:sync("cdr_1", { state = st, since = "2026-01-01", ["until"] = "2026-01-02" }))
        srv:control("reset")
        local cases = {
            { "cdr_1", { state = state() }, "needs since" },
            { "cdr_1", {}, "state = PATH" },
            { "cdr_2", { state = state(), since = "2026-01-01" }, "per = \"day\"" },
            { "cdr_3", { state = st, force = true }, "made for another sync" },
            { "cdr_1", { state = st, lag = -1 }, "lag must be" },
            { "cdr_1", { state = st, from = "2026-01-01" }, "not from/to" },
            { "cdr_1", { state = state(), since = "someday" }, "since" },
        }
        for _, case in ipairs(cases) do
            local rows, err = c:sync(case[1], case[2])
            assert.is_nil(rows, case[3])
            assert.equal("params", err.kind)
            assert.matches(case[3], err.message, 1, true)
        end
        local rows, err = c:sync("cdr_1", { state = state(), since = "2026-01-01" }, { output = dir .. "/x.json",
            format = "json", append = true })
        assert.is_nil(rows)
        assert.matches("append works with csv and ndjson", err.message, 1, true)
        assert.equal(0, requests(srv))
    end)

    it("refuses a second sync of the same state while one runs, spending nothing", function()
        local st = state()
        local lock = assert(core.lock(st .. ".lock"))
        local rows, err = c:sync("cdr_1", { state = st, since = "2026-01-01", ["until"] = "2026-01-02" })
        assert.is_nil(rows)
        assert.equal("busy", err.kind)
        assert.matches("another process is running this sync", err.message, 1, true)
        assert.equal(0, requests(srv))
        lock:release()
        assert(c:sync("cdr_1", { state = st, since = "2026-01-01", ["until"] = "2026-01-02" }))
    end)

    it("never reads before where the first run began", function()
        local st = state()
        assert(c:sync("cdr_1", { state = st, since = "2026-01-05 12:00", ["until"] = "2026-01-05 12:30" }))
        local _, meta = c:sync("cdr_1", { state = st, ["until"] = "2026-01-05 14:00", force = true })
        assert.equal("2026-01-05 12:00:00", meta.from)
    end)
end)
