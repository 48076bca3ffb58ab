-- examples/seed_report.lua: the five seed reads of an operation, printed.
--
--   make demo                                  (bundled fake server, offline)
--   WOLKVOX_SERVER=0031 WOLKVOX_TOKEN=... lua5.4 examples/seed_report.lua
--
-- Without WOLKVOX_SERVER the script starts the project's fake wolkvox server
-- on a free loopback port and talks to it, so it runs anywhere, offline.
local wolkvox = require "wolkvox"

-- print(), with the write checked: output that did not arrive is an error.
local function print(...)
    local parts = { ... }
    for i = 1, select("#", ...) do
        parts[i] = tostring(parts[i])
    end
    local ok, err = io.stdout:write(table.concat(parts, "\t"), "\n")
    if not ok then
        io.stderr:write("seed_report: cannot write to stdout: ", tostring(err), "\n")
        os.exit(1)
    end
end

local server, token = os.getenv("WOLKVOX_SERVER"), os.getenv("WOLKVOX_TOKEN")
local fake
if not server then
    fake = require("wolkvox.fake").spawn()
    server, token = fake.url, fake.token
    print("(no WOLKVOX_SERVER: using the bundled fake server at " .. fake.url .. ")")
end

local c, err = wolkvox.new { server = server, token = token }
if not c then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
end

-- Display width of UTF-8 text: count the bytes that start a character.
local function width(s)
    return select(2, s:gsub("[^\128-\191]", ""))
end

-- Print rows as an aligned table, columns in `columns` order.
local function show(title, rows, columns)
    print()
    print(title .. " (" .. #rows .. (#rows == 1 and " row)" or " rows)"))
    local widths = {}
    for i, col in ipairs(columns) do
        widths[i] = width(col)
        for _, row in ipairs(rows) do
            widths[i] = math.max(widths[i], width(tostring(row[col] or "")))
        end
    end
    local function line(values)
        local cells = {}
        for i, v in ipairs(values) do
            cells[i] = v .. string.rep(" ", widths[i] - width(v))
        end
        print((("  " .. table.concat(cells, "  ")):gsub("%s+$", "")))
    end
    line(columns)
    for _, row in ipairs(rows) do
        local values = {}
        for i, col in ipairs(columns) do
            values[i] = tostring(row[col] or "")
        end
        line(values)
    end
end

local failed = false
local function report(title, method, columns)
    local rows, meta = c[method](c)
    if not rows then
        print()
        print(title .. ": " .. tostring(meta))
        failed = true
        return
    end
    show(title, rows, columns)
    print("  -- " .. meta.endpoint .. ", HTTP " .. meta.status .. ", " .. tostring(meta.msg)
        .. ", " .. meta.bytes .. " bytes")
end

local billing = { "operation", "description", "items", "date" }
report("Services", "services", { "licenses", "pbx", "screen_recording", "whatsapp", "chat_web", "crm" })
report("Routing points", "routing_points",
    { "rp_id", "rp_name", "ivr_active", "chat_active", "interaction_active", "crm_active", "last_use" })
report("Billing: screen recording", "rec_screen", billing)
report("Billing: chat licences", "chat_licenses", billing)
report("Billing: interactions", "interactions", billing)

local stats = c:stats()
print()
print(string.format("%d call%s spent, %d bytes received, %d connection%s opened",
    stats.calls, stats.calls == 1 and "" or "s", stats.bytes, stats.connects, stats.connects == 1 and "" or "s"))
c:close()
if fake then
    fake:stop()
end
local flushed, ferr = io.stdout:flush()
if not flushed then
    io.stderr:write("seed_report: cannot write to stdout: ", tostring(ferr), "\n")
    os.exit(1)
end
os.exit(failed and 1 or 0)
