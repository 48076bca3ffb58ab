-- bench/xlsx.lua: an Excel workbook of six months of call detail (issue
-- #25) in flat memory, measured as a user runs it, beside a CSV of the same
-- rows.
--
-- cdr_1 2026-01-01..2026-06-30 at 1,956 rows a day: 354,036 rows of the
-- fake's realistic shape (20 fields), as bench/db.lua serves them: the fake
-- answers each call of a recorded run once, the answers (gzipped) are then
-- served by a static nginx on loopback, so the server's own work is not
-- charged to any case.
--
-- Cases, each a fresh process (`wolkvox report cdr_1 ... -o FILE`), RUNS
-- times; figures are medians of wall time, CPU time (user + system: less
-- moved than wall time by other work on a shared machine) and peak RSS
-- (GNU time):
--   xlsx 1 month / xlsx 6 months   -o calls.xlsx (the memory must not grow with the range)
--   csv 1 month / csv 6 months     -o calls.csv (the same rows, the fast path)
-- Each workbook's rows are counted in its sheet XML (unzip), each CSV's lines.
--   lua5.4 bench/xlsx.lua [RUNS]   (needs nginx, GNU time, unzip, and wolkvox.xlsx built)
local socket = require "socket"

local RUNS = tonumber(arg and arg[1]) or 3
local ROWS_PER_DAY = 1956
local FROM, TO, TO_1M = "2026-01-01", "2026-06-30", "2026-01-31"
local ROWS_6M, ROWS_1M = 354036, 31 * ROWS_PER_DAY

local common = dofile("bench/common.lua")
local sh, median = common.sh, common.median

local root = sh("pwd"):gsub("%s+$", "")
local dir = sh("mktemp -d"):gsub("%s+$", "")

local LUA54 = "env LUA_PATH_5_4='" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;' LUA_CPATH_5_4='"
    .. root .. "/build/5.4/?.so;;' lua5.4"

assert(os.execute("test -f " .. root .. "/build/5.4/wolkvox/xlsx.so"), "wolkvox.xlsx is not built (make, with "
    .. "libxlsxwriter-dev installed)")

-- ---- the answers, made once (as bench/db.lua) --------------------------------

local base, srv = common.recorded_answers { dir = dir, root = root, lua = LUA54,
    rows_per_day = ROWS_PER_DAY, from = FROM, tos = { TO, TO, TO, TO_1M } }

-- ---- the cases ---------------------------------------------------------------

local WOLKVOX = "env WOLKVOX_TOKEN=" .. srv.token .. " " .. LUA54 .. " " .. root .. "/bin/wolkvox --base-url " .. base
    .. " --state-dir " .. dir .. "/cli-state --quiet"
local XLSX, CSV = dir .. "/calls.xlsx", dir .. "/calls.csv"
-- Rows of a workbook's sheet "Data" (the first), its header included.
local function xlsx_rows()
    return "unzip -p " .. XLSX .. " xl/worksheets/sheet1.xml | grep -o '<row r=' | wc -l"
end

local cases = {
    { name = "xlsx, 1 month", rows = ROWS_1M + 1, to = TO_1M, out = XLSX, count = xlsx_rows() },
    { name = "xlsx, 6 months", rows = ROWS_6M + 1, to = TO, out = XLSX, count = xlsx_rows() },
    { name = "csv, 1 month", rows = ROWS_1M + 1, to = TO_1M, out = CSV, count = "wc -l < " .. CSV },
    { name = "csv, 6 months", rows = ROWS_6M + 1, to = TO, out = CSV, count = "wc -l < " .. CSV },
}

-- `cmd` once under GNU time: wall seconds, CPU seconds and peak RSS (KB),
-- or nil and what it printed.
local function timed(cmd)
    local out = sh("/usr/bin/time -f '@@ %e %U %S %M' " .. cmd .. " 2>&1 >/dev/null")
    local wall, user, sys, kb = out:match("@@ ([%d%.]+) ([%d%.]+) ([%d%.]+) (%d+)")
    if not wall or out:find("Command exited with non%-zero status") then
        return nil, out
    end
    return tonumber(wall), tonumber(user) + tonumber(sys), tonumber(kb)
end

local function measure(c)
    local walls, cpus, rss, size = {}, {}, {}, 0
    for i = 1, RUNS do
        os.remove(c.out)
        local wall, cpu, kb = timed(WOLKVOX .. " report cdr_1 --from " .. FROM .. " --to " .. c.to .. " -o " .. c.out)
        if not wall then
            return nil, cpu
        end
        local n = tonumber(sh(c.count))
        if n ~= c.rows then
            return nil, "counted " .. tostring(n) .. " rows, not " .. c.rows
        end
        walls[i], cpus[i], rss[i] = wall, cpu, kb
        size = tonumber((sh("stat -c %s " .. c.out)))
    end
    return median(walls), median(cpus), median(rss) / 1024, size / 1e6
end

local function loadavg()
    return (sh("cat /proc/loadavg"):match("^(%S+ %S+ %S+)"))
end

print(string.format("lua-wolkvox --format xlsx: cdr_1 %s..%s, %d rows a day (%d rows in 6 months, %d in January); "
    .. "median of %d fresh processes each; %s", FROM, TO, ROWS_PER_DAY, ROWS_6M, ROWS_1M, RUNS,
    os.date("!%Y-%m-%d %H:%M UTC")))
print(string.format("machine: %s, %s cores, load %s; libxlsxwriter %s", sh("uname -m"):gsub("%s+$", ""),
    sh("nproc"):gsub("%s+$", ""), loadavg(), sh(LUA54 .. " -e 'io.write(require(\"wolkvox.xlsx\").version)'")))
print()
print(string.format("%-16s %9s %9s %9s %9s %9s", "case", "wall s", "cpu s", "cpu/csv", "peak MB", "file MB"))
local got = {}
for _, c in ipairs(cases) do
    local wall, cpu, mb, size = measure(c)
    if not wall then
        print(string.format("%-16s failed: %s", c.name, tostring(cpu):sub(1, 300)))
    else
        c.wall, c.cpu, c.mb, c.size = wall, cpu, mb, size
        got[c.name] = c
    end
end
for _, c in ipairs(cases) do
    if c.wall then
        local csv = got[c.name:gsub("^xlsx", "csv")]
        print(string.format("%-16s %9.2f %9.2f %9s %9.1f %9.1f", c.name, c.wall, c.cpu,
            csv and c.name:find("^xlsx") and string.format("%.2fx", c.cpu / csv.cpu) or "", c.mb, c.size))
    end
end
local x1, x6 = got["xlsx, 1 month"], got["xlsx, 6 months"]
if x1 and x6 then
    print(string.format("peak RSS, 6 months / 1 month: %.2f (rows: %.1fx)", x6.mb / x1.mb, ROWS_6M / ROWS_1M))
end
print(string.format("load at the end: %s", loadavg()))

srv:stop()
common.stop(dir)
socket.sleep(0.2)
os.execute("rm -rf " .. dir)
