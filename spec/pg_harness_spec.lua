-- The harness of the database destinations (issue #22): spec/pg.lua starts
-- Debian's PostgreSQL server on a free loopback port, LuaDBI writes and
-- reads through it with bound parameters, the server is restarted (as a
-- crash: stop -m immediate), killed (-9) and stopped; and SQLite, through
-- the same LuaDBI, in a temporary file.  Tagged #db.
local support = require "support"
local pg = require "pg"

-- A LuaDBI connection to `srv` (no password: trust on 127.0.0.1), autocommit
-- on (dbd.postgresql starts with it off: everything is one transaction).
local function connect(srv)
    local DBI = require "DBI"
    local dbh = assert(DBI.Connect("PostgreSQL", srv.db, srv.user, nil, srv.host, srv.port))
    assert.is_true(dbh:autocommit(true))
    return dbh
end

-- `sql` run once on `dbh` with `...` bound: the rows it changed.  (Not
-- DBI.Do: it never closes its statement, and SQLite's connection cannot
-- close while one is open: dbd.sqlite3's close() says true and leaks it.)
local function exec(dbh, sql, ...)
    local sth = assert(dbh:prepare(sql))
    assert(sth:execute(...))
    local n = sth:affected()
    sth:close()
    return n
end

-- Every row of `sql` run with `...` bound, as tables keyed by column name.
local function rows(dbh, sql, ...)
    local sth = assert(dbh:prepare(sql))
    assert(sth:execute(...))
    local out = {}
    for row in sth:rows(true) do
        out[#out + 1] = row
    end
    sth:close()
    return out
end

describe("the PostgreSQL harness (spec/pg.lua) #db", function()
    if not pg.need("PostgreSQL") then
        return
    end
    local srv

    setup(function()
        srv = pg.start()
    end)

    teardown(function()
        if srv then
            srv:stop()
        end
    end)

    it("starts a server of its own on 127.0.0.1, as its description says", function()
        assert.matches("^%d+$", tostring(srv.port))
        assert.equal("127.0.0.1", srv.host)
        assert.equal("postgresql://wolkvox@127.0.0.1:" .. srv.port .. "/wolkvox", srv.url)
        assert.equal(srv.user .. "|" .. srv.db, srv:psql("select current_user, current_database()"))
        assert.equal("127.0.0.1|" .. srv.port, srv:psql("select inet_server_addr(), inet_server_port()"))
        assert.equal(srv.dir .. "/data", srv:psql("show data_directory"))
        assert.equal("off", srv:psql("show fsync"))
        assert.is_true(support.alive(srv.pid))
    end)

    it("keeps what LuaDBI wrote with bound parameters across a restart and a kill -9", function()
        srv:psql("create table items (k integer primary key, v text not null, n bigint, ok boolean)")
        local dbh = connect(srv)
        local ins = assert(dbh:prepare("insert into items (k, v, n, ok) values (?, ?, ?, ?)"))
        assert.is_true((ins:execute(1, "one's \"quoted\" value; drop table items", 2147483647, true)))
        assert.equal(1, ins:affected())
        assert.is_true((ins:execute(2, "dos ñ ✓", nil, false)))
        ins:close()
        local want = {
            { k = 1, v = "one's \"quoted\" value; drop table items", n = 2147483647, ok = true },
            { k = 2, v = "dos ñ ✓", ok = false },
        }
        assert.same(want, rows(dbh, "select k, v, n, ok from items where k >= ? order by k", 1))
        -- Another session sees them: they were committed.
        assert.equal("2", srv:psql("select count(*) from items"))

        -- A transaction open when the server goes down is lost, not half kept.
        -- (Without client_min_messages, libpq would print the server's
        -- "WARNING: terminating connection" on this process's stderr:
        -- LuaDBI has no notice processor of its own.)
        exec(dbh, "set client_min_messages = error")
        assert.is_true(dbh:autocommit(false))
        local sth = assert(dbh:prepare("insert into items (k, v) values (?, ?)"))
        assert.is_true((sth:execute(3, "never committed")))
        local old_pid = srv.pid
        srv:restart()
        assert.is_not.equal(old_pid, srv.pid)
        assert.is_false(support.alive(old_pid))
        -- The old connection is dead (dbh:ping() would still say true: it
        -- only looks at libpq's last status); a new one sees the rows.
        dbh:close()
        dbh = connect(srv)
        assert.same(want, rows(dbh, "select k, v, n, ok from items order by k"))

        srv:kill9()
        assert.is_false(support.alive(old_pid))
        assert.has_error(function() srv:psql("select 1") end)
        srv:start()
        dbh:close()
        dbh = connect(srv)
        assert.same(want, rows(dbh, "select k, v, n, ok from items order by k"))
        dbh:close()
        assert.equal("1|one's \"quoted\" value; drop table items|2147483647|t\n2|dos ñ ✓||f",
            srv:psql("select k, v, n, ok from items order by k"))
    end)

    it("starts durable servers on request, and stop() leaves nothing behind", function()
        local other = pg.start { durable = true, db = "other", user = "someone" }
        assert.equal("on", other:psql("show fsync"))
        assert.equal("postgresql://someone@127.0.0.1:" .. other.port .. "/other", other.url)
        assert.is_not.equal(srv.port, other.port)
        local dir, pid = other.dir, other.pid
        other:stop()
        other:stop() -- again: nothing to do
        assert.is_false(support.alive(pid))
        assert.is_nil(io.open(dir .. "/data/PG_VERSION", "r"))
        assert.equal(0, (support.sh("test -e " .. support.q(dir) .. " || exit 0; exit 1")))
        -- The first server did not notice.
        assert.equal("1", srv:psql("select 1"))
    end)
end)

describe("SQLite through LuaDBI, in a temporary file #db", function()
    local ok, why = pg.dbi("SQLite3")
    if not ok then
        pending(why)
        return
    end
    local DBI = require "DBI"

    it("writes with bound parameters, commits, and reads the file back after closing it", function()
        local dir = support.tmpdir()
        finally(function() support.sh("rm -rf " .. support.q(dir)) end)
        local path = dir .. "/dest.db"
        local dbh = assert(DBI.Connect("SQLite3", path))
        exec(dbh, "create table items (k integer primary key, v text not null, x real)")
        local ins = assert(dbh:prepare("insert into items (k, v, x) values (?, ?, ?) "
            .. "on conflict (k) do update set v = excluded.v, x = excluded.x"))
        assert.is_true((ins:execute(1, "first", 0.5)))
        assert.is_true((ins:execute(2, "it's two", nil)))
        assert.is_true((ins:execute(1, "first, again", 1.25)))
        assert.equal(1, ins:affected())
        ins:close()
        -- dbd.sqlite3 starts a transaction before the first statement: the
        -- rows are only in the file once committed (close() rolls back).
        assert.is_true(dbh:commit())
        assert.is_true(dbh:close())

        dbh = assert(DBI.Connect("SQLite3", path))
        assert.same({ { k = 1, v = "first, again", x = 1.25 }, { k = 2, v = "it's two" } },
            rows(dbh, "select k, v, x from items where k > ? order by k", 0))
        dbh:close()
        local code, out = support.sh("sqlite3 " .. support.q(path) .. " 'select k, v, x from items order by k'")
        assert.equal(0, code)
        assert.equal("1|first, again|1.25\n2|it's two|\n", out)
    end)

    -- Ctrl-C in the standalone interpreter: a hook raises "interrupted!" at
    -- the next call, LuaDBI's C functions inside our pcall included (emulated
    -- as lua.c does it).  It must come through as it is, not as an `output`
    -- error: the command would exit 1 instead of 130 (the plan spec's
    -- Ctrl-C saw that once on a loaded machine).
    it("lets an interrupt inside a statement or a connect through as it is", function()
        local db = require "wolkvox.out.db"
        local dir = support.tmpdir()
        finally(function() support.sh("rm -rf " .. support.q(dir)) end)
        local target = { dialect = "sqlite", path = dir .. "/i.db", display = "i.db" }
        local conn = db.connect(target)
        local probe = conn.h:prepare("SELECT 1")
        local execute = probe.execute
        probe:close()
        for _, call in ipairs {
            function() conn:exec("SELECT 1") end,
            function() conn:rows("SELECT 1") end,
        } do
            local okc, err = support.interrupted_at(execute, call)
            assert.is_false(okc)
            assert.is_string(err, tostring(err))
            assert.matches("interrupted!", err, 1, true)
        end
        conn:close()
        local okc, err = support.interrupted_at(DBI.Connect, function() db.connect(target) end)
        assert.is_false(okc)
        assert.is_string(err, tostring(err))
        assert.matches("interrupted!", err, 1, true)
    end)
end)
