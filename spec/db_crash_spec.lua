-- Exactly once into a database (issue #22), under the failures users meet:
-- the command killed (-9) at several points of a six-month sync, the
-- PostgreSQL server restarted (a crash: immediate stop) mid-load, SQLite's
-- disk full (both exit 7: the windows before stay loaded); after each,
-- the rerun ends with the table of an uninterrupted run, row for row,
-- and no state file anywhere.  Two runs of one sync at once: the second
-- is refused (exit 8), never a duplicate.  Driven through bin/wolkvox
-- against the fake; tables read back with sqlite3 and psql.
local support = require "support"
local pg = require "pg"

local q, sh = support.q, support.sh

describe("exactly once into a database #db #slow #children", function()
    if not pg.dbi("SQLite3") then
        pending("LuaDBI is not installed (Debian lua-dbi-sqlite3)")
        return
    end
    local srv, c, dir, pgsrv, token
    local RANGE = "--since 2026-01-01 --until 2026-06-30"

    setup(function()
        srv = support.fake()
        token = srv.token
        c = support.client(srv, { state_dir = false })
        dir = support.tmpdir()
        if pg.available() and pg.dbi("PostgreSQL") then
            pgsrv = pg.start({ durable = true })
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

    local runs = 0
    -- The command line for bin/wolkvox (each run paces with a state of its
    -- own: a killed run's abandoned call keeps its slot in the old one).
    local function command(argv)
        runs = runs + 1
        return "env -u LD_PRELOAD -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE HOME=" .. q(dir) .. " WOLKVOX_TOKEN=" .. token
            .. " lua5.4 bin/wolkvox --base-url " .. srv.url .. " --state-dir " .. q(dir .. "/pacing" .. runs)
            .. " " .. argv
    end

    local function run(argv)
        local err = os.tmpname()
        local p = io.popen(support.timed(command(argv) .. " >/dev/null 2>" .. err, 120) .. "; echo $?")
        local code = tonumber(p:read("*a"):match("(%d+)%s*$"))
        p:close()
        local e = support.slurp(err)
        os.remove(err)
        return code, e
    end

    -- Started in the background: its pid.
    local function start(argv)
        local p = io.popen(command(argv) .. " >/dev/null 2>&1 & echo $!")
        local pid = tonumber(p:read("*l"))
        p:close()
        return pid
    end

    local function kill9(pid)
        os.execute("kill -9 " .. pid)
        support.wait_for(function() return not support.alive(pid) end, 10, "the killed command to be gone")
    end

    local targets = {
        sqlite = {
            into = function(name) return dir .. "/" .. name .. ".db" end,
            query = function(into, sql)
                local code, out, err = sh("sqlite3 -batch -cmd '.timeout 5000' " .. q(into) .. " " .. q(sql))
                assert(code == 0, "sqlite3: " .. tostring(err))
                return (out:gsub("\n$", ""))
            end,
        },
        postgresql = {
            into = function(name)
                pgsrv:psql("DROP DATABASE IF EXISTS " .. name)
                pgsrv:psql("CREATE DATABASE " .. name)
                return pgsrv.url:gsub("/[^/]*$", "/" .. name)
            end,
            query = function(into, sql)
                return pgsrv:psql(sql, into:match("/([^/]+)$"))
            end,
        },
    }

    -- The table of an uninterrupted run, to compare with.
    local reference = {}
    local function want(kind)
        if not reference[kind] then
            local t = targets[kind]
            local into = t.into("reference")
            assert(c:sync("cdr_1", { since = "2026-01-01", ["until"] = "2026-06-30" }, { into = into }))
            reference[kind] = t.query(into, "SELECT * FROM cdr_1 ORDER BY conn_id")
            assert.is_true(#reference[kind] > 100000)
        end
        return reference[kind]
    end

    local function loads(t, into)
        local ok, n = pcall(t.query, into, "SELECT count(*) FROM _wolkvox_loads")
        return ok and tonumber(n) or 0
    end

    for _, kind in ipairs { "sqlite", "postgresql" } do
        describe("into " .. kind, function()
            local t = targets[kind]
            local function skip()
                if kind == "postgresql" and not pgsrv then
                    pending("PostgreSQL is not installed (Debian postgresql, lua-dbi-postgresql)")
                    return true
                end
            end

            it("killed (-9) after 1 and after 3 windows, the rerun holds exactly the rows of one run", function()
                if skip() then return end
                for i, seen in ipairs { 1, 3 } do
                    local into = t.into("killed" .. i)
                    srv:control("config", { latency = 0.3 })
                    local pid = start("sync cdr_1 " .. RANGE .. " --into " .. q(into) .. " max_concurrent=1")
                    support.wait_for(function() return loads(t, into) >= seen end, 60,
                        seen .. " windows of the sync in the database")
                    kill9(pid)
                    srv:control("config", { latency = 0 })
                    local whole = want(kind)
                    local before = srv:control("stats").requests
                    local code, err = run("sync cdr_1 " .. RANGE .. " --into " .. q(into))
                    assert.equal(0, code, err)
                    assert.equal(whole, t.query(into, "SELECT * FROM cdr_1 ORDER BY conn_id"))
                    -- The windows the killed run committed are not fetched
                    -- again (6 in all; the rerun reads the last hour again
                    -- for late rows, which may start one window more).
                    local spent = srv:control("stats").requests - before
                    assert.is_true(spent <= 7 - seen, spent .. " calls after " .. seen .. " windows were in")
                    assert.is_nil(support.slurp(dir .. "/cdr_1.sync"))
                end
            end)

            it("two runs of one sync at once: the second is refused (exit 8) and spends nothing", function()
                if skip() then return end
                local into = t.into("twice")
                srv:control("config", { latency = 0.3 })
                local pid = start("sync cdr_1 " .. RANGE .. " --into " .. q(into) .. " max_concurrent=1")
                support.wait_for(function() return srv:control("stats").requests >= 1 end, 30,
                    "the first sync's first call")
                local before = srv:control("stats").requests
                local code, err = run("sync cdr_1 " .. RANGE .. " --into " .. q(into))
                assert.equal(8, code, err)
                assert.matches("another run is loading", err, 1, true)
                -- (the first one is still going: at most its own next calls)
                assert.is_true(srv:control("stats").requests - before <= 2)
                support.wait_for(function() return not support.alive(pid) end, 60, "the first sync to finish")
                srv:control("config", { latency = 0 })
                assert.equal(want(kind), t.query(into, "SELECT * FROM cdr_1 ORDER BY conn_id"))
            end)
        end)
    end

    it("PostgreSQL restarted mid-load (a crash): the run fails, the rerun holds exactly the rows of one run",
        function()
            if not pgsrv then
                pending("PostgreSQL is not installed")
                return
            end
            local t = targets.postgresql
            local into = t.into("restarted")
            srv:control("config", { latency = 0.3 })
            local err = os.tmpname()
            local p = io.popen(command("sync cdr_1 " .. RANGE .. " --into " .. q(into) .. " max_concurrent=1")
                .. " >/dev/null 2>" .. err .. "; echo $?")
            support.wait_for(function() return loads(t, into) >= 2 end, 60, "2 windows in the database")
            pgsrv:restart()
            local code = tonumber(p:read("*a"):match("(%d+)%s*$"))
            p:close()
            local msg = support.slurp(err)
            os.remove(err)
            -- Exit 7: windows were loaded before the failure (they stay).
            assert.equal(7, code, msg)
            assert.matches("server closed the connection", msg, 1, true)
            srv:control("config", { latency = 0 })
            local c2, e2 = run("sync cdr_1 " .. RANGE .. " --into " .. q(into))
            assert.equal(0, c2, e2)
            assert.equal(want("postgresql"), t.query(into, "SELECT * FROM cdr_1 ORDER BY conn_id"))
        end)

    it("SQLite on a full disk: exit 7, and once there is room the rerun holds exactly the rows of one run",
        function()
            local disk = support.disk("size=1m", false, finally, pending)
            if not disk then
                return
            end
            local into = disk .. "/calls.db"
            local code, err = run("sync cdr_1 " .. RANGE .. " --into " .. q(into))
            assert.equal(7, code, err) -- (the first window went in)
            assert.matches("database or disk is full", err, 1, true)
            sh("mount -o remount,size=64m " .. q(disk))
            local c2, e2 = run("sync cdr_1 " .. RANGE .. " --into " .. q(into))
            assert.equal(0, c2, e2)
            assert.equal(want("sqlite"), targets.sqlite.query(into, "SELECT * FROM cdr_1 ORDER BY conn_id"))
            local _, check = sh("sqlite3 " .. q(into) .. " 'PRAGMA integrity_check'")
            assert.equal("ok\n", check)
        end)
end)
