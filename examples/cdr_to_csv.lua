-- examples/cdr_to_csv.lua: call detail for any range, written as CSV while it
-- streams in (memory holds only the windows in flight).
--
--   lua5.4 examples/cdr_to_csv.lua 2026-01-01 2026-06-30 > cdr.csv
--
-- Without WOLKVOX_SERVER it uses the bundled fake server, offline.  The plan
-- (windows and calls) and the quota spent go to stderr.  A failed write
-- (a full disk, a closed pipe) stops it with a message and exit status 1.
local wolkvox = require "wolkvox"
local export = require "wolkvox.export"

local USAGE = [=[
usage: cdr_to_csv.lua [FROM [TO]] > cdr.csv
  FROM, TO: YYYY-MM-DD (default 2026-01-01 .. 2026-06-30)
  WOLKVOX_SERVER, WOLKVOX_TOKEN: the operation (default: the bundled fake server)
]=]

if arg[1] == "-h" or arg[1] == "--help" then
    local ok, err = io.stdout:write(USAGE)
    if ok then
        ok, err = io.stdout:flush()
    end
    if not ok then
        io.stderr:write("cdr_to_csv: cannot write to stdout: ", tostring(err), "\n")
        os.exit(1)
    end
    os.exit(0)
end

local from, to = arg[1] or "2026-01-01", arg[2] or "2026-06-30"
local server, token = os.getenv("WOLKVOX_SERVER"), os.getenv("WOLKVOX_TOKEN")
local fake
if not server then
    fake = require("wolkvox.fake").spawn()
    server, token = fake.url, fake.token
end

-- Leave with a message on stderr and `status`, the fake server stopped.
local function quit(status, msg)
    if msg then
        io.stderr:write("cdr_to_csv: ", msg, "\n")
    end
    if fake then
        fake:stop()
    end
    os.exit(status)
end

local c, cerr = wolkvox.new { server = server, token = token }
if not c then
    quit(2, tostring(cerr))
end
local range = { from = from, to = to }

-- "1 row", "2 rows"
local function count(k, noun)
    return string.format("%d %s%s", k, noun, k == 1 and "" or "s")
end
local plan, perr = c:plan("cdr_1", range)
if not plan then
    c:close()
    quit(2, tostring(perr))
end
io.stderr:write(string.format("cdr_1 %s .. %s: %s, %s planned\n",
    from, to, count(#plan.windows, "window"), count(plan.calls, "call")))

-- The writer checks every write: a CSV cut short must not look like a whole
-- one.  Columns: the registry's, in the API's own order.
local writer = assert(export.writer("csv", io.stdout, { columns = export.columns("cdr_1") }))
local WRITE_FAILED = {}
local write_error

local ok, err = pcall(function()
    for row in c:each("cdr_1", range) do
        local done, werr = writer:write(row)
        if not done then
            write_error = werr
            error(WRITE_FAILED, 0)
        end
    end
    local done, werr = writer:close()
    if not done then
        write_error = werr
        error(WRITE_FAILED, 0)
    end
end)
local n = writer.rows
local stats = c:stats()
c:close()
if err == WRITE_FAILED then
    quit(1, string.format("the CSV is incomplete (%s); stopped after %d rows", tostring(write_error), n))
end
io.stderr:write(string.format("%s, %s spent, %d retried\n", count(n, "row"), count(stats.calls, "call"),
    stats.retries))
if not ok then
    quit(1, tostring(err))
end
quit(0)
