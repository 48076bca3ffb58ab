-- PostgreSQL through wolkvox.pg (lua-wolkvox's libpq binding, COPY) beside
-- LuaDBI (issue #22): the same rows give the same tables, row for row,
-- hostile values included (tabs, newlines, backslashes, "\.", NUL bytes,
-- a megabyte of text); a row the server refuses fails its window with a
-- clear error and leaves none of it.  And the binding's own edges: a wrong
-- URL, the server killed in the middle of a COPY, close twice, a
-- connection the collector takes.  A real server (spec/pg.lua).  Tagged #db;
-- the tests of thousands of rows also #slow (memcheck leaves them out).
local support = require "support"
local pg = require "pg"
local json = require "cjson"

describe("PostgreSQL through wolkvox.pg (COPY) #db", function()
    local have_pg, lib = pcall(require, "wolkvox.pg")
    if not (pg.available() and have_pg and pg.dbi("PostgreSQL")) then
        pending("needs PostgreSQL, LuaDBI's PostgreSQL driver and wolkvox.pg (make, with libpq-dev)")
        return
    end
    local db = require "wolkvox.out.db"
    local srv, c, pgsrv

    setup(function()
        srv = support.fake()
        c = support.client(srv, { state_dir = false })
        pgsrv = pg.start()
    end)

    teardown(function()
        db.pg_driver = nil
        c:close()
        srv:stop()
        pgsrv:stop()
    end)

    before_each(function()
        srv:control("reset")
        db.pg_driver = nil
    end)

    local function info()
        return { host = pgsrv.host, port = tostring(pgsrv.port), dbname = pgsrv.db, user = pgsrv.user }
    end

    -- The export of `params` into `tbl` through `driver`: its count (or
    -- nil and the error) and the driver the connection went through.
    local function export(driver, endpoint, params, tbl)
        db.pg_driver = driver
        local connect, used = db.connect, nil
        db.connect = function(...)
            local conn = connect(...)
            used = conn.driver
            return conn
        end
        local ok, n, err = pcall(c.export, c, endpoint, params, { into = pgsrv.url, table = tbl })
        db.connect = connect
        db.pg_driver = nil
        assert(ok, n)
        return n, err, used
    end

    local function dump(tbl, order, columns)
        return pgsrv:psql("SELECT " .. (columns or "*") .. " FROM " .. tbl .. " ORDER BY " .. order)
    end

    it("a month of call detail, aggregates by day and a lookup: the same tables through both drivers #slow",
        function()
        local cases = {
            { "cdr_1", { from = "2026-01-01", to = "2026-01-31" }, "conn_id" },
            { "agent_1", { from = "2026-11-01", to = "2026-11-03", per = "day" }, "_period_start, agent_id" },
            -- (the fake gives an agent's last_use as the time it answers: the
            -- two exports may fall in different seconds)
            { "agents", {}, "agent_id", "agent_id, agent_name, agent_dni, agent_status, agent_sso, enabled, _unfit, "
                .. "last_use IS NOT NULL" },
        }
        for _, case in ipairs(cases) do
            local name, params, order, columns = case[1], case[2], case[3], case[4]
            local tbl = name:gsub("%W", "_")
            local n1, e1, d1 = export("dbi", name, params, tbl .. "_dbi")
            local n2, e2, d2 = export("libpq", name, params, tbl .. "_copy")
            assert.same({ "dbi", "libpq" }, { d1, d2 })
            assert.is_number(n1, tostring(e1))
            assert.equal(n1, n2, tostring(e2))
            assert.is_true(n1 > 0)
            local a, b = dump(tbl .. "_dbi", order, columns), dump(tbl .. "_copy", order, columns)
            assert.equal(a, b)
            assert.equal(tostring(n1), pgsrv:psql("SELECT count(*) FROM " .. tbl .. "_copy"))
        end
    end)

    it("hostile values go through COPY exactly as through LuaDBI, and a key seen twice keeps its last row #slow",
        function()
            local huge = string.rep("x\t\\y\n", 200000) -- 1 MB, every byte COPY escapes
            local rows = {
                { conn_id = "1", date = "2026-01-01 10:00:00", agent_name = "tab\there", cost = "1.5" },
                { conn_id = "2", date = "2026-01-01 10:00:01", agent_name = "new\nline\r\nand CR" },
                { conn_id = "3", date = "2026-01-01 10:00:02", agent_name = "back\\slash \\N \\t" },
                { conn_id = "4", date = "2026-01-01 10:00:03", agent_name = "\\." },
                { conn_id = "5", date = "2026-01-01 10:00:04", agent_name = "\\.\n\\.\n" },
                { conn_id = "6", date = "2026-01-01 10:00:05", agent_name = "nul\0byte", cost = "x\0y" },
                { conn_id = "7", date = "2026-01-01 10:00:06", agent_name = huge },
                { conn_id = "8", date = "2026-01-01 10:00:07", agent_name = "ñandú 漢字 🙂", brand_new = "a\tb" },
                { conn_id = "9", date = "not\ta date", time_seg = "\\N", agent_name = "\\N" },
                { conn_id = "1", date = "2026-01-01 11:00:00", agent_name = "the last one\t", cost = "2" },
            }
            srv:control("config", { fixtures = { { match = "cdr_1",
                body = { code = 200, msg = "ok", data = rows } } } })
            local params = { from = "2026-01-01", to = "2026-01-01" }
            local n1, e1 = export("dbi", "cdr_1", params, "hostile_dbi")
            local n2, e2 = export("libpq", "cdr_1", params, "hostile_copy")
            assert.equal(10, n1, tostring(e1))
            assert.equal(10, n2, tostring(e2))
            assert.equal(dump("hostile_dbi", "conn_id"), dump("hostile_copy", "conn_id"))
            assert.equal("9", pgsrv:psql("SELECT count(*) FROM hostile_copy"))
            local got = {}
            for _, id in ipairs { "1", "2", "3", "4", "5", "8" } do
                got[id] = pgsrv:psql("SELECT agent_name FROM hostile_copy WHERE conn_id = '" .. id .. "'")
            end
            assert.same({ ["1"] = "the last one\t", ["2"] = "new\nline\r\nand CR", ["3"] = "back\\slash \\N \\t",
                ["4"] = "\\.", ["5"] = "\\.\n\\.\n", ["8"] = "ñandú 漢字 🙂" }, got)
            assert.equal(tostring(#huge),
                pgsrv:psql("SELECT length(agent_name) FROM hostile_copy WHERE conn_id = '7'"))
            assert.equal("2", pgsrv:psql("SELECT cost FROM hostile_copy WHERE conn_id = '1'"))
            assert.equal("a\tb", pgsrv:psql("SELECT brand_new FROM hostile_copy WHERE conn_id = '8'"))
            -- A NUL is no text of PostgreSQL's: kept in _unfit as \u0000.
            assert.same({ agent_name = "nul\\u0000byte", cost = "x\\u0000y" },
                json.decode(pgsrv:psql("SELECT _unfit FROM hostile_copy WHERE conn_id = '6'")))
            -- "\N" as text is text, not NULL; as a duration it does not fit.
            assert.same({ date = "not\ta date", time_seg = "\\N" },
                json.decode(pgsrv:psql("SELECT _unfit FROM hostile_copy WHERE conn_id = '9'")))
            assert.equal("t|\\N", pgsrv:psql("SELECT time_seg IS NULL, agent_name FROM hostile_copy "
                .. "WHERE conn_id = '9'"))
        end)

    it("keys seen again across merges sent while rows are read: the same table through both drivers #slow", function()
        -- Merges every 500 rows (so many while the rows of one answer are read).
        local load = require "wolkvox.out.load"
        local chunk, hold = load.MERGE_CHUNK, load.COPY_HOLD
        load.MERGE_CHUNK, load.COPY_HOLD = 500, 1500
        finally(function() load.MERGE_CHUNK, load.COPY_HOLD = chunk, hold end)
        local rows = {}
        for i = 1, 6000 do
            -- every 7th row repeats a key seen from 1 to 3,000 rows before, with new values
            local id = i % 7 == 0 and tostring(math.max(1, i - (i * 37) % 3000)) or tostring(i)
            rows[i] = { conn_id = id, date = "2026-01-01 10:00:00", agent_name = "row " .. i, time_seg = tostring(i) }
        end
        srv:control("config", { fixtures = { { match = "cdr_1", body = { code = 200, msg = "ok", data = rows } } } })
        local params = { from = "2026-01-01", to = "2026-01-01" }
        local n1, e1 = export("dbi", "cdr_1", params, "again_dbi")
        local n2, e2 = export("libpq", "cdr_1", params, "again_copy")
        assert.equal(6000, n1, tostring(e1))
        assert.equal(6000, n2, tostring(e2))
        assert.equal(dump("again_dbi", "conn_id"), dump("again_copy", "conn_id"))
        -- The last row of a key is the one kept.
        local last = {}
        for i, r in ipairs(rows) do
            last[r.conn_id] = i
        end
        local count = 0
        for _ in pairs(last) do
            count = count + 1
        end
        assert.equal(tostring(count), pgsrv:psql("SELECT count(*) FROM again_copy"))
        assert.equal("row " .. last["1"], pgsrv:psql("SELECT agent_name FROM again_copy WHERE conn_id = '1'"))
    end)

    it("a row the server refuses fails its window with a clear error and leaves none of it, through both #slow",
        function()
        -- Invalid UTF-8 in the 1,500th row of a window: the server refuses it.
        local rows = {}
        for i = 1, 3000 do
            rows[i] = { conn_id = tostring(i), date = "2026-01-01 10:00:00", agent_name = "ok " .. i }
        end
        rows[1500].agent_name = "bad \xff\xfe byte"
        -- (merges sent every 500 rows: the refusal comes after some went in)
        local load = require "wolkvox.out.load"
        local chunk = load.MERGE_CHUNK
        load.MERGE_CHUNK = 500
        finally(function() load.MERGE_CHUNK = chunk end)
        srv:control("config", { fixtures = { { match = "cdr_1", body = { code = 200, msg = "ok", data = rows } } } })
        local params = { from = "2026-01-01", to = "2026-01-01" }
        for _, driver in ipairs { "dbi", "libpq" } do
            local tbl = "refused_" .. driver
            local n, err, used = export(driver, "cdr_1", params, tbl)
            assert.equal(driver, used)
            if os.getenv("SPEC_DEBUG") then
                io.stderr:write(driver, " ", tostring(n), " ", tostring(err), "\n")
            end
            if n ~= nil then
                -- (the client's JSON reader may already have replaced the bytes: then both load all)
                assert.equal(3000, n)
            else
                assert.equal("output", err.kind, tostring(err))
                assert.matches("UTF8", tostring(err), 1, true)
                assert.equal("0", pgsrv:psql("SELECT count(*) FROM " .. tbl))
                assert.equal("0", pgsrv:psql("SELECT count(*) FROM _wolkvox_loads WHERE \"table\" = '" .. tbl .. "'"))
            end
        end
        assert.equal(pgsrv:psql("SELECT count(*) FROM refused_dbi"), pgsrv:psql("SELECT count(*) FROM refused_libpq"))
    end)

    it("a driver asked for that cannot be had is refused before any call", function()
        local before = srv:control("stats").requests
        db.pg_driver = "odbc"
        local n, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-01" }, { into = pgsrv.url })
        db.pg_driver = nil
        assert.is_nil(n)
        assert.equal("params", err.kind)
        assert.matches("WOLKVOX_PG_DRIVER must be libpq or dbi", err.message, 1, true)
        assert.equal(before, srv:control("stats").requests)
    end)

    describe("the binding", function()
        it("a wrong address or user is nil and libpq's reason, never the password", function()
            local conn, err = lib.connect("postgresql://127.0.0.1:1/none?connect_timeout=5")
            assert.is_nil(conn)
            assert.matches("port 1", err, 1, true)
            local t = info()
            t.user, t.password = "nobody", "Pw-s3cr3t"
            conn, err = lib.connect(t)
            assert.is_nil(conn)
            assert.matches("nobody", err, 1, true)
            assert.not_matches("s3cr3t", err, 1, true)
            conn, err = lib.connect("host=127.0.0.1\0port=1")
            assert.is_nil(conn)
            assert.matches("NUL", err, 1, true)
            assert.has_error(function() lib.connect({ port = 5432 }) end)
            -- Through the loader: an output error naming the database without the password.
            local n, lerr = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-01" },
                { into = "postgresql://nobody:Pw-s3cr3t@127.0.0.1:" .. pgsrv.port .. "/nosuchdb" })
            assert.is_nil(n)
            assert.equal("output", lerr.kind)
            assert.not_matches("s3cr3t", tostring(lerr), 1, true)
            assert.matches("postgresql://nobody@127.0.0.1:" .. pgsrv.port .. "/nosuchdb", tostring(lerr), 1, true)
        end)

        it("statements, parameters, COPY and its errors; close twice; a connection the collector takes", function()
            local conn = assert(lib.connect(info()))
            local rows, n = conn:exec("SELECT $1::int + 1 AS x, $2::text AS s, NULL AS z", 41, "a\tb")
            assert.same({ { x = "42", s = "a\tb" } }, rows)
            assert.equal(1, n)
            local none, err, state = conn:exec("SELECT nope")
            assert.is_nil(none)
            assert.matches("nope", err, 1, true)
            assert.equal("42703", state)
            none, err = conn:exec("SELECT $1::text", "a\0b")
            assert.is_nil(none)
            assert.matches("NUL", err, 1, true)
            assert(conn:exec("CREATE TEMP TABLE t (a int, b text)"))
            assert(conn:copy_begin("COPY t (a, b) FROM STDIN"))
            assert.equal("copy", (conn:status()))
            none, err = conn:exec("SELECT 1")
            assert.is_nil(none)
            assert.matches("COPY is in progress", err, 1, true)
            assert(conn:copy_rows({ "1", "x\\y\tz", "2", nil, "3", "\\." }, 1, 3, 2))
            none, err = conn:copy_rows({ "4", "a\0b" }, 1, 1, 2)
            assert.is_nil(none)
            assert.matches("NUL", err, 1, true)
            assert(conn:copy_put("5\tput\\tit\n"))
            local ok, copied = conn:copy_end()
            assert.is_true(ok)
            assert.equal(4, copied)
            assert.same({ { a = "1", b = "x\\y\tz" }, { a = "2" }, { a = "3", b = "\\." }, { a = "5", b = "put\tit" } },
                (conn:exec("SELECT * FROM t ORDER BY a")))
            -- A value the column refuses: the COPY's end says so.
            assert(conn:copy_begin("COPY t (a, b) FROM STDIN"))
            assert(conn:copy_rows({ "x", "y" }, 1, 1, 2))
            none, err = conn:copy_end()
            assert.is_nil(none)
            assert.matches('invalid input syntax for type integer: "x"', err, 1, true)
            assert.same({ "idle", true }, { conn:status() })
            none, err = conn:copy_begin("SELECT 1")
            assert.is_nil(none)
            assert.matches("not a COPY", err, 1, true)
            none, err = conn:copy_end()
            assert.is_nil(none)
            assert.matches("no COPY", err, 1, true)
            assert.is_true(conn:close())
            assert.is_true(conn:close())
            assert.same({ "closed", false }, { conn:status() })
            assert.has_error(function() conn:exec("SELECT 1") end, "wolkvox.pg: the connection is closed")
            -- Left to the collector, open or in the middle of a COPY: the server sees them go.
            local function sessions()
                return tonumber(pgsrv:psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gc-spec'"))
            end
            local t = info()
            t.application_name = "gc-spec"
            local left = { assert(lib.connect(t)), assert(lib.connect(t)) }
            local b = left[2]
            assert.is_nil((b:copy_begin("COPY (SELECT 1) TO STDOUT")))
            assert(b:exec("CREATE TEMP TABLE u (a int)"))
            assert(b:copy_begin("COPY u FROM STDIN"))
            assert.equal(2, sessions())
            left, b = nil, nil -- luacheck: ignore 311
            collectgarbage()
            collectgarbage()
            support.wait_for(function() return sessions() == 0 end, 10, "the collected connections to end")
        end)

        it("the server killed in the middle of a COPY: nil and why, never a hang; then it works again #slow",
            function()
                local conn = assert(lib.connect(info()))
                assert(conn:exec("CREATE TEMP TABLE t (a int, b text)"))
                assert(conn:copy_begin("COPY t (a, b) FROM STDIN"))
                assert(conn:copy_rows({ "1", "x" }, 1, 1, 2))
                pgsrv:kill9()
                local list = {}
                for i = 1, 20000 do
                    list[#list + 1], list[#list + 2] = tostring(i), string.rep("y", 200)
                end
                local sent, err = true, nil
                for _ = 1, 20 do -- (4 MB: more than the socket takes once the server is gone)
                    sent, err = conn:copy_rows(list, 1, 20000, 2)
                    if not sent then
                        break
                    end
                end
                local ended, eerr = conn:copy_end()
                assert.is_true(not sent or not ended)
                assert.is_string(err or eerr)
                assert.is_false(select(2, conn:status()))
                local none = conn:exec("SELECT 1")
                assert.is_nil(none)
                assert.is_true(conn:close())
                pgsrv:start()
                local again = assert(lib.connect(info()))
                assert.same({ { one = "1" } }, (again:exec("SELECT 1 AS one")))
                again:close()
            end)
    end)
end)
