-- bench/db.lua: loading a report into a database (issue #22), measured as a
-- user runs it, beside the databases' own bulk loaders.
--
-- Six months of cdr_1 (2026-01-01..2026-06-30) at 1,956 rows a day: 354,036
-- rows of the fake's realistic shape (20 fields).  A window of 31 days would
-- hold 60,636 rows, above the API's cap of 60,000, so the client sizes its
-- windows from what the answers show, as it would against the real service:
-- 10 calls (2 of them answer the capped 60,000 and are asked again in smaller
-- windows).  The fake answers each of those calls once (the requests of one
-- real run, read from its log); the answers, gzipped, are then served by a
-- static nginx on loopback (gzip_static; the file named by the query's
-- date_ini and date_end), so the server's own work (making rows,
-- compressing) is not charged to any case.
--
-- Cases, each a fresh process (the command a cron line runs), RUNS times;
-- figures are medians of wall time and of peak RSS (GNU time: the largest
-- process of the case, the database server not counted):
--   sqlite        wolkvox report --into sqlite:FILE (a new file each run)
--   postgresql    wolkvox report --into postgresql://... through wolkvox.pg
--                 (COPY; WOLKVOX_PG_DRIVER=libpq) (tables dropped between
--                 runs; a private server, fsync on, spec/pg.lua)
--   pg LuaDBI     the same through LuaDBI (WOLKVOX_PG_DRIVER=dbi): the path
--                 without wolkvox.pg, measured in the same run
--   csv+.import   wolkvox report -o cdr.csv, then sqlite3 .import --csv into
--                 the typed table of `wolkvox schema cdr_1` (both timed)
--   csv+\copy     wolkvox report -o cdr.csv, then psql \copy (FORMAT csv)
--                 into the typed table of `wolkvox schema cdr_1 --dialect
--                 postgresql` (both timed)
--   sqlite 1 month  the first month only: memory does not grow with the range
--   export -> CSV only  the export the baselines start with, alone
-- The ratio is to the bulk loader of the same database (goal: at most 1.5x).
--   lua5.4 bench/db.lua [RUNS [PATTERN]]   (needs nginx, GNU time, sqlite3,
--   Debian's postgresql and psql, LuaDBI's sqlite3 and postgresql drivers,
--   wolkvox.pg built; PATTERN: only the cases whose name contains it, or
--   one of its parts between "|": 'postgresql|LuaDBI|csv+\copy')
local socket = require "socket"

local RUNS = tonumber(arg and arg[1]) or 5
local ONLY = arg and arg[2] -- names' parts, "|" between them
local ROWS_PER_DAY = 1956
local FROM, TO, TO_1M = "2026-01-01", "2026-06-30", "2026-01-31"

local common = dofile("bench/common.lua")
local sh, write, median = common.sh, common.write, common.median

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local root = sh("pwd"):gsub("%s+$", "")
local dir = sh("mktemp -d"):gsub("%s+$", "")
package.path = root .. "/spec/?.lua;" .. package.path

local LUA54 = "env LUA_PATH_5_4='" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;' LUA_CPATH_5_4='"
    .. root .. "/build/5.4/?.so;;' lua5.4"

-- ---- the answers, made once --------------------------------------------------

-- Runs of each range against the fake; its log says which calls a run
-- makes.  Which windows a run asks after a capped answer depends a little
-- on which of its two calls in flight answers first: the six months are
-- run three times, and a call none of them made (rare) is answered by the
-- fake behind nginx; the figures say how many were.
local base, srv, json_bytes, ncalls = common.recorded_answers { dir = dir, root = root, lua = LUA54,
    rows_per_day = ROWS_PER_DAY, from = FROM, tos = { TO, TO, TO, TO_1M } }

-- ---- PostgreSQL: a private server, durable as in production -----------------

local pg = require "pg"
local server = assert(pg.start { durable = true })
local PSQL = "psql -X -q -v ON_ERROR_STOP=1 -h " .. server.host .. " -p " .. server.port .. " -U " .. server.user
    .. " -d " .. server.db
local DROP = PSQL .. " -c 'DROP TABLE IF EXISTS cdr_1, _wolkvox_loads, _wolkvox_state'"

-- ---- the cases -------------------------------------------------------------

local WOLKVOX = "env WOLKVOX_TOKEN=" .. srv.token .. " " .. LUA54 .. " " .. root .. "/bin/wolkvox --base-url " .. base
    .. " --state-dir " .. dir .. "/cli-state --quiet"
local function report(to, where, env)
    return (env and "env " .. env .. " " or "") .. WOLKVOX .. " report cdr_1 --from " .. FROM .. " --to " .. to
        .. " " .. where
end
local DB, CSV = dir .. "/calls.db", dir .. "/cdr.csv"

-- The baselines' typed tables: the DDL `wolkvox schema` prints.  SQLite's
-- .import fills a short row's missing columns one warning per row, so its
-- table leaves out _unfit (always NULL here); \copy names the CSV's columns.
local ddl_sqlite = sh(WOLKVOX .. " schema cdr_1"):gsub('\n  "_unfit" TEXT,', "")
local ddl_pg = sh(WOLKVOX .. " schema cdr_1 --dialect postgresql")
write(dir .. "/sqlite.sql", ddl_sqlite)
write(dir .. "/pg.sql", ddl_pg)
local header = sh(report(TO_1M, "-o " .. CSV) .. " && head -n 1 " .. CSV):gsub("%s+$", "")
assert(header:find("conn_id", 1, true), "no CSV header")

local cases = {
    { name = "sqlite, 6 months", base = "csv+.import", rows = 354036,
        prep = "rm -f " .. DB .. "*", cmd = report(TO, "--into sqlite:" .. DB),
        count = "sqlite3 " .. DB .. " 'SELECT count(*) FROM cdr_1'" },
    { name = "sqlite, 1 month", rows = 31 * ROWS_PER_DAY,
        prep = "rm -f " .. DB .. "*", cmd = report(TO_1M, "--into sqlite:" .. DB),
        count = "sqlite3 " .. DB .. " 'SELECT count(*) FROM cdr_1'" },
    -- The export the baselines start with, alone (the fetch and the CSV).
    { name = "export -> CSV only", rows = 354037,
        prep = "rm -f " .. CSV, cmd = report(TO, "-o " .. CSV), count = "wc -l < " .. CSV },
    { name = "csv+.import", rows = 354036,
        prep = "rm -f " .. DB .. "* " .. CSV .. " && sqlite3 " .. DB .. " < " .. dir .. "/sqlite.sql",
        cmd = "sh -c " .. q(report(TO, "-o " .. CSV) .. " && sqlite3 " .. DB .. " '.import --csv --skip 1 "
            .. CSV .. " cdr_1'"),
        count = "sqlite3 " .. DB .. " 'SELECT count(*) FROM cdr_1'" },
    { name = "postgresql, 6 months", base = "csv+\\copy", rows = 354036,
        prep = DROP, cmd = report(TO, "--into " .. server.url, "WOLKVOX_PG_DRIVER=libpq"),
        count = PSQL .. " -At -c 'SELECT count(*) FROM cdr_1'" },
    { name = "pg LuaDBI, 6 months", base = "csv+\\copy", rows = 354036,
        prep = DROP, cmd = report(TO, "--into " .. server.url, "WOLKVOX_PG_DRIVER=dbi"),
        count = PSQL .. " -At -c 'SELECT count(*) FROM cdr_1'" },
    { name = "csv+\\copy", rows = 354036,
        prep = DROP .. " && rm -f " .. CSV .. " && " .. PSQL .. " -f " .. dir .. "/pg.sql",
        cmd = "sh -c " .. q(report(TO, "-o " .. CSV) .. " && " .. PSQL .. " -c " .. q("\\copy cdr_1 (" .. header
            .. ") FROM '" .. CSV .. "' WITH (FORMAT csv, HEADER)")),
        count = PSQL .. " -At -c 'SELECT count(*) FROM cdr_1'" },
}

local function measure(c)
    local walls, rss = {}, {}
    for i = 1, RUNS do
        assert(os.execute("(" .. c.prep .. ") >/dev/null 2>&1"), "the preparation failed: " .. c.prep)
        local wall, kb = common.timed(c.cmd)
        if not wall then
            return nil, kb
        end
        local n = tonumber(sh(c.count))
        if n ~= c.rows then
            return nil, "loaded " .. tostring(n) .. " rows, not " .. c.rows
        end
        walls[i], rss[i] = wall, kb
    end
    return median(walls), median(rss) / 1024
end

local function loadavg()
    return (sh("cat /proc/loadavg"):match("^(%S+ %S+ %S+)"))
end

print(string.format("lua-wolkvox into a database: cdr_1 %s..%s, %d rows a day (354,036 rows, %d calls, "
    .. "%.0f MB of JSON); median of %d fresh processes each; %s", FROM, TO, ROWS_PER_DAY, ncalls, json_bytes / 1e6,
    RUNS, os.date("!%Y-%m-%d %H:%M UTC")))
print(string.format("machine: %s, %s cores, load %s; SQLite %s; PostgreSQL %s", sh("uname -m"):gsub("%s+$", ""),
    sh("nproc"):gsub("%s+$", ""), loadavg(), sh("sqlite3 --version"):match("^(%S+)"),
    sh(server.psql and PSQL .. " -At -c 'SHOW server_version'"):gsub("%s+$", "")))
print()
print(string.format("%-24s %9s %9s %9s", "case", "wall s", "vs bulk", "peak MB"))
local got = {}
for _, c in ipairs(cases) do
    local wanted = not ONLY
    for part in (ONLY or ""):gmatch("[^|]+") do
        wanted = wanted or c.name:find(part, 1, true) ~= nil
    end
    if wanted then
        local wall, mb = measure(c)
        if not wall then
            print(string.format("%-24s failed: %s", c.name, tostring(mb):sub(1, 300)))
        else
            got[c.name] = wall
            c.wall, c.mb = wall, mb
        end
    end
end
-- The baselines are measured after the cases: ratios are printed at the end.
for _, c in ipairs(cases) do
    if c.wall then
        local b = c.base and got[c.base]
        print(string.format("%-24s %9.2f %9s %9.1f", c.name, c.wall, b and string.format("%.2fx", c.wall / b) or "",
            c.mb))
    end
end
local f = io.open(dir .. "/fake.log", "r")
local fallback = f and select(2, f:read("a"):gsub("\n", "")) or 0
if f then
    f:close()
end
print(string.format("calls not made by the recording runs, answered by the fake behind nginx: %d", fallback))
print(string.format("load at the end: %s", loadavg()))

server:stop()
srv:stop()
common.stop(dir)
socket.sleep(0.2)
os.execute("rm -rf " .. dir)
