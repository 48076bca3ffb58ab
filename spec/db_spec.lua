-- Databases as destinations (issue #22): reports and syncs into real SQLite
-- files and a real PostgreSQL server (spec/pg.lua), typed, merged by key,
-- each window committed with its state; a kill -9, a database restart or a
-- full disk at any moment, and the rerun ends with exactly the rows of an
-- uninterrupted run.  Read back with the databases' own clients (sqlite3,
-- psql), not through our code.  Tagged #db.
local support = require "support"
local pg = require "pg"
local json = require "cjson"

local q, sh = support.q, support.sh

-- The dialects under test: `into(name)` a destination, `query(sql)` its
-- answer as text (rows by line, fields by "|"), `reset()` empties it.
local function sqlite_dialect(dir)
    local n = 0
    local d = { name = "sqlite" }
    function d.reset()
        n = n + 1
        d.path = dir .. "/calls" .. n .. ".db"
    end
    function d.into()
        return d.path
    end
    function d.query(sql)
        local code, out, err = sh("sqlite3 -batch -cmd '.timeout 5000' " .. q(d.path) .. " " .. q(sql))
        assert(code == 0, "sqlite3: " .. tostring(err))
        return (out:gsub("\n$", ""))
    end
    function d.types(tbl)
        local t = {}
        for line in d.query("SELECT name, type FROM pragma_table_info('" .. tbl .. "')"):gmatch("[^\n]+") do
            local name, ty = line:match("^([^|]+)|(.*)$")
            t[name] = ty:lower()
        end
        return t
    end
    return d
end

local function pg_dialect(srv)
    local d = { name = "postgresql" }
    function d.reset()
        srv:psql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    end
    function d.into()
        return srv.url
    end
    function d.query(sql)
        return srv:psql(sql)
    end
    function d.types(tbl)
        local t = {}
        for line in srv:psql("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '"
                .. tbl .. "'"):gmatch("[^\n]+") do
            local name, ty = line:match("^([^|]+)|(.*)$")
            t[name] = ty
        end
        return t
    end
    return d
end

describe("databases as destinations #db", function()
    local ok_dbi, why_dbi = pg.dbi("SQLite3")
    if not ok_dbi then
        pending(why_dbi)
        return
    end
    local srv, c, dir, pgsrv
    local dialects = {}

    setup(function()
        srv = support.fake()
        c = support.client(srv, { state_dir = false })
        dir = support.tmpdir()
        dialects[1] = sqlite_dialect(dir)
        if pg.available() and pg.dbi("PostgreSQL") then
            pgsrv = pg.start()
            dialects[2] = pg_dialect(pgsrv)
        end
    end)

    teardown(function()
        c:close()
        srv:stop()
        if pgsrv then
            pgsrv:stop()
        end
        os.execute("rm -rf " .. q(dir))
    end)

    before_each(function()
        srv:control("reset")
    end)

    local function requests()
        return srv:control("stats").requests
    end

    -- bin/wolkvox against the fake: exit code, stdout, stderr.
    local function cli(argv, env)
        return support.wolkvox(srv, argv, { home = dir, state_dir = dir .. "/pacing", env = env })
    end

    -- The rows of cdr_1 over a range, as a CSV export gives them: by conn_id.
    local function csv_rows(from, to)
        local rows = {}
        local n = assert(c:export("cdr_1", { from = from, to = to }, { on_rows = function(list)
            for _, r in ipairs(list) do
                rows[r.conn_id] = r
            end
        end }))
        return rows, n
    end

    -- A table's rows in a fixed order, every column: what "the same rows" means.
    local function dump(d, tbl, key)
        return d.query("SELECT * FROM " .. tbl .. " ORDER BY " .. key)
    end

    for i = 1, 2 do
        describe("into " .. (i == 1 and "SQLite" or "PostgreSQL"), function()
            local d
            before_each(function()
                d = dialects[i]
                if not d then
                    pending("PostgreSQL is not installed (Debian postgresql, lua-dbi-postgresql)")
                    return
                end
                d.reset()
            end)

            it("an export lands typed, one row per conn_id, one load record per window; a rerun spends no call",
                function()
                    if not d then return end
                    local want, total = csv_rows("2026-01-01", "2026-02-15")
                    srv:control("reset")
                    local n, meta = c:export("cdr_1", { from = "2026-01-01", to = "2026-02-15" }, { into = d.into() })
                    assert.is_number(n, tostring(meta))
                    assert.equal(total, n)
                    assert.equal("cdr_1", meta.table)
                    assert.equal(tostring(total), d.query("SELECT count(*) FROM cdr_1"))
                    assert.equal(tostring(total), d.query("SELECT count(DISTINCT conn_id) FROM cdr_1"))
                    assert.equal("2|" .. total, d.query("SELECT count(*), sum(rows) FROM _wolkvox_loads"))
                    -- Types from the registry's names, values as the API sent them.
                    local t = d.types("cdr_1")
                    if d.name == "sqlite" then
                        assert.same({ "integer", "real", "text", "text" }, { t.time_seg, t.cost, t.date, t.conn_id })
                    else
                        assert.same({ "integer", "numeric", "timestamp with time zone", "text" },
                            { t.time_seg, t.cost, t.date, t.conn_id })
                    end
                    local some = next(want)
                    local r = want[some]
                    local got = d.query("SELECT time_seg, time_min, agent_name FROM cdr_1 WHERE conn_id = '"
                        .. some .. "'")
                    local seg, min, name = got:match("^([^|]*)|([^|]*)|(.*)$")
                    assert.equal(tonumber(r.time_seg), tonumber(seg))
                    assert.equal(tonumber(r.time_min), tonumber(min))
                    assert.equal(r.agent_name, name)
                    -- The operation's clock (UTC-5): 10:00 there is 15:00 UTC.
                    local first = d.name == "sqlite"
                        and d.query("SELECT datetime(date) FROM cdr_1 ORDER BY conn_id + 0 LIMIT 1")
                        or d.query("SELECT to_char(date AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM cdr_1 "
                            .. "ORDER BY conn_id::bigint LIMIT 1")
                    assert.equal("2026-01-01 05:00:00", first)
                    -- Run again: the database says it is loaded, no call.
                    local before = requests()
                    local n2, meta2 = c:export("cdr_1", { from = "2026-01-01", to = "2026-02-15" }, { into = d.into() })
                    assert.equal(0, n2)
                    assert.is_true(meta2.complete)
                    assert.equal(before, requests())
                    -- --refresh fetches it again and changes nothing.
                    local dumped = dump(d, "cdr_1", "conn_id")
                    local n3 = c:export("cdr_1", { from = "2026-01-01", to = "2026-02-15" }, { into = d.into(),
                        refresh = true })
                    assert.equal(total, n3)
                    assert.equal(dumped, dump(d, "cdr_1", "conn_id"))
                end)

            it("a sync in three runs holds exactly the rows of one export of the whole range", function()
                if not d then return end
                local into = d.into()
                assert(c:sync("cdr_1", { since = "2026-03-01", ["until"] = "2026-03-20" }, { into = into }))
                assert(c:sync("cdr_1", { ["until"] = "2026-04-02 12:00:00", force = true }, { into = into }))
                local n, meta = c:sync("cdr_1", { ["until"] = "2026-04-30", force = true }, { into = into })
                assert.is_number(n, tostring(meta))
                assert.equal("2026-04-30 23:59:59", meta.watermark)
                assert(c:export("cdr_1", { from = "2026-03-01", to = "2026-04-30" }, { into = into, table = "whole" }))
                assert.equal(dump(d, "whole", "conn_id"), dump(d, "cdr_1", "conn_id"))
                assert.equal(d.query("SELECT count(*) FROM whole"),
                    d.query("SELECT count(DISTINCT conn_id) FROM cdr_1"))
                -- Up to date: nothing fetched.
                local before = requests()
                local n2, m2 = c:sync("cdr_1", { ["until"] = "2026-04-30", force = true }, { into = into })
                assert.equal(0, n2)
                assert.is_true(m2.up_to_date)
                assert.equal(before, requests())
            end)

            it("aggregates by day: a period fetched again replaces that period's rows", function()
                if not d then return end
                local into = d.into()
                assert(c:sync("agent_1", { since = "2026-11-01", ["until"] = "2026-11-03", per = "day" },
                    { into = into }))
                local once = dump(d, "agent_1", "_period_start, agent_id")
                assert(c:sync("agent_1", { since = "2026-11-02", ["until"] = "2026-11-03", per = "day" },
                    { into = into, stream = "again" }))
                assert.equal(once, dump(d, "agent_1", "_period_start, agent_id"))
                assert.equal("3", d.query("SELECT count(DISTINCT _period_start) FROM agent_1"))
                local t = d.types("agent_1")
                assert.equal(d.name == "sqlite" and "integer" or "bigint", t.calls)
            end)

            it("a lookup is replaced, a snapshot appended with the time it was taken", function()
                if not d then return end
                local into = d.into()
                local n1 = assert(c:export("agents", {}, { into = into }))
                assert(c:export("agents", {}, { into = into }))
                assert.equal(tostring(n1), d.query("SELECT count(*) FROM agents"))
                local s1 = assert(c:export("real_time/agents", {}, { into = into }))
                local s2 = assert(c:export("real_time/agents", {}, { into = into }))
                assert.equal(tostring(s1 + s2), d.query("SELECT count(*) FROM real_time_agents"))
                assert.equal("0", d.query("SELECT count(*) FROM real_time_agents WHERE _taken_at IS NULL"))
            end)

            it("a value that does not fit is kept as sent, a field the API adds becomes a column", function()
                if not d then return end
                srv:control("config", { fixtures = { { match = "cdr_1", body = { code = 200, msg = "ok", data = {
                    { conn_id = "7", date = "2026-01-01 10:00:00", cost = "a lot", time_seg = "00:01:05",
                        time_min = "-", agent_name = "Ana\0Nul", brand_new = "x" },
                    { conn_id = "8", date = "not a date", cost = "1,234.50", time_seg = "65", agent_name = "Bo" },
                } } } } })
                local n, meta = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-01" }, { into = d.into() })
                assert.equal(2, n, tostring(meta))
                local got = d.query("SELECT conn_id, cost, time_seg, time_min, agent_name, brand_new, _unfit "
                    .. "FROM cdr_1 ORDER BY conn_id")
                local l7, l8 = got:match("^([^\n]*)\n(.*)$")
                local f7 = { l7:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$") }
                assert.same({ "7", "", "65", "", "", "x" }, { f7[1], f7[2], f7[3], f7[4], f7[5], f7[6] })
                -- (PostgreSQL holds no NUL, even in jsonb: the six characters \u0000.)
                assert.same({ cost = "a lot", agent_name = d.name == "sqlite" and "Ana\0Nul" or "Ana\\u0000Nul" },
                    json.decode(f7[7]))
                local f8 = { l8:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$") }
                assert.equal(1234.5, tonumber(f8[2]))
                assert.equal("65", f8[3])
                assert.same({ date = "not a date" }, json.decode(f8[7]))
            end)

            it("a hostile server's field names never reach SQL, never clobber our columns, never stop the load",
                function()
                    if not d then return end
                    local row = { conn_id = "9", date = "2026-01-01 10:00:00", cost = "1.5",
                        ["x\"; DROP TABLE cdr_1; --"] = "a", DATE = "b", _unfit = "c", _row = "d",
                        [string.rep("n", 100)] = "e", ["na\0me"] = "f" }
                    for k = 1, 150 do
                        row["extra_" .. k] = tostring(k)
                    end
                    local echo = { conn_id = "10", date = "2026-01-01 11:00:00", agent_name = srv.token }
                    srv:control("config", { fixtures = { { match = "cdr_1", body = { code = 200, msg = "ok",
                        data = { row, echo } } } } })
                    local n, meta = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-01" }, { into = d.into() })
                    assert.equal(2, n, tostring(meta))
                    assert.equal("2", d.query("SELECT count(*) FROM cdr_1"))
                    local unfit = json.decode(d.query("SELECT _unfit FROM cdr_1 WHERE conn_id = '9'"))
                    for _, k in ipairs { "x\"; DROP TABLE cdr_1; --", "DATE", "_unfit", "_row",
                        string.rep("n", 100) } do
                        assert.equal(row[k], unfit[k], k)
                    end
                    assert.equal("1.5", d.query("SELECT cost FROM cdr_1 WHERE conn_id = '9'"))
                    -- Up to 64 new columns a run; the rest kept as sent.
                    local t = d.types("cdr_1")
                    local added, kept = 0, 0
                    for k = 1, 150 do
                        if t["extra_" .. k] then
                            added = added + 1
                        elseif unfit["extra_" .. k] == tostring(k) then
                            kept = kept + 1
                        end
                    end
                    assert.same({ 64, 86 }, { added, kept })
                    -- The token echoed in a value reaches the table masked.
                    local name = d.query("SELECT agent_name FROM cdr_1 WHERE conn_id = '10'")
                    assert.not_matches(srv.token, name, 1, true)
                end)

            it("bad input gets a clear error and costs no call", function()
                if not d then return end
                local before = requests()
                local cases = {
                    { { into = "mysql://u@h/db" }, "unknown database 'mysql://'" },
                    { { into = d.into(), table = "1bad" }, "table must be a name" },
                    { { into = d.into(), table = 'x"; DROP TABLE y; --' }, "table must be a name" },
                    { { into = d.into(), format = "csv" }, "format does not go with into" },
                    { { into = d.into(), checkpoint = dir .. "/x.ckpt" }, "checkpoint does not go with into" },
                    { { into = d.into(), output = dir .. "/x.csv" }, "give exactly one of" },
                    { { into = "" }, "into must be a database" },
                    { { into = "postgresql://u@h:99999/db" }, "port must be between" },
                    { { into = d.into(), refresh = "yes" }, "refresh must be true or false" },
                    { { into = d.into(), table = "_wolkvox_state" }, "belong to lua-wolkvox or the database" },
                    { { into = d.into(), table = "sqlite_master" }, "belong to lua-wolkvox or the database" },
                }
                for _, case in ipairs(cases) do
                    local n, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-02" }, case[1])
                    assert.is_nil(n)
                    assert.equal("params", err.kind, tostring(err))
                    assert.matches(case[2], err.message, 1, true)
                end
                local n, err = c:export("add_ip", {}, { into = d.into() })
                assert.is_nil(n)
                assert.matches("not a report", tostring(err), 1, true)
                local s, serr = c:sync("cdr_1", { since = "2026-01-01", state = dir .. "/s" }, { into = d.into() })
                assert.is_nil(s)
                assert.matches("keeps its state there", serr.message, 1, true)
                assert.equal(before, requests())
            end)
        end)
    end

    describe("the command line", function()
        it("report --into, sync --into and schema, as a user runs them", function()
            local db = dir .. "/cli.db"
            local code, out, err = cli("report cdr_1 --from 2026-01-01 --to 2026-01-03 --into " .. q(db))
            assert.equal(0, code, err)
            assert.equal("", out)
            assert.matches("reports_manager/cdr_1: %d+ rows loaded into sqlite:" .. db:gsub("%p", "%%%0")
                .. " %(table cdr_1%), 1 call", err)
            local n = tonumber(err:match(": (%d+) rows"))
            local _, count = sh("sqlite3 " .. q(db) .. " 'select count(*) from cdr_1'")
            assert.equal(n, tonumber(count))
            code, _, err = cli("report cdr_1 --from 2026-01-01 --to 2026-01-03 --into " .. q(db))
            assert.equal(0, code, err)
            assert.matches("already in", err, 1, true)
            code, _, err = cli("sync cdr_1 --since 2026-02-01 --until 2026-02-02 --into " .. q(db))
            assert.equal(0, code, err)
            assert.matches("loaded into", err, 1, true)
            code, _, err = cli("sync cdr_1 --since 2026-02-01")
            assert.equal(2, code)
            assert.matches("--state FILE is needed", err, 1, true)
            code, _, err = cli("report cdr_1 --from 2026-01-01 --to 2026-01-03 --into " .. q(db) .. " -o x.csv")
            assert.equal(2, code)
            assert.matches("--output does not go with --into", err, 1, true)
        end)

        it("schema prints DDL the databases take, and a JSON Schema", function()
            local code, ddl, err = cli("schema cdr_1")
            assert.equal(0, code, err)
            local db = dir .. "/ddl.db"
            support.spit(dir .. "/ddl.sql", ddl)
            local c1, _, e1 = sh("sqlite3 " .. q(db) .. " < " .. q(dir .. "/ddl.sql"))
            assert.equal(0, c1, e1)
            local _, cols = sh("sqlite3 " .. q(db) .. " \"select count(*) from pragma_table_info('cdr_1')\"")
            assert.equal(21, tonumber(cols)) -- 20 fields and _unfit
            if pgsrv then
                local c2, pddl, e2 = cli("schema agent_1 --dialect postgresql --table agents_by_day")
                assert.equal(0, c2, e2)
                pgsrv:psql(pddl)
                assert.equal("bigint", pgsrv:psql("SELECT data_type FROM information_schema.columns "
                    .. "WHERE table_name = 'agents_by_day' AND column_name = 'calls'"))
            end
            local c3, js = cli("schema cdr_1 --dialect json-schema")
            assert.equal(0, c3)
            local schema = json.decode(js)
            assert.same({ "integer", "null" }, schema.properties.time_seg.type)
            assert.equal("date-time", schema.properties.date.format)
            assert.equal(2, (cli("schema nope")))
        end)

        it("a missing driver is a clear error naming the Debian package, before any call", function()
            local before = requests()
            -- The process finds no LuaDBI: its Lua path is a folder with
            -- every module of /usr/share/lua/5.4 but DBI.lua.
            local shelf = dir .. "/shelf"
            sh("mkdir -p " .. q(shelf) .. " && for f in /usr/share/lua/5.4/*; do [ \"${f##*/}\" = DBI.lua ] || "
                .. "ln -s \"$f\" " .. q(shelf) .. "/; done")
            local code, _, err = cli("report cdr_1 --from 2026-01-01 --to 2026-01-02 --into " .. q(dir .. "/no.db"),
                "LUA_PATH='./lua/?.lua;./lua/?/init.lua;" .. shelf .. "/?.lua;" .. shelf .. "/?/init.lua'")
            assert.equal(2, code, err)
            assert.matches("lua%-dbi%-sqlite3", err)
            assert.equal(before, requests())
        end)

        it("a database another user planted (a link, a file of theirs) is refused before any call", function()
            local before = requests()
            local victim = dir .. "/victim.db"
            local link = dir .. "/planted.db"
            support.spit(victim, "")
            sh("ln -sf " .. q(victim) .. " " .. q(link) .. " && chown -h nobody " .. q(link))
            local owned = dir .. "/theirs.db"
            support.spit(owned, "")
            sh("chown nobody " .. q(owned))
            for _, path in ipairs { link, owned } do
                local n, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-02" }, { into = path })
                if require("wolkvox.core").stat(path).mine then
                    pending("not root: cannot plant a file of another user")
                    return
                end
                assert.is_nil(n)
                assert.equal("params", err.kind)
                assert.matches("not this user's or root's", err.message, 1, true)
            end
            assert.equal(before, requests())
            assert.equal("", support.slurp(victim))
        end)

        it("a password in the URL never shows in an error", function()
            if not pgsrv then
                pending("PostgreSQL is not installed")
                return
            end
            local n, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-02" },
                { into = "postgresql://nobody:Pw-s3cr3t%21@127.0.0.1:" .. pgsrv.port .. "/nosuchdb" })
            assert.is_nil(n)
            assert.equal("output", err.kind)
            assert.not_matches("s3cr3t", tostring(err), 1, true)
            assert.matches("postgresql://nobody@127.0.0.1:" .. pgsrv.port .. "/nosuchdb", tostring(err), 1, true)
        end)
    end)
end)
