-- examples/cdr_to_csv.lua: call detail for any range, written as CSV while it
-- streams in (memory holds only the windows in flight).
--
--   lua5.4 examples/cdr_to_csv.lua 2026-01-01 2026-06-30 > cdr.csv
--
-- Without WOLKVOX_SERVER it uses the bundled fake server, offline.  The plan
-- (windows and calls) and the quota spent go to stderr.
local wolkvox = require "wolkvox"

local from, to = arg[1] or "2026-01-01", arg[2] or "2026-06-30"
local server, token = os.getenv("WOLKVOX_SERVER"), os.getenv("WOLKVOX_TOKEN")
local fake
if not server then
    fake = require("wolkvox.fake").spawn()
    server, token = fake.url, fake.token
end

local c = assert(wolkvox.new { server = server, token = token })
local range = { from = from, to = to }

local plan = assert(c:plan("cdr_1", range))
io.stderr:write(string.format("cdr_1 %s .. %s: %d window(s), %d call(s) planned\n",
    from, to, #plan.windows, plan.calls))

-- The columns, from the registry, in the API's own order.
local columns = wolkvox.registry.find("reports_manager", "cdr_1").fields

local function csv(v)
    v = tostring(v == nil and "" or v)
    if v:find('[,"\r\n]') then
        v = '"' .. v:gsub('"', '""') .. '"'
    end
    return v
end

io.write(table.concat(columns, ","), "\n")
local n = 0
local ok, err = pcall(function()
    for row in c:each("cdr_1", range) do
        local cells = {}
        for i, name in ipairs(columns) do
            cells[i] = csv(row[name])
        end
        io.write(table.concat(cells, ","), "\n")
        n = n + 1
    end
end)
local stats = c:stats()
io.stderr:write(string.format("%d rows, %d call(s) spent, %d retried\n", n, stats.calls, stats.retries))
c:close()
if fake then
    fake:stop()
end
if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
end
