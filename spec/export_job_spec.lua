-- c:export: rows written window by window in flat memory, byte for byte what
-- c:report and a writer make; partial results; checkpoints and resume.
local core = require "wolkvox.core"
local export = require "wolkvox.export"
local support = require "support"

local spit = support.spit

local SIX = { from = "2026-01-01", to = "2026-06-30" }

-- What c:report and a writer of `fmt` make of `params`.
local function reference(c, name, params, fmt, path)
    local rows = assert(c:report(name, params))
    local f = assert(io.open(path, "wb"))
    local cols = (fmt == "csv" or fmt == "table") and export.columns(name) or nil
    local w = assert(export.writer(fmt, f, { columns = cols }))
    for _, row in ipairs(rows) do
        assert(w:write(row))
    end
    assert(w:close())
    f:close()
    return support.read(path), #rows
end

local function requests(srv)
    return srv:control("stats").requests
end

describe("c:export", function()
    local srv, c, dir
    support.suite({ max_rows = 500, rows_per_day = 60 }, { max_rows = 500, spool_dir = "/tmp" },
        function(s, x) srv, c = s, x end)
    setup(function() dir = support.tmpdir() end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

    for _, order in ipairs { "prefix", "subset" } do
        for _, fmt in ipairs { "csv", "ndjson", "json", "table" } do
            it("writes " .. fmt .. " byte for byte as report + writer, windows split at the cap ("
                .. order .. " truncation)", function()
                srv:control("config", { truncation = order })
                local want, nrows = reference(c, "cdr_1", SIX, fmt, dir .. "/want")
                srv:control("reset")
                srv:control("config", { truncation = order })
                local n, meta = c:export("cdr_1", SIX, { format = fmt, output = dir .. "/got" })
                assert.is_truthy(n, tostring(meta))
                assert.equal(nrows, n)
                assert.is_true(meta.truncated > 0)
                assert.equal(want, support.read(dir .. "/got"))
                assert.equal(meta.calls, requests(srv))
            end)
        end
    end

    it("keeps a window's rows on disk, not in memory: the Lua heap stays flat", function()
        srv:control("config", { max_rows = 60000, rows_per_day = 2000 })
        local range = { from = "2026-01-01", to = "2026-01-20", max_rows = 60000 }
        collectgarbage("collect")
        local base = collectgarbage("count")
        local rows = assert(c:report("cdr_1", range))
        local held = collectgarbage("count") - base
        assert.equal(40000, #rows)
        rows = nil -- luacheck: ignore 311
        collectgarbage("collect")
        local peak, batches, n = 0, 0, 0
        assert(c:export("cdr_1", range, { on_rows = function(list)
            batches, n = batches + 1, n + #list
            collectgarbage("collect")
            peak = math.max(peak, collectgarbage("count") - base)
        end }))
        assert.equal(40000, n)
        assert.is_true(batches > 10, "rows came in batches (" .. batches .. ")")
        -- One batch of rows, not two windows of them.
        assert.is_true(peak < held / 8, ("peak %.0f KiB against %.0f KiB for report"):format(peak, held))
    end)

    it("makes each() flat too: a window's rows come from disk in batches", function()
        srv:control("config", { max_rows = 60000, rows_per_day = 2000 })
        local n = 0
        for _ in c:each("cdr_1", { from = "2026-01-01", to = "2026-01-10", max_rows = 60000 }) do
            n = n + 1
        end
        assert.equal(20000, n)
    end)

    -- At 10 rows a day a month fits in one call: the n-th call is the n-th window.
    local function sparse()
        srv:control("config", { rows_per_day = 10 })
    end

    it("hands over the rows of the windows before a failed one, names it, and says what was done", function()
        sparse()
        local three = { { match = "cdr_1", call = 3, status = 502 }, { match = "cdr_1", call = 4, status = 502 },
            { match = "cdr_1", call = 5, status = 502 } }
        support.faults(srv, three)
        local p = { from = "2026-01-01", to = "2026-03-31", max_concurrent = 1, retry_base = 0.01 }
        local rows, err = c:report("cdr_1", p)
        assert.is_nil(rows)
        assert.equal("http", err.kind)
        assert.same({ from = "2026-03-04 00:00:00", to = "2026-03-31 23:59:59" }, err.window, tostring(err))
        assert.equal(2, #err.partial.windows)
        assert.equal(62 * 10, #err.partial.rows)
        assert.matches("2 windows before it were finished", tostring(err))
        -- The same through export and each.
        srv:control("reset")
        sparse()
        support.faults(srv, three)
        local n, e2 = c:export("cdr_1", p, { output = dir .. "/part.csv" })
        assert.is_nil(n)
        assert.equal(2, #e2.partial.windows)
        assert.equal(62 * 10, e2.partial.rows)
        -- Kept as part.csv.part, never under the final name (a half result
        -- that looks whole).
        assert.equal(dir .. "/part.csv.part", e2.partial.file)
        assert.is_nil(io.open(dir .. "/part.csv"))
        local lines = select(2, support.read(dir .. "/part.csv.part"):gsub("\n", ""))
        assert.equal(62 * 10 + 1, lines)
        srv:control("reset")
        sparse()
        support.faults(srv, three)
        local seen = 0
        local ok, e3 = pcall(function()
            for _ in c:each("cdr_1", p) do
                seen = seen + 1
            end
        end)
        assert.is_false(ok)
        assert.equal("http", e3.kind)
        assert.equal(62 * 10, seen)
    end)

    it("refuses bad options before spending a call", function()
        local cases = {
            { { output = dir .. "/a", file = io.stdout }, "exactly one of" },
            { {}, "exactly one of" },
            { { output = dir .. "/a", colour = "red" }, "unknown option 'colour'" },
            { { output = dir .. "/a", format = "xml" }, "unknown format 'xml'" },
            { { file = io.stdout, checkpoint = dir .. "/cp" }, "needs output = PATH" },
            { { output = dir .. "/a", format = "table", checkpoint = dir .. "/cp" }, "csv, ndjson and json" },
            { { output = dir .. "/a", checkpoint = dir .. "/a" }, "different files" },
            { { on_rows = "print" }, "on_rows must be a function" },
        }
        for _, case in ipairs(cases) do
            local n, err = c:export("cdr_1", SIX, case[1])
            assert.is_nil(n)
            assert.equal("params", err.kind)
            assert.matches(case[2], err.message, 1, true)
        end
        local n, err = c:export("cdr_1", SIX, "out.csv")
        assert.is_nil(n)
        assert.matches("table of options", err.message, 1, true)
        assert.equal(0, requests(srv))
    end)

    it("says when the output cannot be written (a full disk), as kind output", function()
        local n, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-31" }, { output = "/dev/full" })
        assert.is_nil(n)
        assert.equal("output", err.kind)
        assert.matches("No space left", err.message)
        local n2, err2 = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-31" },
            { output = dir .. "/no/such/dir/x.csv" })
        assert.is_nil(n2)
        assert.equal("output", err2.kind)
    end)

    it("writes what map gives: a row, none (nil), or a list of rows", function()
        local jan = { from = "2026-01-01", to = "2026-01-02" }
        local out = dir .. "/mapped.ndjson"
        local i = 0
        assert(c:export("cdr_1", jan, { format = "ndjson", output = out, map = function(row, w)
            i = i + 1
            if i % 3 == 1 then
                return nil
            elseif i % 3 == 2 then
                return { conn_id = row.conn_id, from = w.from }
            end
            return { { conn_id = row.conn_id, n = 1 }, { conn_id = row.conn_id, n = 2 } }
        end }))
        local lines = {}
        for line in support.read(out):gmatch("[^\n]+") do
            lines[#lines + 1] = core.decode(line)
        end
        assert.equal(120, i) -- 60 rows a day
        assert.equal(40 + 40 * 2, #lines)
        assert.equal("2026-01-01 00:00:00", lines[1].from)
        assert.same({ 1, 2 }, { lines[2].n, lines[3].n })
        assert.equal(lines[2].conn_id, lines[3].conn_id)
    end)

    it("stops when on_rows returns false, with its reason", function()
        local n, err = c:export("cdr_1", SIX, { on_rows = function() return false, "enough" end })
        assert.is_nil(n)
        assert.equal("output", err.kind)
        assert.matches("enough", err.message)
    end)

    describe("with a checkpoint", function()
        it("finishes after a failure, fetching only the windows not yet written, byte for byte", function()
            sparse()
            local want = reference(c, "cdr_1", SIX, "csv", dir .. "/want")
            local full = requests(srv)
            srv:control("reset")
            sparse()
            local out, cp = dir .. "/cp.csv", dir .. "/cp.json"
            os.remove(out)
            os.remove(cp)
            local p = { from = SIX.from, to = SIX.to, max_concurrent = 1, retries = 0 }
            support.faults(srv, { { match = "cdr_1", call = 4, status = 502 } })
            local n, err = c:export("cdr_1", p, { output = out, checkpoint = cp })
            assert.is_nil(n)
            assert.equal(3, #err.partial.windows)
            local first = requests(srv)
            local saved = core.decode(support.read(cp))
            assert.equal("2026-04-03 23:59:59", saved.done_to)
            assert.is_nil(support.read(cp):find(srv.token, 1, true))
            srv:control("reset")
            sparse()
            local n2, meta = c:export("cdr_1", p, { output = out, checkpoint = cp })
            assert.is_truthy(n2, tostring(meta))
            assert.is_true(meta.resumed)
            assert.equal(want, support.read(out))
            -- Calls: the uninterrupted run's, plus the one that failed.
            assert.is_true(first + requests(srv) <= full + 1, first .. " + " .. requests(srv) .. " vs " .. full)
            -- Finished: another run spends nothing and leaves the file alone.
            srv:control("reset")
            local n3, meta3 = c:export("cdr_1", p, { output = out, checkpoint = cp })
            assert.is_truthy(n3)
            assert.is_true(meta3.complete)
            assert.equal(0, requests(srv))
            assert.equal(want, support.read(out))
        end)

        it("refuses a checkpoint made for another job, spending nothing", function()
            local out, cp = dir .. "/o.csv", dir .. "/o.json"
            assert(c:export("cdr_1", { from = "2026-01-01", to = "2026-01-31" }, { output = out, checkpoint = cp }))
            srv:control("reset")
            for _, case in ipairs {
                { "cdr_1", { from = "2026-01-01", to = "2026-02-28" }, {} },
                { "cdr_2", { from = "2026-01-01", to = "2026-01-31" }, {} },
                { "cdr_1", { from = "2026-01-01", to = "2026-01-31" }, { format = "ndjson" } },
                { "cdr_1", { from = "2026-01-01", to = "2026-01-31" }, { bom = true } },
            } do
                local opts = case[3]
                opts.output, opts.checkpoint = out, cp
                local n, err = c:export(case[1], case[2], opts)
                assert.is_nil(n)
                assert.equal("params", err.kind)
                assert.matches("made for another job", err.message, 1, true)
            end
            spit(cp, "not json")
            local jan = { from = "2026-01-01", to = "2026-01-31" }
            local n, err = c:export("cdr_1", jan, { output = out, checkpoint = cp })
            assert.is_nil(n)
            assert.matches("not a lua-wolkvox checkpoint", err.message, 1, true)
            assert.equal(0, requests(srv))
        end)

        it("refuses a second export of the same checkpoint while the first runs, spending nothing", function()
            local out, cp = dir .. "/two.csv", dir .. "/two.json"
            -- Another process holds the checkpoint (as a running export does).
            local p = io.popen(support.lua_command(([[
                local lock = assert(require("wolkvox.core").lock(%q))
                io.write("held\n") io.stdout:flush()
                io.read("*l")
                lock:release()
            ]]):format(cp .. ".lock")), "w")
            local held = support.wait_for(function()
                local probe = core.lock(cp .. ".lock")
                if not probe then
                    return true
                end
                probe:release()
            end, 10, "the other process to hold the checkpoint's lock")
            assert.is_true(held)
            local n, err = c:export("cdr_1", SIX, { output = out, checkpoint = cp })
            assert.is_nil(n)
            assert.equal("busy", err.kind)
            assert.matches("another process is running this export", err.message, 1, true)
            assert.equal(0, requests(srv))
            p:write("\n")
            p:close()
            -- Once it is gone the checkpoint is free again, and after any refusal too.
            sparse()
            assert(c:export("cdr_1", { from = "2026-01-01", to = "2026-01-31" }, { output = out, checkpoint = cp }))
            assert(c:export("cdr_1", { from = "2026-01-01", to = "2026-01-31" }, { output = out, checkpoint = cp }))
        end)

        it("refuses to resume when the output is shorter than the checkpoint says", function()
            local out, cp = dir .. "/s.csv", dir .. "/s.json"
            local p = { from = SIX.from, to = SIX.to, max_concurrent = 1, retries = 0 }
            sparse()
            support.faults(srv, { { match = "cdr_1", call = 3, status = 502 } })
            assert.is_nil((c:export("cdr_1", p, { output = out, checkpoint = cp })))
            spit(out .. ".part", "x")
            srv:control("reset")
            local n, err = c:export("cdr_1", p, { output = out, checkpoint = cp })
            assert.is_nil(n)
            assert.equal("params", err.kind)
            assert.matches("fewer than", err.message)
            assert.equal(0, requests(srv))
        end)

        it("survives kill -9 at any point: each rerun finishes byte for byte #slow", function()
            local want = reference(c, "cdr_1", SIX, "csv", dir .. "/want")
            local full = requests(srv)
            local token_file = dir .. "/token"
            spit(token_file, srv.token, "\n")
            local spool = dir .. "/spool"
            os.execute("mkdir -p '" .. spool .. "'")
            -- Killed at once, then once the fake has seen 2, 6 and 12 of its
            -- calls (each 0.2 s long: the kill lands inside a transfer).
            -- Points counted in calls, not seconds: a loaded machine may take
            -- longer than a fixed delay to make the first call.
            local resumed = 0
            for i, seen in ipairs { 0, 2, 6, 12 } do
                srv:control("reset")
                srv:control("config", { latency = 0.2 })
                local out, cp = dir .. "/k" .. i .. ".csv", dir .. "/k" .. i .. ".json"
                local code = ([[
                    local wv = require "wolkvox"
                    local c = assert(wv.new{ base_url = %q, token_file = %q, state_dir = false, max_rows = 500,
                        spool_dir = %q })
                    assert(c:export("cdr_1", { from = "2026-01-01", to = "2026-06-30" },
                        { output = %q, checkpoint = %q }))
                ]]):format(srv.url, token_file, spool, out, cp)
                local p = io.popen("env -u LD_PRELOAD sh -c '" .. (support.lua_command(code) .. " & echo $!")
                    :gsub("'", "'\\''") .. "'")
                local pid = tonumber(p:read("*l"))
                p:close()
                support.wait_for(function() return requests(srv) >= seen end, 60,
                    "the fake to see " .. seen .. " calls of the export")
                if seen > 0 then
                    -- (on purpose: the kill lands 0.05 s into the 0.2 s transfer just seen start)
                    core.sleep(0.05)
                end
                os.execute("kill -9 " .. pid .. " 2>/dev/null")
                support.wait_for(function() return not support.alive(pid) end, 10, "the killed export to be gone")
                local spent = requests(srv)
                local saved = support.slurp(cp)
                srv:control("reset")
                local n, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-06-30" },
                    { output = out, checkpoint = cp })
                assert.is_truthy(n, tostring(err))
                assert.equal(want, support.read(out), "killed after " .. seen .. " calls")
                -- The windows written are not asked again: the rerun spends what
                -- the rest of the range takes (window sizing may learn it in a
                -- call or two more than the first run did).
                local again = requests(srv)
                local written = saved and core.decode(saved).calls or 0
                assert.is_true(again <= full - written + 2,
                    ("killed after %d calls: %d calls again, %d of %d already written"):format(seen, again, written,
                        full))
                assert.is_true(spent >= seen, spent .. " calls before the kill")
                if written > 0 then
                    resumed = resumed + 1
                end
            end
            assert.is_true(resumed >= 1, "no rerun found windows already written")
            -- No spooled answer outlives its process.
            local left = io.popen("ls -A '" .. spool .. "'"):read("*a")
            assert.equal("", left)
        end)
    end)
end)
