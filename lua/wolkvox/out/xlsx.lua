--- The xlsx format: an Excel workbook written with libxlsxwriter (through
-- the optional C module `wolkvox.xlsx`) in its constant-memory mode, so a
-- report of any length stays in flat memory (one row per sheet is held).
--
--     assert(c:export("cdr_1", { from = "2026-01-01", to = "2026-06-30" }, { format = "xlsx",
--         output = "calls.xlsx" }))
--
-- Sheets: "Data" (then "Data 2", ... past Excel's 1,048,576 rows a sheet),
-- its header bold and frozen, an autofilter over the rows; for a report by
-- period (`per`), "Charts" (one native chart per numeric field over the
-- periods) and, when a period holds several rows, "Chart data" (each
-- field's values by period and row, which the charts draw); "About" (what
-- the workbook holds and how it was made).
--
-- Cells are typed by `wolkvox.api.schema`'s type of their field: integer
-- and decimal as numbers, duration as an Excel time (`[h]:mm:ss`), percent
-- as a percentage (34.5 becomes 0.345, shown 34.50%), timestamp as an Excel
-- date on the operation's clock (the wall time the API sends), text as
-- text (an ID "0031" stays "0031"; text that looks like a formula stays
-- text).  A value that does not fit its field's type is written as the
-- text sent.  Text longer than Excel's 32,767 characters a cell is cut,
-- and says so at its end; the About sheet counts such cells.
-- @module wolkvox.out.xlsx

local dates = require "wolkvox.dates"
local registry = require "wolkvox.api.registry"
local schema = require "wolkvox.api.schema"
local formats = require "wolkvox.out.formats"
local version = require "wolkvox.version"

local type, tostring, tonumber, pairs, ipairs, floor, format, concat, byte, char, pcall, io_open, os_date =
    type, tostring, tonumber, pairs, ipairs, math.floor, string.format, table.concat, string.byte,
    string.char, pcall, io.open, os.date

local xlsx
do
    local ok, mod = pcall(require, "wolkvox.xlsx")
    xlsx = ok and type(mod) == "table" and mod or nil
end

local NULL = require("wolkvox.json").null

local M = {}

--- Rows a sheet holds, its header included (Excel's limit).
M.MAX_ROWS = 1048576
--- Characters a cell holds (Excel's limit).
M.MAX_CHARS = 32767
--- Rows of a report by period kept for its charts; past them the workbook
-- has no charts (the About sheet says why).
M.CHART_ROWS = 20000
--- Lines a chart draws at most (one per row of a period: an agent, a skill).
M.CHART_SERIES = 30

-- Excel number formats of the types.
local NUM_FORMAT = { duration = "[h]:mm:ss", percent = "0.00%", timestamp = "yyyy-mm-dd hh:mm:ss" }
-- Column widths (characters) of the types whose cells have a known shape.
local WIDTH = { duration = 10, percent = 9, timestamp = 19, integer = 10, decimal = 12 }
-- Rows whose text decides the columns' widths.
local SAMPLE = 1000
-- Excel's day 0 is 1899-12-30: 1970-01-01 is day 25569.
local EPOCH = 25569

--- Whether the format can be written here: true, or nil and what to install.
function M.ready()
    if xlsx then
        return true
    end
    return nil, "the xlsx format needs the optional C module wolkvox.xlsx, built with libxlsxwriter, which is not "
        .. "installed: install libxlsxwriter (Debian/Ubuntu: apt-get install libxlsxwriter-dev) and rebuild with "
        .. "make (or luarocks make extras/lua-wolkvox-xlsx-scm-1.rockspec)"
end

-- ---- text ------------------------------------------------------------------

-- Invalid UTF-8 bytes of `s` replaced by U+FFFD (XML, thus a workbook,
-- holds only characters).
local function fix_utf8(s)
    local out, i, n, from = nil, 1, #s, 1
    while i <= n do
        local c = byte(s, i)
        local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2 or (c >= 0xE0 and c <= 0xEF) and 3
            or (c >= 0xF0 and c <= 0xF4) and 4 or 0
        local ok = len > 0 and i + len - 1 <= n
        if ok and len > 1 then
            local c2 = byte(s, i + 1)
            ok = c2 >= 0x80 and c2 <= 0xBF
                and not (c == 0xE0 and c2 < 0xA0) and not (c == 0xED and c2 > 0x9F)
                and not (c == 0xF0 and c2 < 0x90) and not (c == 0xF4 and c2 > 0x8F)
            for k = 2, len - 1 do
                local ck = byte(s, i + k)
                ok = ok and ck >= 0x80 and ck <= 0xBF
            end
        end
        if ok then
            i = i + len
        else
            out = out or {}
            out[#out + 1] = s:sub(from, i - 1)
            out[#out + 1] = "\239\191\189"
            i = i + 1
            from = i
        end
    end
    if not out then
        return s
    end
    out[#out + 1] = s:sub(from)
    return concat(out)
end

-- The byte where character `k` of UTF-8 text `s` ends.
local function char_end(s, k)
    local seen = 0
    for i = 1, #s do
        local c = byte(s, i)
        if c < 0x80 or c >= 0xC0 then
            seen = seen + 1
            if seen == k + 1 then
                return i - 1
            end
        end
    end
    return #s
end

local function chars(s)
    local _, cont = s:gsub("[\128-\191]", "")
    return #s - cont
end

-- Text as a cell holds it: valid UTF-8; Excel's escapes (_x0041_) in the
-- text escaped themselves (else Excel would read "_x0041_" as "A"; the
-- control characters libxlsxwriter escapes that way); NUL escaped; at
-- most MAX_CHARS characters (cut, saying so).  Also whether it was cut.
local function cell_text(s)
    if #s <= M.MAX_CHARS and not s:find("[%z\128-\255]") and not s:find("_x", 1, true) then
        return s, false   -- (most values: plain ASCII)
    end
    if s:find("[\128-\255]") then
        s = fix_utf8(s)
    end
    if s:find("_x%x%x%x%x_") then
        s = s:gsub("_(x%x%x%x%x_)", "_x005F_%1")
    end
    if s:find("\0", 1, true) then
        s = s:gsub("%z", "_x0000_")
    end
    if #s > M.MAX_CHARS then
        local n = chars(s)
        if n > M.MAX_CHARS then
            local mark = format(" [cut: %d characters in all]", n)
            return s:sub(1, char_end(s, M.MAX_CHARS - 1 - #mark)) .. "\226\128\166" .. mark, true
        end
    end
    return s, false
end
M.cell_text = cell_text

-- ---- values ----------------------------------------------------------------

-- Wall time text ("2026-01-05 10:00:00") as an Excel date, or nil.
-- (The day of the last date read: the rows of a window share a few days.)
local last_day, last_serial
local function excel_date(v)
    local day, h, mi, sec = v:match("^(%d%d%d%d%-%d%d%-%d%d)[ T](%d%d):(%d%d):(%d%d)$")
    if day then
        h, mi, sec = tonumber(h), tonumber(mi), tonumber(sec)
        if h <= 23 and mi <= 59 and sec <= 59 then
            if day ~= last_day then
                local t = dates.make(tonumber(day:sub(1, 4)), tonumber(day:sub(6, 7)), tonumber(day:sub(9, 10)))
                if not t then
                    return nil
                end
                last_day, last_serial = day, t / 86400 + EPOCH
            end
            return last_serial + (h * 3600 + mi * 60 + sec) / 86400
        end
    end
    local t = dates.parse(v)
    return t and t / 86400 + EPOCH
end

-- Converters of a value of each numeric type to what the cell holds (a
-- number), or nil when it does not fit.
local function numeric(ty)
    local scale = ty == "duration" and 1 / 86400 or ty == "percent" and 1 / 100 or 1
    local fast = (ty == "integer" or ty == "duration") and "^%-?%d+$" or ty ~= "percent" and "^%-?%d+%.?%d*$"
    return function(v)
        local n
        if type(v) == "number" then
            n = v
            if ty == "integer" and n ~= floor(n) then
                return nil
            end
        elseif fast and #v <= 15 and v:find(fast) then
            n = tonumber(v)
        else
            local h, mi, sec
            if ty == "duration" then
                h, mi, sec = v:match("^(%d+):(%d%d):(%d%d)$")
            end
            if h then
                n = tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
            else
                local x = schema.value(ty, v)
                n = type(x) == "number" and x or nil
            end
        end
        if n == nil or n ~= n or n == 1 / 0 or n == -1 / 0 then
            return nil
        end
        return n * scale
    end
end


-- The type of each of the writer's columns: the schema's for the
-- endpoint's own fields, text for any other (period, key, unknown).
local function column_types(w, e)
    local known = {}
    for _, c in ipairs(e and schema.columns(e) or {}) do
        known[c.name] = c.type
    end
    local types = {}
    for i, c in ipairs(w.cols) do
        local ty = known[c]
        types[i] = (ty and ty ~= "json") and ty or "text"
    end
    return types
end

-- ---- the workbook ----------------------------------------------------------

local function check(x, ok, why)
    if not ok then
        x.failed = x.failed or tostring(why)
        error(x, 0)
    end
    return ok
end

-- A new data sheet with its header.
local function data_sheet(x)
    x.nsheet = x.nsheet + 1
    local name = x.nsheet == 1 and "Data" or ("Data " .. x.nsheet)
    local sheet = check(x, x.book:sheet(name))
    x.sheets[#x.sheets + 1] = { id = sheet, name = name }
    x.sheet, x.r = sheet, 1
    check(x, x.book:row(sheet, 0, x.head, x.head_fmts, x.n))
    check(x, x.book:freeze(sheet, 1, 0))
    check(x, x.book:print(sheet, { landscape = true }))
end

-- The autofilter over data sheet `s` (header and `last` rows below it).
local function filter(x, s, last)
    check(x, x.book:autofilter(s.id, 0, 0, last, x.n - 1))
end

local function setup(w, row)
    local e = registry.lookup(w.endpoint or (w.about and w.about.endpoint))
    if w.columns == nil and e then
        w.columns = formats.columns(e.name)   -- the API's order, then any other field
    end
    formats.settle_columns(w, row)
    local x = { cut = 0, unfit = 0, rows = 0, nsheet = 0, sheets = {}, per = w.about and w.about.per }
    w.xl = x
    -- In a library export by period the rows do not carry their period: the window says it.
    if x.per then
        local has = false
        for _, c in ipairs(w.cols) do
            has = has or c == "period"
        end
        if not has then
            table.insert(w.cols, 1, "period")
            x.add_period = true
        end
    end
    x.e = e
    x.n = #w.cols
    x.types = column_types(w, e)
    local book, why = xlsx.new()
    if not book then
        x.failed = why
        return
    end
    x.book = book
    local ok, err = pcall(function()
        x.bold = check(x, book:format { bold = true })
        local fmt_of = {}
        for ty, nf in pairs(NUM_FORMAT) do
            fmt_of[ty] = check(x, book:format { num_format = nf })
        end
        x.fmt_of = fmt_of
        x.head, x.head_fmts, x.fmts, x.conv, x.width, x.cells, x.cf = {}, {}, {}, {}, {}, {}, {}
        for i, c in ipairs(w.cols) do
            local ty = x.types[i]
            x.head[i], x.head_fmts[i] = cell_text(c), x.bold
            x.fmts[i] = fmt_of[ty] or 0
            x.conv[i] = (ty ~= "text" and ty ~= "timestamp") and numeric(ty) or nil
            x.width[i] = WIDTH[ty] or 8
            x.cells[i], x.cf[i] = false, 0
            local hw = chars(c) + 3   -- (and the filter's button)
            if hw > x.width[i] then
                x.width[i] = hw
            end
        end
        data_sheet(x)
    end)
    if not ok then
        x.failed = x.failed or tostring(err)
    end
end

-- ---- charts ----------------------------------------------------------------

local NUMERIC = { integer = true, decimal = true, duration = true, percent = true }

-- What the charts of a report by period draw: the numeric columns, over
-- the periods, one line per row of a period (named by its text columns).
local function chart_setup(x, w)
    if not x.per then
        return
    end
    if x.e and x.e.kind ~= "aggregate" then
        x.no_chart = "none: " .. x.e.name .. " is not an aggregate report (its rows are not figures of a period)"
        return
    end
    local metrics, labels, names = {}, {}, {}
    for i, c in ipairs(w.cols) do
        local ty = x.types[i]
        if c == "period" then
            x.period_col = i
        elseif NUMERIC[ty] then
            metrics[#metrics + 1] = i
        elseif ty == "text" then
            labels[#labels + 1] = i
            if c:find("name", 1, true) or not (c == "id" or c:find("_id$") or c:find("^id_") or c:find("dni", 1, true)
                    or c == "key") then
                names[#names + 1] = i
            end
        end
    end
    if #metrics == 0 or not x.period_col then
        return
    end
    x.chart = { metrics = metrics, labels = #names > 0 and names or labels, periods = {}, period_at = {},
        series = {}, series_at = {}, values = {}, seen = {} }
end

local function chart_row(x, cells, raw)
    local ch = x.chart
    if x.rows > M.CHART_ROWS then
        x.chart, x.no_chart = nil, format("more than %d rows: too many to chart", M.CHART_ROWS)
        return
    end
    local p = raw[x.period_col]
    p = p == nil and "" or tostring(p)
    local pi = ch.period_at[p]
    if not pi then
        pi = #ch.periods + 1
        ch.periods[pi], ch.period_at[p] = p, pi
        ch.seen[pi] = {}
        ch.first_row = ch.first_row or x.r
    end
    local parts = {}
    for _, i in ipairs(ch.labels) do
        local v = raw[i]
        if v ~= nil and v ~= "" and v ~= NULL then
            parts[#parts + 1] = tostring(v)
        end
    end
    local key = concat(parts, " · ")
    local seen = ch.seen[pi]
    local k = (seen[key] or 0) + 1
    seen[key] = k
    if k > 1 then
        key = key .. " (" .. k .. ")"
    end
    local si = ch.series_at[key]
    if not si then
        si = #ch.series + 1
        ch.series[si], ch.series_at[key] = key, si
    end
    for mi, i in ipairs(ch.metrics) do
        local v = cells[i]
        if type(v) == "number" then
            local col = ch.values[mi]
            if not col then
                col = {}
                ch.values[mi] = col
            end
            col[(si - 1) * 1000000 + pi] = v
        end
    end
end

-- A cell's A1 name in a formula ($B$7), from 0-based row and column.
local function col_name(c)
    local s = ""
    c = c + 1
    while c > 0 do
        local m = (c - 1) % 26
        s = char(65 + m) .. s
        c = floor((c - 1 - m) / 26)
    end
    return s
end

local function ref(sheet, c, r1, r2)
    local col = col_name(c)
    return format("='%s'!$%s$%d:$%s$%d", sheet, col, r1 + 1, col, r2 + 1)
end

local function cell_ref(sheet, c, r)
    return format("='%s'!$%s$%d", sheet, col_name(c), r + 1)
end

local function write_charts(x, w)
    local ch = x.chart
    local book = x.book
    local np, ns = #ch.periods, #ch.series
    local charts = check(x, book:sheet("Charts"))
    check(x, book:print(charts, { landscape = true, fit_width = 1, fit_height = 0 }))
    check(x, book:row(charts, 0, { "One chart per numeric field of " .. tostring(x.e and x.e.name or "the report")
        .. " over the periods (" .. tostring(x.per) .. "), as the API gives it." }, { x.bold }, 1))
    -- One row a period, all on the first data sheet: the charts draw its columns.
    local direct = #x.sheets == 1 and ns == 1
    local data_sheet_name, blocks = "Chart data", nil
    if not direct then
        -- Each field's values by period (rows) and series (columns), a block each.
        local sheet = check(x, book:sheet(data_sheet_name))
        local r = 0
        blocks = {}
        local shown = ns < M.CHART_SERIES and ns or M.CHART_SERIES
        for mi, i in ipairs(ch.metrics) do
            local head, fmts = { cell_text(w.cols[i]) }, { x.bold }
            for si = 1, ns do
                head[si + 1], fmts[si + 1] = cell_text(ch.series[si] ~= "" and ch.series[si] or w.cols[i]), x.bold
            end
            check(x, book:row(sheet, r, head, fmts, ns + 1))
            blocks[mi] = { head = r, shown = shown }
            local col = ch.values[mi] or {}
            local fmt = x.fmts[i]
            for pi = 1, np do
                local cells, cf = { cell_text(ch.periods[pi]) }, { 0 }
                for si = 1, ns do
                    cells[si + 1], cf[si + 1] = col[(si - 1) * 1000000 + pi] or false, fmt
                end
                check(x, book:row(sheet, r + pi, cells, cf, ns + 1))
            end
            r = r + np + 2
        end
        check(x, book:column(sheet, 0, 0, 22))
        if ns > 0 then
            check(x, book:column(sheet, 1, ns, 14))
        end
    end
    for mi, i in ipairs(ch.metrics) do
        local name = w.cols[i]
        local ty = x.types[i]
        local spec = { type = np > 1 and "line" or "column", title = name:gsub("^=+", ""),
            y_format = NUM_FORMAT[ty] and (ty == "duration" and "[h]:mm" or NUM_FORMAT[ty]) or nil,
            x_scale = 1.6, y_scale = 1.1, series = {} }
        if direct then
            local sh = x.sheets[1].name
            local first, last = ch.first_row, ch.first_row + np - 1
            spec.series[1] = { categories = ref(sh, x.period_col - 1, first, last),
                values = ref(sh, i - 1, first, last), name_ref = cell_ref(sh, i - 1, 0) }
        else
            local b = blocks[mi]
            for si = 1, b.shown do
                spec.series[si] = { categories = ref(data_sheet_name, 0, b.head + 1, b.head + np),
                    values = ref(data_sheet_name, si, b.head + 1, b.head + np),
                    name_ref = cell_ref(data_sheet_name, si, b.head) }
            end
            if ns > b.shown then
                spec.title = format("%s (the first %d of %d rows a period)", spec.title, b.shown, ns)
            end
        end
        check(x, book:chart(charts, 2 + (mi - 1) * 18, 1, spec))
    end
end

-- ---- About -----------------------------------------------------------------

local function offset_text(offset)
    local sign = offset < 0 and "-" or "+"
    offset = offset < 0 and -offset or offset
    return format("UTC%s%02d:%02d", sign, floor(offset / 3600), floor(offset % 3600 / 60))
end

local function write_about(x, w)
    local book = x.book
    local about = w.about or {}
    local sheet = check(x, book:sheet("About"))
    local e = x.e
    local totals = type(about.totals) == "function" and about.totals() or {}
    local sheets = {}
    for _, s in ipairs(x.sheets) do
        sheets[#sheets + 1] = s.name
    end
    local lines = {
        { "Endpoint", e and (e.name .. (e.title and (" — " .. e.title) or "")) or tostring(w.endpoint or "") },
        { "From", about.from or "" },
        { "To", about.to or "" },
        { "Per", about.per or "(the whole range)" },
        { "Operation clock", w.utc_offset and offset_text(w.utc_offset) or "(not given)" },
        { "Rows", x.rows },
        { "Data sheets", concat(sheets, ", ") },
        { "Calls", totals.calls or "" },
        { "Windows", totals.windows or "" },
        { "Generated", os_date("!%Y-%m-%d %H:%M:%S UTC") },
        { "lua-wolkvox", version },
        { "libxlsxwriter", xlsx.version },
    }
    if x.unfit > 0 then
        lines[#lines + 1] = { "Values kept as text", format("%d (they did not fit their column's type: written as "
            .. "sent)", x.unfit) }
    end
    if x.cut > 0 then
        lines[#lines + 1] = { "Cells cut", format("%d (longer than Excel's %d characters a cell)", x.cut,
            M.MAX_CHARS) }
    end
    if x.per and not x.chart then
        lines[#lines + 1] = { "Charts", x.no_chart or "none: no numeric field to chart" }
    end
    lines[#lines + 1] = { "Types", "durations are [h]:mm:ss times, percentages are fractions shown as %, dates are "
        .. "the wall time of the operation's clock" }
    for r, l in ipairs(lines) do
        local v = l[2]
        check(x, book:row(sheet, r - 1, { l[1], type(v) == "number" and v or cell_text(tostring(v)) },
            { x.bold, 0 }, 2))
    end
    check(x, book:column(sheet, 0, 0, 20))
    check(x, book:column(sheet, 1, 1, 70))
end

-- Copy the finished workbook at `path` to the writer's file.
local function copy(x, w, path)
    local src, err = io_open(path, "rb")
    if not src then
        x.failed = "xlsx: cannot read the finished workbook: " .. tostring(err)
        return
    end
    while true do
        local chunk = src:read(65536)
        if not chunk then
            break
        end
        local ok, why = w.file:write(chunk)
        if not ok then
            x.failed = "cannot write: " .. tostring(why)
            break
        end
    end
    src:close()
end

-- ---- the format ------------------------------------------------------------

--- Before the first row (or at the end when there was none).
function M.start(w, row)
    setup(w, row)
    chart_setup(w.xl, w)
    return ""
end

--- One row: its cells typed and written to the current data sheet.
function M.row(w, row)
    local x = w.xl
    if x.failed then
        w.failed = w.failed or x.failed
        return ""
    end
    if x.r >= M.MAX_ROWS then
        local ok, err = pcall(function()
            filter(x, x.sheets[#x.sheets], x.r - 1)
            data_sheet(x)
        end)
        if not ok then
            w.failed = x.failed or tostring(err)
            return ""
        end
    end
    local cols, types, conv, fmts, width = w.cols, x.types, x.conv, x.fmts, x.width
    -- (The same two tables each row: the C module reads them at once.)
    local cells, cf, raw = x.cells, x.cf, x.chart and {} or nil
    local sample = x.rows < SAMPLE
    for i = 1, x.n do
        local v = row[cols[i]]
        if v == nil and x.add_period and i == 1 then
            v = w.window and w.window.label
        end
        if raw then
            raw[i] = v
        end
        local out, f = false, 0
        if v ~= nil and v ~= "" and v ~= NULL then
            local tv = type(v)
            local ty = types[i]
            if tv == "table" then
                local json = require "wolkvox.json"
                v = json.encode_row(v) or tostring(v)
                tv = "string"
            elseif tv ~= "string" and tv ~= "number" then
                v = tostring(v)
                tv = "string"
            end
            if ty == "text" then
                out = tv == "number" and (v == floor(v) and v < 2 ^ 53 and v > -2 ^ 53 and format("%d", v)
                    or format("%.17g", v)) or v
            elseif ty == "timestamp" then
                out = tv == "string" and excel_date(v) or nil
                f = fmts[i]
            else
                out = conv[i](v)
                f = fmts[i]
            end
            if out == nil then
                -- Does not fit its type: the text as sent.
                x.unfit = x.unfit + 1
                out, f = tv == "number" and format("%.17g", v) or v, 0
            end
            if type(out) == "string" then
                local cut
                out, cut = cell_text(out)
                if cut then
                    x.cut = x.cut + 1
                end
                if sample and (ty == "text" or f == 0) then
                    local n = #out < 200 and chars(out) + 1 or 61
                    if n > width[i] then
                        width[i] = n > 60 and 60 or n
                    end
                end
            end
        end
        cells[i], cf[i] = out, f
    end
    local ok, why = x.book:row(x.sheet, x.r, cells, cf, x.n)
    if not ok then
        return nil, why
    end
    x.rows = x.rows + 1
    if x.chart then
        chart_row(x, cells, raw)
    end
    x.r = x.r + 1
    return ""
end

--- The end: autofilter, widths, charts, About; the workbook closed and
-- copied to the writer's file.
function M.finish(w)
    if not w.xl then
        M.start(w, {})
    end
    local x = w.xl
    if x.failed then
        w.failed = w.failed or x.failed
        if x.book then
            x.book:discard()
        end
        return ""
    end
    local ok, err = pcall(function()
        filter(x, x.sheets[#x.sheets], x.r > 1 and x.r - 1 or 1)
        for _, s in ipairs(x.sheets) do
            for i = 1, x.n do
                check(x, x.book:column(s.id, i - 1, i - 1, x.width[i]))
            end
        end
        if x.chart and #x.chart.periods > 0 then
            write_charts(x, w)
        end
        write_about(x, w)
    end)
    if ok then
        local path, why = x.book:close()
        if path then
            copy(x, w, path)
        else
            x.failed = why
        end
    else
        x.failed = x.failed or tostring(err)
    end
    x.book:discard()
    if x.failed then
        w.failed = w.failed or x.failed
    end
    return ""
end

--- An export cut short (an error, Ctrl-C): the workbook's private
-- directory removed now, not left to the collector (os.exit does not run it).
function M.discard(w)
    if w.xl and w.xl.book then
        w.xl.book:discard()
    end
end

return M
