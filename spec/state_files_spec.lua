-- The files that vouch for an output (issue #20): checkpoints and sync
-- states are always read back whatever the rows made them (thousands of
-- keys, hundreds of columns); an edited or damaged one is refused, naming
-- the file, before any call; an output replaced by another of the same
-- size is not resumed.
local core = require "wolkvox.core"
local support = require "support"

local spit, slurp = support.spit, support.slurp
local json = require "wolkvox.json"

local function requests(srv)
    return srv:control("stats").requests
end

describe("state files", function()
    local srv, c, dir
    support.suite({ rows_per_day = 60 }, { spool_dir = "/tmp" }, function(s, x) srv, c = s, x end)
    setup(function() dir = support.tmpdir() end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

    -- A checkpoint of a job that stopped after some windows (the 3rd call fails).
    local function stopped_export(name)
        local out, cp = dir .. "/" .. name .. ".csv", dir .. "/" .. name .. ".ckpt"
        os.remove(cp)
        os.remove(out .. ".part")
        support.faults(srv, { { match = "cdr_1", call = 3, status = 502 } })
        local p = { from = "2026-01-01", to = "2026-06-30", max_concurrent = 1, retries = 0 }
        assert.is_nil((c:export("cdr_1", p, { output = out, checkpoint = cp })))
        srv:control("reset")
        return out, cp, p
    end

    describe("are read back whatever their size", function()
        it("a sync state holding the keys of a busy overlap (tens of KB)", function()
            srv:control("config", { rows_per_day = 800 })
            local st = dir .. "/busy.sync"
            local rows, meta = c:sync("cdr_1", { state = st, since = "2026-01-01", ["until"] = "2026-01-02",
                overlap = 2 * 86400 })
            assert.is_truthy(rows, tostring(meta))
            assert.is_true(#slurp(st) > 16 * 1024, "the state is " .. #slurp(st) .. " bytes")
            local again, meta2 = c:sync("cdr_1", { state = st, ["until"] = "2026-01-03", overlap = 2 * 86400 })
            assert.is_truthy(again, tostring(meta2))
            assert.equal(800, #again) -- the next day's rows, none of the first two again
            assert.equal(#rows, meta2.dropped)
        end)

        it("a checkpoint holding the columns of rows of 300 fields", function()
            local cols = {}
            for i = 1, 300 do
                cols[i] = "a_field_with_a_long_name_number_" .. i
            end
            cols[1] = "conn_id"
            local out, cp = dir .. "/wide.csv", dir .. "/wide.ckpt"
            local p = { from = "2026-01-01", to = "2026-01-31" }
            assert(c:export("cdr_1", p, { output = out, checkpoint = cp, columns = cols }))
            assert.is_true(#slurp(cp) > 4096)
            local before = requests(srv)
            local n, meta = c:export("cdr_1", p, { output = out, checkpoint = cp, columns = cols })
            assert.is_truthy(n, tostring(meta))
            assert.is_true(meta.complete)
            assert.equal(before, requests(srv))
        end)
    end)

    describe("edited or damaged, are refused before any call", function()
        local EDITS = {
            done_to = "not a date", bytes = 1.5, writer = "x", calls = -1, windows = "three", span_cap = 0,
            digest = "zz", complete = "yes",
        }
        for field, value in pairs(EDITS) do
            it("a checkpoint whose " .. field .. " was edited", function()
                local out, cp, p = stopped_export("edit-" .. field)
                local t = core.decode(slurp(cp))
                t[field] = value
                spit(cp, json.encode(t))
                local n, err = c:export("cdr_1", p, { output = out, checkpoint = cp })
                assert.is_nil(n)
                assert.equal("params", err.kind)
                assert.matches(cp, err.message, 1, true)
                assert.matches("'" .. field .. "'", err.message, 1, true)
                assert.equal(0, requests(srv))
            end)
        end

        it("a checkpoint whose writer state was edited (columns that are not names)", function()
            local out, cp, p = stopped_export("edit-cols")
            local t = core.decode(slurp(cp))
            t.writer.cols = { 1, 2, 3 }
            spit(cp, json.encode(t))
            local n, err = c:export("cdr_1", p, { output = out, checkpoint = cp })
            assert.is_nil(n)
            assert.equal("params", err.kind)
            assert.matches("'writer'", err.message, 1, true)
            assert.equal(0, requests(srv))
        end)

        local SYNC_EDITS = { watermark = "yesterday-ish", since = 5, keys = { k = "v" }, last_run = "now",
            bytes = 1.5, writer = "x", pending = "yes" }
        for field, value in pairs(SYNC_EDITS) do
            it("a sync state whose " .. field .. " was edited", function()
                local st, out = dir .. "/edit-" .. field .. ".sync", dir .. "/edit-" .. field .. ".csv"
                os.remove(st)
                os.remove(out)
                assert(c:sync("cdr_1", { state = st, since = "2026-01-01", ["until"] = "2026-01-02" },
                    { output = out, append = true }))
                srv:control("reset")
                local t = core.decode(slurp(st))
                t[field] = value
                spit(st, json.encode(t))
                local rows, err = c:sync("cdr_1", { state = st, ["until"] = "2026-01-05", force = true },
                    { output = out, append = true })
                assert.is_nil(rows)
                assert.equal("params", err.kind)
                assert.matches(st, err.message, 1, true)
                assert.equal(0, requests(srv))
            end)
        end

        it("a state that is not JSON, or larger than any state is", function()
            local out, cp, p = stopped_export("garbage")
            spit(cp, "{ not json")
            local n, err = c:export("cdr_1", p, { output = out, checkpoint = cp })
            assert.is_nil(n)
            assert.equal("params", err.kind)
            assert.matches("not a lua-wolkvox checkpoint", err.message, 1, true)
            os.execute("truncate -s 70M '" .. cp .. "'")
            n, err = c:export("cdr_1", p, { output = out, checkpoint = cp })
            assert.is_nil(n)
            assert.equal("params", err.kind)
            assert.matches("larger than a state file may be", err.message, 1, true)
            assert.equal(0, requests(srv))
        end)
    end)

    describe("vouch for the content they wrote, not only its size", function()
        it("a FILE.part replaced by another of the same size is not resumed", function()
            local out, cp, p = stopped_export("swap")
            local part = slurp(out .. ".part")
            spit(out .. ".part", (part:gsub("agent", "AGENT")))
            assert.equal(#part, #slurp(out .. ".part"))
            local n, err = c:export("cdr_1", p, { output = out, checkpoint = cp })
            assert.is_nil(n)
            assert.equal("params", err.kind)
            assert.matches("not what the checkpoint vouches for", err.message, 1, true)
            assert.equal(0, requests(srv))
            -- As it was, it is resumed and finished.
            spit(out .. ".part", part)
            assert(c:export("cdr_1", p, { output = out, checkpoint = cp }))
            assert.is_nil(io.open(out .. ".part"))
        end)

        it("a FILE.part that is a link, or another user's file, is not resumed", function()
            local out, cp, p = stopped_export("link")
            local part = out .. ".part"
            os.rename(part, part .. ".real")
            os.execute("ln -s '" .. part .. ".real' '" .. part .. "'")
            local n, err = c:export("cdr_1", p, { output = out, checkpoint = cp })
            assert.is_nil(n)
            assert.matches("symbolic link", err.message, 1, true)
            os.remove(part)
            os.rename(part .. ".real", part)
            if core.stat(part).uid == 0 then
                os.execute("chown nobody '" .. part .. "'")
                n, err = c:export("cdr_1", p, { output = out, checkpoint = cp })
                assert.is_nil(n)
                assert.matches("belongs to uid", err.message, 1, true)
            end
            assert.equal(0, requests(srv))
        end)
    end)
end)
