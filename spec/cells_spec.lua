-- core.cells: the common case of a row's typed values for a database load
-- (issue #22's speed), made in C.  It must give exactly what the loader's
-- Lua path gives, and hand every other row to that path: the rules one by
-- one, then whole loads into SQLite with it and without it, compared row
-- for row (the fake's month of call detail, aggregates by day, a lookup,
-- and hostile rows that take every way out of it).
local core = require "wolkvox.core"
local load = require "wolkvox.out.load"
local pg = require "pg"
local support = require "support"

local cells = core.cells
local OWN, JSON, TEXT, STAMP, MEMO = 1, 2, 3, 4, 5

describe("core.cells", function()
    -- The columns: a text, a number (its cache), a timestamp, our own, JSON.
    local names = { "name", "cost", "date", "_unfit", "extra" }
    local kinds = { TEXT, MEMO, STAMP, OWN, JSON }
    local plain = { name = true, cost = true, date = true, extra = true }
    local function memos()
        return { [2] = { n = 3, ["1.50"] = "1.5", ["-"] = false, ["abc"] = {} } }
    end
    local days = { ["2026-01-05"] = true, ["2026-02-30"] = false }

    -- cells() on `row` with a fresh buffer holding stale values: what it
    -- returned and the buffer.
    local function run(row, opts)
        opts = opts or {}
        local buf = { "stale", "stale", "stale", "stale", "stale", "stale", "stale" }
        local ok = cells(row, opts.plain or plain, names, opts.kinds or kinds, opts.memos or memos(),
            opts.days or days, opts.suffix or "-05:00", buf, 2)
        return ok, buf
    end

    it("fills every column of a plain row the loader's way, our own columns nil", function()
        local ok, buf = run { name = "Ana", cost = "1.50", date = "2026-01-05 23:59:59" }
        assert.is_true(ok)
        assert.same({ "stale", "stale", "Ana", "1.5", "2026-01-05 23:59:59-05:00" }, { buf[1], buf[2], buf[3],
            buf[4], buf[5] })
        assert.is_nil(buf[6]) -- _unfit
        assert.is_nil(buf[7]) -- a JSON column with no value
        -- Missing, "", "-" and "--" are nil whatever the column; a cached
        -- false is nil.
        for _, empty in ipairs { "", "-", "--" } do
            ok, buf = run { name = empty, cost = "-", date = empty }
            assert.is_true(ok)
            assert.is_nil(buf[3] or buf[4] or buf[5])
        end
        ok, buf = run {}
        assert.is_true(ok)
        assert.is_nil(buf[3] or buf[4] or buf[5] or buf[6] or buf[7])
        -- Text is itself: tabs, backslashes, "\N", bytes that are not UTF-8.
        ok, buf = run { name = "a\tb\\N\255" }
        assert.is_true(ok)
        assert.equal("a\tb\\N\255", buf[3])
    end)

    it("hands the row to the Lua path for anything else", function()
        local cases = {
            { { name = "x", brand_new = "y" }, "a field that is not a column" },
            { { name = "x", _unfit = "y" }, "one of our own columns sent by the server" },
            { { name = "x", [1] = "y" }, "a key that is not a string" },
            { setmetatable({ name = "x" }, {}), "a row with a metatable" },
            { { name = "nul\0byte" }, "text with a NUL" },
            { { name = 42 }, "a number" },
            { { name = true }, "a boolean" },
            { { name = { 1 } }, "a table" },
            { { name = core.null }, "JSON null" },
            { { cost = "2.25" }, "a value not cached yet" },
            { { cost = "abc" }, "a value cached as unfit" },
            { { date = "2026-01-06 10:00:00" }, "a day not read yet" },
            { { date = "2026-02-30 10:00:00" }, "a day that is not real" },
            { { date = "2026-01-05 24:00:00" }, "hour 24" },
            { { date = "2026-01-05 10:60:00" }, "minute 60" },
            { { date = "2026-01-05T10:00:00" }, "another form" },
            { { date = "2026-01-05 10:00:00 " }, "a space after" },
            { { date = "2026-01-05" }, "a day alone" },
            { { extra = "{}" }, "a value for a JSON column" },
        }
        for _, case in ipairs(cases) do
            local ok = run(case[1])
            assert.is_false(ok, case[2])
        end
        -- A memo that is not a table, an unknown kind: the Lua path too.
        assert.is_false((run({ cost = "1.50" }, { memos = { [2] = "x" } })))
        assert.is_false((run({ name = "x" }, { kinds = { 9, MEMO, STAMP, OWN, JSON } })))
    end)

    it("refuses arguments it cannot use, with a clear error", function()
        local ok, err = pcall(cells, {}, plain, names, kinds, memos(), days, ("x"):rep(33), {}, 0)
        assert.is_false(ok)
        assert.matches("too long", err)
        ok, err = pcall(cells, {}, plain, names, kinds, memos(), days, "", {}, -1)
        assert.is_false(ok)
        assert.matches("out of range", err)
        ok, err = pcall(cells, "row", plain, names, kinds, memos(), days, "", {}, 0)
        assert.is_false(ok)
        assert.matches("table expected", err)
    end)
end)

describe("a load with core.cells and without it #db", function()
    local ok_dbi, why_dbi = pg.dbi("SQLite3")
    if not ok_dbi then
        pending(why_dbi)
        return
    end
    local srv, c, dir
    support.suite({}, { state_dir = false }, function(s, client) srv, c = s, client end)
    setup(function() dir = support.tmpdir() end)
    teardown(function() os.execute("rm -rf " .. support.q(dir)) end)

    local function query(path, sql)
        local code, out = support.sh("sqlite3 -batch " .. support.q(path) .. " " .. support.q(sql))
        assert(code == 0, out)
        return out
    end

    -- The export of `params` into a new SQLite file, with core.cells or
    -- without: the file and how many rows cells made.
    local function export(endpoint, params, with_cells, name)
        local path = dir .. "/" .. name .. ".db"
        local made = 0
        load.cells = with_cells and function(...)
            local ok = cells(...)
            made = made + (ok and 1 or 0)
            return ok
        end or false
        local ok, n, err = pcall(c.export, c, endpoint, params, { into = "sqlite:" .. path })
        load.cells = cells
        assert(ok, n)
        assert.is_number(n, tostring(err))
        return path, made, n
    end

    it("gives the same tables: a month of call detail, aggregates by day, a lookup", function()
        for _, case in ipairs {
            { "cdr_1", { from = "2026-01-01", to = "2026-01-31" }, "conn_id", "cdr_1" },
            { "agent_1", { from = "2026-11-01", to = "2026-11-03", per = "day" }, "_period_start, agent_id",
                "agent_1" },
            { "agents", {}, "agent_id", "agents" },
        } do
            local name, params, order, tbl = case[1], case[2], case[3], case[4]
            local a, made, n = export(name, params, true, name .. "_cells")
            local b, none = export(name, params, false, name .. "_lua")
            assert.equal(0, none)
            assert.is_true(n > 0)
            -- (the first row of each cached value goes the Lua way)
            assert.is_true(made > n / 2, name .. ": " .. made .. " of " .. n .. " rows made by cells")
            local sql = "SELECT * FROM " .. tbl .. " ORDER BY " .. order
            local want, got = query(b, sql), query(a, sql)
            if name == "agents" then
                -- The lookup's times are the fake's now, a second apart on a
                -- slow run: their form is compared, not their second.
                local function steady(text)
                    return (text:gsub("%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d([+-]%d%d:%d%d)", "<now>%1"))
                end
                want, got = steady(want), steady(got)
            end
            assert.equal(want, got)
        end
    end)

    it("gives the same tables for hostile rows, each way out of it taken", function()
        local rows = {}
        local odd = { "", "-", "--", "1.5", "abc", "x\0y", "2026-02-30 10:00:00", "2026-01-01 24:00:00",
            "2026-01-01T10:00:00", "1999-12-31 10:00:00", "00:01:02", "12.5%", "\\N", "a\tb" }
        for i = 1, 60 do
            local v = odd[i % #odd + 1]
            rows[i] = { conn_id = tostring(i % 50), date = i % 3 == 0 and v or "2026-01-01 10:00:00",
                agent_name = i % 4 == 0 and v or "agent " .. i, cost = i % 2 == 0 and v or "1.5",
                time_seg = v, brand_new = i % 7 == 0 and v or nil, _unfit = i == 13 and "mine" or nil,
                agent_id = i % 5 == 0 and i or nil }
        end
        srv:control("config", { fixtures = { { match = "cdr_1", body = { code = 200, msg = "ok", data = rows } } } })
        local params = { from = "2026-01-01", to = "2026-01-01" }
        local a, made = export("cdr_1", params, true, "hostile_cells")
        local b = export("cdr_1", params, false, "hostile_lua")
        assert.is_true(made > 0 and made < 60, made .. " rows made by cells")
        local sql = "SELECT * FROM cdr_1 ORDER BY conn_id"
        local got = query(a, sql)
        assert.equal(query(b, sql), got)
        assert.equal("50", query(a, "SELECT count(*) FROM cdr_1"):match("%d+"))
        assert.matches("mine", query(a, "SELECT _unfit FROM cdr_1 WHERE conn_id = '13'"), 1, true)
    end)
end)
