-- examples/calls_into_sqlite.lua: last month's call detail loaded into a
-- SQLite file, then a query over it: where the main job ends.
--
--   make demo                                  (bundled fake server, offline)
--   WOLKVOX_SERVER=0031 WOLKVOX_TOKEN=... lua5.4 examples/calls_into_sqlite.lua [calls.db]
--
-- Without WOLKVOX_SERVER the script starts the project's fake wolkvox server
-- on a free loopback port.  Run it twice: the second run finds the month in
-- the database and spends no call.  Needs LuaDBI's SQLite driver (Debian
-- lua-dbi-sqlite3); the query is printed by the sqlite3 shell when it is
-- installed (Debian sqlite3), else through LuaDBI.
local wolkvox = require "wolkvox"

local path = arg and arg[1] or "calls.db"
local server, token = os.getenv("WOLKVOX_SERVER"), os.getenv("WOLKVOX_TOKEN")
local fake
if not server then
    fake = require("wolkvox.fake").spawn()
    server, token = fake.url, fake.token
end

local function fail(msg)
    io.stderr:write("calls_into_sqlite: ", tostring(msg), "\n")
    if fake then
        fake:stop()
    end
    os.exit(1)
end

local c, err = wolkvox.new { server = server, token = token }
if not c then
    fail(err)
end

-- Last month on the operation's clock, into the table cdr_1 of `path`.
local n, meta = c:export("cdr_1", { from = "last-month", to = "last-month" }, { into = path })
c:close()
if fake then
    fake:stop()
end
if not n then
    fail(meta)
end
if meta.complete and meta.resumed then
    print(string.format("%s: last month is already in %s (table %s): no call spent", meta.endpoint,
        meta.into, meta.table))
else
    print(string.format("%s: %d rows loaded into %s (table %s), %d %s", meta.endpoint, meta.written or n,
        meta.into, meta.table, meta.calls, meta.calls == 1 and "call" or "calls"))
end

-- `date` holds the operation's wall time and its offset ("2026-11-01
-- 08:15:00-05:00"): its first 10 characters are the operation's day
-- (SQLite's date(date) would be the UTC day).
local QUERY = "SELECT substr(date, 1, 10) AS day, count(*) AS calls, round(avg(time_seg)) AS avg_seconds, "
    .. "count(DISTINCT agent_id) AS agents FROM cdr_1 GROUP BY day ORDER BY day LIMIT 7"
print()
print("$ sqlite3 -header -column " .. path .. " '" .. QUERY .. "'")
io.stdout:flush()
local shell = os.execute("command -v sqlite3 >/dev/null 2>&1")
if shell == true or shell == 0 then
    local quoted = "'" .. path:gsub("'", "'\\''") .. "'"
    local ok = os.execute("sqlite3 -header -column " .. quoted .. " \"" .. QUERY .. "\"")
    os.exit((ok == true or ok == 0) and 0 or 1)
end
-- No sqlite3 shell: the same query through LuaDBI.
local DBI = require "DBI"
local db = assert(DBI.Connect("SQLite3", path))
local st = assert(db:prepare(QUERY))
assert(st:execute())
print("day         calls  avg_seconds  agents")
for row in st:rows(true) do
    print(string.format("%-10s  %5s  %11s  %6s", row.day, row.calls, row.avg_seconds, row.agents))
end
st:close()
db:close()
