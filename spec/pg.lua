-- Debian's PostgreSQL server for the database-destination specs (issue #22):
-- a cluster of the spec's own (initdb into a fresh temporary directory), on a
-- free loopback port, its Unix socket in that directory, trust authentication,
-- started, restarted, crashed and stopped by the spec itself.  No mock: the
-- specs talk to it through LuaDBI (dbd.postgresql, libpq) or psql.
--
-- initdb and postgres refuse to run as root: as root they run as the
-- `postgres` system user (Debian's postgresql package creates it; `nobody`
-- where it is missing) through setpriv; as any other user they run as that
-- user.
--
-- A spec that dies (error, SIGKILL, Ctrl-C) leaves no server behind: each
-- server has a guard, a shell started through io.popen whose stdin is a pipe
-- this process holds.  When this process goes (the pipe reaches its end) or
-- is gone from /proc (a program it started may hold the pipe), the guard
-- stops the server and removes its directory.  `stop()` does that itself
-- and then closes the pipe.
local support = require "support"

local M = {}

local LIMIT = 30 -- seconds: any one command (start, stop, psql) is killed after this

local function exists(path)
    local f = io.open(path, "r")
    if f then
        f:close()
    end
    return f ~= nil
end

-- The directory of the newest PostgreSQL server programs, or nil.
local bindir_cache
function M.bindir()
    if bindir_cache == nil then
        local code, out = support.sh("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1")
        local dir = code == 0 and out:match("^(%S+)") or nil
        if dir and not exists(dir .. "/initdb") then
            dir = nil
        end
        bindir_cache = dir or false
    end
    return bindir_cache or nil
end

--- True when a PostgreSQL server can be started here; else nil and why.
function M.available()
    if not M.bindir() then
        return nil, "the PostgreSQL server is not installed (Debian postgresql; tools/install-deps installs it)"
    end
    return true
end

--- True when LuaDBI and its `driver` ("PostgreSQL", "SQLite3") load; else nil and why.
function M.dbi(driver)
    local ok, DBI = pcall(require, "DBI")
    if not ok then
        return nil, "LuaDBI is not installed (Debian lua-dbi-sqlite3 and lua-dbi-postgresql; tools/install-deps)"
    end
    for _, d in ipairs(DBI.Drivers()) do
        if d == driver then
            return true
        end
    end
    return nil, "LuaDBI's " .. driver .. " driver is not installed (tools/install-deps installs it)"
end

-- The pid of this process and its start time (field 22 of /proc/PID/stat):
-- the guard watches that pair, not a pid that could be reused.
local function own_process()
    local f = assert(io.open("/proc/self/stat", "r"))
    local stat = f:read("*l")
    f:close()
    local pid, rest = stat:match("^(%d+) %b() (.*)$")
    local fields = {}
    for w in rest:gmatch("%S+") do
        fields[#fields + 1] = w
    end
    return pid, fields[20]
end

-- How to run a server program: as root, through setpriv as an unprivileged
-- user (its uid and gid); else as is.  The user, or nil when no switch.
local runas_cache
local function runas()
    if runas_cache == nil then
        local _, uid = support.sh("id -u")
        runas_cache = { prefix = "" }
        if tonumber(uid) == 0 then
            for _, name in ipairs { "postgres", "nobody" } do
                local code, ids = support.sh("id -u " .. name .. " && id -g " .. name)
                local u, g = ids:match("^(%d+)%s+(%d+)")
                if code == 0 and u then
                    runas_cache = { user = name, uid = u, gid = g,
                        prefix = "setpriv --reuid=" .. u .. " --regid=" .. g .. " --clear-groups " }
                    break
                end
            end
            assert(runas_cache.user, "running as root and neither a postgres nor a nobody user exists")
        end
    end
    return runas_cache
end

-- A fresh directory the server's user may write in.  As root: the usual
-- temporary directory given to that user, unless a parent of it is closed
-- to the user (spec/run's per-flavour TMPDIR is mode 0700): then one in /tmp.
local function server_dir()
    local who = runas()
    local dir = support.tmpdir()
    if not who.user then
        return dir
    end
    local chown = "chown " .. who.uid .. ":" .. who.gid .. " "
    support.sh(chown .. support.q(dir))
    if support.sh(who.prefix .. "test -w " .. support.q(dir) .. " -a -x " .. support.q(dir)) == 0 then
        return dir
    end
    support.sh("rm -rf " .. support.q(dir))
    local code, out = support.sh("mktemp -d /tmp/wolkvox-pg.XXXXXXXX")
    dir = assert(code == 0 and out:match("^(%S+)"), "mktemp: " .. out)
    support.sh(chown .. support.q(dir))
    return dir
end

-- A free TCP port of 127.0.0.1 (the kernel's choice, then released).
local function free_port()
    local socket = require "socket"
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
end

local Server = {}
Server.__index = Server

-- `prog` of the server's bin directory with `args`, as the server's user,
-- killed after LIMIT seconds: exit code and output.
local function run(prog, args)
    return support.sh("cd / && timeout -k 5 " .. LIMIT .. " " .. runas().prefix .. M.bindir() .. "/" .. prog
        .. " " .. args)
end

-- The last lines of the server's log (for an error message).
function Server:log_tail()
    local _, out = support.sh("tail -n 20 " .. support.q(self.dir .. "/log"))
    return out
end

-- pg_ctl's -o: where it listens, and how durable it is.  synchronous_commit
-- stays on either way: a commit has reached the kernel when it returns, so
-- restart() and kill9() never lose one; fsync off only loses data to a
-- machine crash.
function Server:options()
    local o = { "-p", self.port, "-c", "listen_addresses=127.0.0.1", "-k", self.dir,
        "-c", "shared_buffers=16MB", "-c", "max_connections=30", "-c", "max_wal_size=64MB" }
    if not self.durable then
        for _, a in ipairs { "-c", "fsync=off", "-c", "full_page_writes=off" } do
            o[#o + 1] = a
        end
    end
    return table.concat(o, " ")
end

-- The postmaster's pid (the first line of postmaster.pid), or nil.
function Server:postmaster()
    local f = io.open(self.data .. "/postmaster.pid", "r")
    if not f then
        return nil
    end
    local pid = tonumber(f:read("*l") or "")
    f:close()
    return pid
end

--- Start the server (again: same port, same data directory) and wait until
-- it answers a query, for at most 30 s; an error (with the log's end) when
-- it does not.
function Server:start()
    local deadline = os.time() + LIMIT
    local code, out
    repeat
        code, out = run("pg_ctl", "-D " .. support.q(self.data) .. " -l " .. support.q(self.dir .. "/log")
            .. " -w -t " .. LIMIT .. " -o " .. support.q(self:options()) .. " start")
        if code == 0 then
            break
        end
        -- The processes of a killed server may not all be gone yet
        -- ("pre-existing shared memory block is still in use"): again.
        require("socket").sleep(0.2)
    until os.time() >= deadline
    if code ~= 0 then
        error("PostgreSQL did not start on port " .. self.port .. ": " .. out .. self:log_tail(), 2)
    end
    repeat
        local ok = pcall(self.psql, self, "select 1", "postgres")
        if ok then
            self.pid = self:postmaster()
            return self
        end
        require("socket").sleep(0.05)
    until os.time() >= deadline
    error("PostgreSQL started on port " .. self.port .. " but does not answer: " .. self:log_tail(), 2)
end

--- Stop it, as a crash would (pg_ctl stop -m immediate: no checkpoint, the
-- next start recovers from the WAL), then start it again on the same port
-- and data directory.
function Server:restart()
    run("pg_ctl", "-D " .. support.q(self.data) .. " -m immediate -w -t " .. LIMIT .. " stop")
    self.pid = nil
    return self:start()
end

--- SIGKILL to the postmaster and every process it started (as an OOM kill
-- of the whole server would), waiting until they are gone; `start()` (or
-- `restart()`) brings it back.
function Server:kill9()
    local pid = self:postmaster()
    if not pid then
        return
    end
    local _, children = support.sh("ps -o pid= --ppid " .. pid)
    local pids = { pid }
    for p in children:gmatch("%d+") do
        pids[#pids + 1] = tonumber(p)
    end
    support.sh("kill -KILL " .. table.concat(pids, " "))
    local socket = require "socket"
    local deadline = socket.gettime() + 10
    for _, p in ipairs(pids) do
        while support.alive(p) and socket.gettime() < deadline do
            socket.sleep(0.02)
        end
    end
    -- A dead postmaster's lock files, as postgres itself would remove them:
    -- while the killed postmaster is a zombie (until init reaps it) postgres
    -- would take it for a running server and refuse to start.
    if not support.alive(pid) then
        os.remove(self.data .. "/postmaster.pid")
        os.remove(self.dir .. "/.s.PGSQL." .. self.port .. ".lock")
    end
    self.pid = nil
end

--- Stop it (fast shutdown: open transactions are rolled back), remove its
-- directory, release the guard.  Idempotent.
function Server:stop()
    if not self.guard then
        return
    end
    if self:postmaster() then
        local code = run("pg_ctl", "-D " .. support.q(self.data) .. " -m fast -w -t " .. LIMIT .. " stop")
        if code ~= 0 then
            self:kill9()
        end
    end
    self.pid = nil
    support.sh("rm -rf " .. support.q(self.dir))
    local guard = self.guard
    self.guard = nil
    pcall(guard.close, guard) -- the guard sees the directory gone (or the pipe's end) and exits
end

--- Run `sql` with psql (-X -A -t -q: no psqlrc, unaligned, tuples only;
-- ON_ERROR_STOP) as the server's superuser, in `db` (default: the server's
-- database): its standard output, without the last newline (NOTICEs, on
-- its standard error, are left out).  An error (psql's message) when psql
-- fails.
function Server:psql(sql, db)
    local psql = M.bindir() .. "/psql"
    if not exists(psql) then
        psql = "/usr/bin/psql"
    end
    local errors = os.tmpname()
    local code, out = support.sh("PGCONNECT_TIMEOUT=10 timeout -k 5 " .. LIMIT .. " " .. psql
        .. " -X -A -t -q -v ON_ERROR_STOP=1 -h " .. self.host .. " -p " .. self.port .. " -U " .. support.q(self.user)
        .. " -d " .. support.q(db or self.db) .. " -c " .. support.q(sql) .. " 2>" .. support.q(errors))
    local f = io.open(errors, "r")
    local err = f and f:read("*a") or ""
    if f then
        f:close()
    end
    os.remove(errors)
    if code ~= 0 then
        error("psql (exit " .. tostring(code) .. "): " .. err .. out, 2)
    end
    return (out:gsub("\n$", ""))
end

-- The guard: a bash whose stdin is a pipe this process holds.  It waits
-- (polling every 0.5 s) until the pipe ends, this process is gone from
-- /proc or the data directory is removed (stop()); in the first two cases
-- it stops the server (fast, then immediate, then SIGKILL) and removes the
-- directory.  INT, TERM and HUP do not end it: Ctrl-C on busted still
-- leaves it to clean up.
local function guard(self)
    local pid, started = own_process()
    local q, data = support.q, support.q(self.data)
    local ctl = "timeout -k 5 20 " .. runas().prefix .. M.bindir() .. "/pg_ctl -D " .. data
    local script = table.concat({
        "trap '' INT TERM HUP PIPE",
        "cd /",
        "alive() { local s; read -r s < /proc/" .. pid .. "/stat || return 1; s=${s##*) }; set -- $s; [ \"${20}\" = "
            .. q(started) .. " ]; }",
        "while :; do",
        "  read -r -t 0.5 _; rc=$?",
        "  [ \"$rc\" -gt 128 ] || break",
        "  [ -e " .. data .. " ] || exit 0",
        "  alive 2>/dev/null || break",
        "done",
        "[ -e " .. data .. " ] || exit 0",
        "if [ -e " .. data .. "/postmaster.pid ]; then",
        "  " .. ctl .. " -m fast -w stop || " .. ctl .. " -m immediate -w stop || {",
        "    p=$(head -n 1 " .. data .. "/postmaster.pid); kill -KILL $(ps -o pid= --ppid \"$p\") \"$p\"; }",
        "fi",
        "rm -rf " .. q(self.dir),
    }, "\n")
    return assert(io.popen("exec env -u LD_PRELOAD bash -c " .. q(script) .. " >/dev/null 2>&1", "w"))
end

--- Start a server of the spec's own.
-- @tparam[opt] table opts `user` (its superuser, default "wolkvox"), `db`
--   (a database created for the spec, default "wolkvox"), `durable` (fsync
--   and full-page writes on, as in production; default off, for speed)
-- @return the server: `port`, `host` ("127.0.0.1"), `dir` (its temporary
--   directory: data/, log, the Unix socket), `data`, `user`, `db`, `url`
--   ("postgresql://USER@127.0.0.1:PORT/DB"), `pid` (the postmaster),
--   `start()`, `stop()`, `restart()`, `kill9()`, `psql(sql[, db])`; or nil
--   and why when PostgreSQL is not installed.  When it is installed but
--   does not start, an error: a spec must not pass by skipping what it could run.
function M.start(opts)
    opts = opts or {}
    local ok, why = M.available()
    if not ok then
        return nil, why
    end
    local dir = server_dir()
    local self = setmetatable({ dir = dir, data = dir .. "/data", host = "127.0.0.1", port = free_port(),
        user = opts.user or "wolkvox", db = opts.db or "wolkvox", durable = opts.durable and true or false }, Server)
    self.url = "postgresql://" .. self.user .. "@" .. self.host .. ":" .. self.port .. "/" .. self.db
    local code, out = run("initdb", "-D " .. support.q(self.data) .. " -U " .. support.q(self.user)
        .. " --auth=trust --no-locale -E UTF8 --no-sync --no-instructions")
    if code ~= 0 then
        support.sh("rm -rf " .. support.q(dir))
        error("initdb failed: " .. out, 2)
    end
    self.guard = guard(self)
    local started, err = pcall(self.start, self)
    if started then
        started, err = pcall(self.psql, self, "create database " .. string.format("%q", self.db), "postgres")
    end
    if not started then
        self:stop()
        error(err, 2)
    end
    return self
end

--- For a `describe` that needs PostgreSQL and LuaDBI's `driver`s: true
-- when they are there, else the describe is pending (with what to install).
function M.need(...)
    local ok, why = M.available()
    for _, driver in ipairs { ... } do
        if ok then
            ok, why = M.dbi(driver)
        end
    end
    if not ok then
        require("busted").pending(why)
    end
    return ok and true or false
end

return M
