--- The HTML report (`--format html`): one self-contained page a manager
-- opens from an e-mail or a shared folder, with no network.
--
-- It holds a header (the endpoint and what it is, the range, the
-- operation's clock, the rows, calls and windows of the run, when and by
-- which version it was made), charts, and a table of the first
-- `TABLE_ROWS` rows.  For a report by period (`--per`) the charts are one
-- per numeric field over the periods; otherwise they count the rows per
-- day and per hour of day of the endpoint's time field, and spread its
-- first duration field over `BUCKETS`.  The charts draw the fields as the
-- API gives them: counts of rows are said to be counts of rows, sums say
-- they are sums, and an average or a percentage is never added up (the
-- lowest and highest row of each period are drawn instead).
--
-- Charts are drawn by Chart.js, read from Debian's libjs-chart.js (or the
-- file `chartjs_path` or `$WOLKVOX_CHARTJS` names) and inlined when the
-- page is made.  The page's Content-Security-Policy allows no source but
-- its own two scripts (by their SHA-256) and its style sheet; every value
-- of the API is escaped (HTML in the table, `\u003c` and friends in the
-- charts' JSON).  Memory stays bounded: the aggregates and the first
-- `TABLE_ROWS` rows are kept, and the page is written when the writer
-- closes.
--
--     c:export("cdr_1", { from = "2026-11-01", to = "2026-11-30" }, { format = "html", output = "nov.html" })
--
-- @module wolkvox.out.html

local dates = require "wolkvox.dates"
local defaults = require "wolkvox.defaults"
local formats = require "wolkvox.out.formats"
local json = require "wolkvox.json"
local registry = require "wolkvox.api.registry"
local schema = require "wolkvox.api.schema"
local version = require "wolkvox.version"

local type, tostring, tonumber, pairs, ipairs, pcall, setmetatable, getmetatable =
    type, tostring, tonumber, pairs, ipairs, pcall, setmetatable, getmetatable
local format, byte, char, concat, sort, floor, huge, abs =
    string.format, string.byte, string.char, table.concat, table.sort, math.floor, math.huge, math.abs

local NULL = require("wolkvox.json").null

local M = {}

--- How many rows the table shows (the rest are counted, not kept).
M.TABLE_ROWS = 1000

--- How many bytes of a value a cell shows (longer values are cut, with "…").
M.CELL_BYTES = 500

--- Where Chart.js is read from when neither `chartjs_path` nor
-- `$WOLKVOX_CHARTJS` says: Debian's libjs-chart.js (the UMD build).
M.CHARTJS_DEFAULT = "/usr/share/javascript/chart.js/chart.min.js"

--- An explicit path to Chart.js (a UMD build: chart.min.js, chart.umd.js);
-- nil: `$WOLKVOX_CHARTJS`, else `CHARTJS_DEFAULT`.
M.chartjs_path = nil

local BUCKETS = {
    { 0, 10, "under 10 s" }, { 10, 30, "10 to 30 s" }, { 30, 60, "30 s to 1 min" },
    { 60, 120, "1 to 2 min" }, { 120, 300, "2 to 5 min" }, { 300, 600, "5 to 10 min" },
    { 600, 1200, "10 to 20 min" }, { 1200, 1800, "20 to 30 min" }, { 1800, 3600, "30 min to 1 h" },
    { 3600, huge, "1 h or more" },
}

--- The buckets of the durations chart: `{ from, to, label }`, seconds,
-- `from` included and `to` not.
M.BUCKETS = BUCKETS

-- ---- escaping ----------------------------------------------------------------

local HTML = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;",
    ["\0"] = "\239\191\189" }

--- `s` as HTML text or an attribute value (double or single quoted): & < > " '
-- as references, a NUL as U+FFFD.
function M.escape(s)
    return (tostring(s):gsub("[%z&<>\"']", HTML))
end

local JS = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
    ["\t"] = "\\t", ["<"] = "\\u003c", [">"] = "\\u003e", ["&"] = "\\u0026" }

-- A JSON string that is also safe inside a <script> element: < > & and the
-- line separators U+2028 / U+2029 as \uXXXX, every control character escaped.
local function js_string(s)
    s = s:gsub('[%c"\\<>&]', function(c)
        return JS[c] or format("\\u%04x", byte(c))
    end)
    s = s:gsub("\226\128\168", "\\u2028"):gsub("\226\128\169", "\\u2029")
    return '"' .. s .. '"'
end

local LIST = {}

--- Mark `t` as a JSON array of `n` items (nil items are JSON null).
function M.list(t, n)
    t = t or {}
    t.n = n or #t
    return setmetatable(t, LIST)
end

local function encode(v, out)
    local tv = type(v)
    if tv == "string" then
        out[#out + 1] = js_string(v)
    elseif tv == "number" then
        if v ~= v or v == huge or v == -huge then
            out[#out + 1] = "null"
        elseif v == floor(v) and abs(v) < 2 ^ 53 then
            out[#out + 1] = format("%d", v)
        else
            out[#out + 1] = format("%.10g", v)
        end
    elseif tv == "boolean" then
        out[#out + 1] = tostring(v)
    elseif tv == "table" and getmetatable(v) == LIST then
        out[#out + 1] = "["
        for i = 1, v.n do
            if i > 1 then
                out[#out + 1] = ","
            end
            if v[i] == nil then
                out[#out + 1] = "null"
            else
                encode(v[i], out)
            end
        end
        out[#out + 1] = "]"
    elseif tv == "table" then
        local keys = {}
        for k in pairs(v) do
            keys[#keys + 1] = tostring(k)
        end
        sort(keys)
        out[#out + 1] = "{"
        for i, k in ipairs(keys) do
            out[#out + 1] = (i > 1 and "," or "") .. js_string(k) .. ":"
            encode(v[k], out)
        end
        out[#out + 1] = "}"
    else
        out[#out + 1] = "null"
    end
end

--- `v` (strings, numbers, booleans, tables; `list` marks arrays) as JSON
-- that can stand in a `<script type="application/json">`: no <, >, & nor
-- U+2028/U+2029 in it (each as \uXXXX), so no value can end the element.
function M.json(v)
    local out = {}
    encode(v, out)
    return concat(out)
end

-- ---- Chart.js, inlined ---------------------------------------------------------

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

--- Base64 (RFC 4648, with padding) of the bytes `s`.
function M.base64(s)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = byte(s, i, i + 2)
        local n = a * 65536 + (b or 0) * 256 + (c or 0)
        local c1, c2, c3, c4 = floor(n / 262144), floor(n / 4096) % 64, floor(n / 64) % 64, n % 64
        out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1)
            .. (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
    end
    return concat(out)
end

local sha256_hex
local function sha256(s)
    if not sha256_hex then
        local ok, core = pcall(require, "wolkvox.core")
        sha256_hex = ok and type(core) == "table" and core.sha256 or require("wolkvox.sha256")
    end
    return (sha256_hex(s):gsub("%x%x", function(h) return char(tonumber(h, 16)) end))
end

--- The CSP source of script or style text `s`: 'sha256-BASE64'.
function M.csp_hash(s)
    return "'sha256-" .. M.base64(sha256(s)) .. "'"
end

-- Chart.js by path, read once per process: { path, text, hash }.
local loaded = {}

local function chartjs()
    local path = M.chartjs_path or os.getenv("WOLKVOX_CHARTJS") or M.CHARTJS_DEFAULT
    if path == "" then
        path = M.CHARTJS_DEFAULT
    end
    if loaded[path] then
        return loaded[path]
    end
    local f = io.open(path, "rb")
    local text = f and f:read("*a")
    if f then
        f:close()
    end
    if not text then
        return nil, "the html format draws its charts with Chart.js, and " .. path .. " cannot be read: install "
            .. "the Debian package libjs-chart.js (apt-get install libjs-chart.js), or point WOLKVOX_CHARTJS at "
            .. "a Chart.js UMD build (chart.min.js / chart.umd.js)"
    end
    if #text < 10000 or not text:find("Chart", 1, true) then
        return nil, "the html format needs Chart.js, and " .. path .. " does not look like it (a Chart.js UMD "
            .. "build is a file of some 200 KB that defines Chart; Debian's libjs-chart.js installs one)"
    end
    if text:lower():find("</script", 1, true) or text:find("<!--", 1, true) then
        return nil, path .. " holds '</script' or '<!--': it cannot be inlined in a <script> element"
    end
    loaded[path] = { path = path, text = text, hash = M.csp_hash(text) }
    return loaded[path]
end

--- Whether the page can be made here: true, or nil and what to install.
-- (The export job asks before it spends any call.)
function M.ready()
    local js, why = chartjs()
    if not js then
        return nil, why
    end
    return true
end

-- ---- what the rows add up to ---------------------------------------------------

local NUMERIC = { integer = true, decimal = true, duration = true, percent = true }

-- Names of fields that hold an average: never added up.
local AVERAGES = { "^aht", "^asa$", "^att$", "^ata$", "^tmo$", "average", "avg", "promedio", "mean" }

--- Whether values of field `name` of type `ty` can be added up over rows
-- (counts, totals of time, money); not percentages nor averages.
function M.additive(name, ty)
    if ty == "percent" or name == "time_state_now" then
        return false
    end
    local l = tostring(name):lower()
    for _, p in ipairs(AVERAGES) do
        if l:find(p) then
            return false
        end
    end
    return true
end


-- A value as a number of field type `ty`: the number, or nil and whether
-- there was a value that is not one.
local function number_of(ty, v, offset)
    if v == nil or (NULL ~= nil and v == NULL) then
        return nil, false
    end
    local ok, x, bad = pcall(schema.value, ty, v, offset)
    if not ok or bad then
        return nil, true
    elseif type(x) ~= "number" then
        return nil, x ~= nil
    end
    if x ~= x or x == huge or x == -huge then
        return nil, true
    end
    return x, false
end

-- The state of writer `w`: settled on its first row (or at the end, when
-- there was none).
local function state(w, row)
    if w.html then
        return w.html
    end
    if not w.cols then
        formats.settle_columns(w, row or {})
    end
    local about = w.about or {}
    local e = registry.lookup(w.endpoint)
    local st = { e = e, per = about.per, offset = w.utc_offset or defaults.utc_offset, shown = {}, rest = 0,
        types = {}, cols = {} }
    -- Under --per the CLI's rows carry their period; a library's take the window's.
    local has_period = false
    for _, c in ipairs(w.cols) do
        has_period = has_period or c == "period"
    end
    if st.per and not has_period then
        st.cols[1] = "period"
        st.own_period = true
    end
    for _, c in ipairs(w.cols) do
        st.cols[#st.cols + 1] = c
    end
    for _, c in ipairs(st.cols) do
        st.types[c] = (c == "period" or c == "key") and "text" or schema.field_type(c)
    end
    if st.per then
        st.metrics, st.periods, st.by_period = {}, {}, {}
        for _, c in ipairs(st.cols) do
            if NUMERIC[st.types[c]] then
                st.metrics[#st.metrics + 1] = c
            end
        end
        st.unfit = {}
    else
        local tf = e and schema.time_field(e)
        for _, c in ipairs(st.cols) do
            if not tf and (c == "date" or c == "date_ini" or c == "fecha") then
                tf = c
            end
            if not st.duration and st.types[c] == "duration" then
                st.duration = c
            end
        end
        st.time_field = tf
        st.days, st.hours, st.no_time = {}, {}, 0
        for h = 0, 23 do
            st.hours[h] = 0
        end
        st.buckets, st.no_duration = {}, 0
        for i = 1, #M.BUCKETS do
            st.buckets[i] = 0
        end
    end
    w.html = st
    return st
end

-- Cut `s` to `n` bytes, not inside a UTF-8 sequence.
local function cut(s, n)
    if #s <= n then
        return s
    end
    local i = n
    while i > 0 and byte(s, i + 1) and byte(s, i + 1) >= 128 and byte(s, i + 1) < 192 do
        i = i - 1
    end
    return s:sub(1, i) .. "\226\128\166"
end

-- The text of a cell: the value as the API gave it.
local function cell_text(v)
    local tv = type(v)
    if v == nil or (NULL ~= nil and v == NULL) then
        return ""
    elseif tv == "string" then
        return cut(v, M.CELL_BYTES)
    elseif tv == "number" then
        if v == floor(v) and abs(v) < 2 ^ 53 then
            return format("%d", v)
        end
        return format("%.15g", v)
    elseif tv == "table" then
        local ok, text = pcall(json.encode, v)
        return cut(ok and text or "(a value that is not JSON)", M.CELL_BYTES)
    end
    return cut(tostring(v), M.CELL_BYTES)
end

local function period_of(w, row)
    local win = w.window
    if type(win) == "table" and win.label ~= nil then
        return tostring(win.label)
    end
    if row.period ~= nil then
        return tostring(row.period)
    end
    return "(the whole range)"
end

local function take_period(st, w, row)
    local label = period_of(w, row)
    local p = st.by_period[label]
    if not p then
        p = { rows = 0, sum = {}, min = {}, max = {} }
        st.by_period[label] = p
        st.periods[#st.periods + 1] = label
    end
    p.rows = p.rows + 1
    for _, c in ipairs(st.metrics) do
        local x, unfit = number_of(st.types[c], row[c], st.offset)
        if x then
            p.sum[c] = (p.sum[c] or 0) + x
            p.min[c] = (p.min[c] == nil or x < p.min[c]) and x or p.min[c]
            p.max[c] = (p.max[c] == nil or x > p.max[c]) and x or p.max[c]
        elseif unfit then
            st.unfit[c] = (st.unfit[c] or 0) + 1
        end
    end
    return label
end

local function take_detail(st, row)
    local tf = st.time_field
    local v = tf and row[tf]
    -- (a date as sent, "2026-01-05 10:00:00" or "20260105100000": never "yesterday")
    local t = type(v) == "string" and v:find("^%d%d%d%d") and dates.parse(v)
    if t then
        local y, mo, d, h = dates.fields(t)
        local day = format("%04d-%02d-%02d", y, mo, d)
        st.days[day] = (st.days[day] or 0) + 1
        st.hours[h] = st.hours[h] + 1
    else
        st.no_time = st.no_time + 1
    end
    if st.duration then
        local x = number_of("duration", row[st.duration], st.offset)
        if x and x >= 0 then
            for i, b in ipairs(M.BUCKETS) do
                if x >= b[1] and x < b[2] then
                    st.buckets[i] = st.buckets[i] + 1
                    break
                end
            end
        else
            st.no_duration = st.no_duration + 1
        end
    end
end

local function take(w, row)
    local st = state(w, row)
    local label
    if st.per then
        label = take_period(st, w, row)
    else
        take_detail(st, row)
    end
    if #st.shown >= M.TABLE_ROWS then
        st.rest = st.rest + 1
        return ""
    end
    local cells = {}
    for i, c in ipairs(st.cols) do
        local v = row[c]
        if c == "period" and st.own_period then
            v = label
        end
        local text = cell_text(v)
        cells[i] = (NUMERIC[st.types[c]] and "<td class=\"n\">" or #text > 40 and "<td class=\"long\">" or "<td>")
            .. M.escape(text) .. "</td>"
    end
    st.shown[#st.shown + 1] = "<tr>" .. concat(cells) .. "</tr>\n"
    return ""
end

-- ---- the page ------------------------------------------------------------------

-- 1234567 as "1,234,567".
local function thousands(n)
    local sign, digits = format("%d", n):match("^(%-?)(%d+)$")
    local lead = #digits % 3
    lead = lead == 0 and 3 or lead
    return sign .. digits:sub(1, lead) .. digits:sub(lead + 1):gsub("%d%d%d", ",%0")
end

-- 1 row, 2 rows, 1,000 rows.
local function rows_text(n)
    return thousands(n) .. (n == 1 and " row" or " rows")
end

local function offset_text(offset)
    local sign = offset < 0 and "\226\136\146" or "+"
    offset = abs(offset)
    return format("UTC%s%02d:%02d", sign, floor(offset / 3600), floor(offset % 3600 / 60))
end

-- Seconds as H:MM:SS.
local function hms(x)
    local neg = x < 0 and "-" or ""
    x = floor(abs(x) + 0.5)
    return format("%s%d:%02d:%02d", neg, floor(x / 3600), floor(x % 3600 / 60), x % 60)
end

local function number_text(x, ty)
    if x == nil then
        return ""
    elseif ty == "duration" then
        return hms(x)
    elseif x == floor(x) and abs(x) < 1e15 then
        return thousands(x)
    end
    return format("%.2f", x)
end

-- The unit a chart of durations is drawn in, by its largest value.
local function duration_unit(max)
    if max >= 7200 then
        return 3600, "hours"
    elseif max >= 120 then
        return 60, "minutes"
    end
    return 1, "seconds"
end

-- The labels of the periods of the range, in order (the rows' own too).
local function period_labels(st, about)
    local out, seen = {}, {}
    local windows = require "wolkvox.call.windows"
    local from, to = about.from and dates.parse(about.from), about.to and dates.parse(about.to, true)
    if from and to then
        local ok, list = pcall(windows.periods, from, to, st.per)
        if ok and #list <= 4000 then
            for _, p in ipairs(list) do
                out[#out + 1], seen[p.label] = p.label, true
            end
        end
    end
    for _, label in ipairs(st.periods) do
        if not seen[label] then
            out[#out + 1], seen[label] = label, true
        end
    end
    return out
end

-- The charts of a report by period.
local function period_charts(st, about)
    local labels = period_labels(st, about)
    local n = #labels
    local kind = n > 14 and "line" or "bar"
    local most = 0
    for _, p in pairs(st.by_period) do
        most = p.rows > most and p.rows or most
    end
    local counts = {}
    for i, l in ipairs(labels) do
        counts[i] = st.by_period[l] and st.by_period[l].rows or 0
    end
    local charts = { {
        title = "Rows per period", type = kind, labels = labels, unit = "rows", whole = true,
        note = "A count of the rows the API gave for each period (rows, not calls).",
        series = { { label = "rows", data = counts } }, ty = "integer",
    } }
    local empty = {}
    for _, c in ipairs(st.metrics) do
        local ty = st.types[c]
        local add = M.additive(c, ty)
        local sum, low, high, any = {}, {}, {}, false
        for i, l in ipairs(labels) do
            local p = st.by_period[l]
            if p and p.sum[c] ~= nil then
                sum[i], low[i], high[i], any = p.sum[c], p.min[c], p.max[c], true
            end
        end
        if not any then
            empty[#empty + 1] = c
        else
            local series, note
            if most <= 1 then
                series = { { label = c, data = sum } }
                note = "The value the API gave for each period."
            elseif add then
                series = { { label = c .. ": sum of the period's rows", data = sum } }
                note = "The sum of " .. c .. " over the rows of each period (up to " .. thousands(most)
                    .. " rows a period)."
            else
                series = { { label = c .. ": lowest row", data = low }, { label = c .. ": highest row", data = high } }
                note = (ty == "percent" and "A percentage" or "An average")
                    .. " cannot be added up: the lowest and the highest value of " .. c
                    .. " among the rows of each period."
            end
            local unfit = st.unfit[c]
            if unfit then
                note = note .. " " .. thousands(unfit) .. (unfit == 1 and " value was" or " values were")
                    .. " not a number and left out."
            end
            charts[#charts + 1] = { title = c, type = kind, labels = labels, series = series, note = note, ty = ty,
                unit = ty == "percent" and "%" or nil, whole = ty == "integer" }
        end
    end
    return charts, empty
end

local function list_of(t, n)
    local out = {}
    for i = 1, n do
        out[i] = t[i]
    end
    return out
end

-- The days of the range (the rows' own too), in order.
local function day_labels(st, about)
    local out, seen = {}, {}
    local from, to = about.from and dates.parse(about.from), about.to and dates.parse(about.to, true)
    if from and to and to >= from and (to - from) / 86400 <= 1000 then
        local t = from - from % 86400
        while t <= to do
            local y, mo, d = dates.fields(t)
            local day = format("%04d-%02d-%02d", y, mo, d)
            out[#out + 1], seen[day] = day, true
            t = t + 86400
        end
    end
    local more = {}
    for day in pairs(st.days) do
        if not seen[day] then
            more[#more + 1] = day
        end
    end
    if #more > 0 then
        for _, day in ipairs(more) do
            out[#out + 1] = day
        end
        sort(out)
    end
    return out
end

-- The charts of a detail report (or any report not by period).
local function detail_charts(st, about)
    local charts = {}
    local tf = st.time_field
    if tf and st.no_time < (st.rows or 0) then
        local days = day_labels(st, about)
        local per_day = {}
        for i, d in ipairs(days) do
            per_day[i] = st.days[d] or 0
        end
        local lost = st.no_time > 0 and (" " .. rows_text(st.no_time) .. " without a readable " .. tf
            .. (st.no_time == 1 and " is" or " are") .. " left out.") or ""
        charts[#charts + 1] = { title = "Rows per day", type = #days > 62 and "line" or "bar", labels = days,
            series = { { label = "rows", data = per_day } }, unit = "rows", ty = "integer", whole = true,
            note = "A count of rows by the day of their " .. tf .. " (rows, not calls)." .. lost }
        local hours, per_hour = {}, {}
        for h = 0, 23 do
            hours[h + 1], per_hour[h + 1] = format("%02d", h), st.hours[h]
        end
        charts[#charts + 1] = { title = "Rows per hour of day", type = "bar", labels = hours,
            series = { { label = "rows", data = per_hour } }, unit = "rows", ty = "integer", whole = true,
            note = "A count of rows by the hour of their " .. tf .. ", all days together, on the operation's clock."
                .. lost }
    end
    if st.duration and st.no_duration < (st.rows or 0) then
        local labels, counts = {}, {}
        for i, b in ipairs(M.BUCKETS) do
            labels[i], counts[i] = b[3], st.buckets[i]
        end
        charts[#charts + 1] = { title = "Rows by " .. st.duration, type = "bar", labels = labels,
            series = { { label = "rows", data = counts } }, unit = "rows", ty = "integer", whole = true,
            note = "How many rows have a " .. st.duration .. " in each range (from included, to not)."
                .. (st.no_duration > 0 and (" " .. rows_text(st.no_duration) .. " without a duration there "
                .. (st.no_duration == 1 and "is" or "are") .. " left out.") or "") }
    end
    return charts
end

-- The data of the charts (for the script) and their figures (the page).
local function charts_html(charts)
    local specs, figures = {}, {}
    for i, ch in ipairs(charts) do
        local id = "chart-" .. i
        local n = #ch.labels
        local scale, unit = 1, ch.unit
        if ch.ty == "duration" then
            local max = 0
            for _, s in ipairs(ch.series) do
                for j = 1, n do
                    local x = s.data[j]
                    max = x and abs(x) > max and abs(x) or max
                end
            end
            scale, unit = duration_unit(max)
        end
        local sets = {}
        for j, s in ipairs(ch.series) do
            local data = {}
            for k = 1, n do
                local x = s.data[k]
                data[k] = x and (scale == 1 and x or floor(x / scale * 100 + 0.5) / 100) or nil
            end
            sets[j] = { label = s.label, data = M.list(data, n) }
        end
        -- ("week of 2026-01-05" is "2026-01-05" on the axis, under "weeks from Monday".)
        local axis, ticks = "", list_of(ch.labels, n)
        if n > 0 and tostring(ticks[1]):find("^week of ") then
            axis = "weeks (from Monday)"
            for k = 1, n do
                ticks[k] = tostring(ticks[k]):gsub("^week of ", "")
            end
        end
        specs[i] = { id = id, type = ch.type, labels = M.list(ticks, n), datasets = M.list(sets),
            unit = unit or "", axis = axis, whole = ch.whole or false }
        -- The numbers, for a reader without JavaScript (an e-mail preview).
        local head = { "<tr><th>", "</th>" }
        for _, s in ipairs(ch.series) do
            head[#head + 1] = "<th>" .. M.escape(s.label) .. "</th>"
        end
        local rows = { concat(head), "</tr>\n" }
        for k = 1, n do
            local r = { "<tr><td>", M.escape(ch.labels[k]), "</td>" }
            for _, s in ipairs(ch.series) do
                r[#r + 1] = "<td class=\"n\">" .. number_text(s.data[k], ch.ty) .. "</td>"
            end
            rows[#rows + 1] = concat(r) .. "</tr>\n"
        end
        figures[i] = concat {
            "<figure id=\"", id, "\">\n<figcaption><strong>", M.escape(ch.title), "</strong>",
            unit and unit ~= "" and (" <span class=\"unit\">(" .. M.escape(unit) .. ")</span>") or "",
            "<br><span class=\"note\">", M.escape(ch.note or ""), "</span></figcaption>\n",
            "<div class=\"plot\" hidden><canvas role=\"img\" aria-label=\"", M.escape(ch.title),
            "\"></canvas></div>\n<details open><summary>The numbers</summary>\n<table class=\"numbers\">\n",
            concat(rows), "</table>\n</details>\n</figure>\n",
        }
    end
    return M.list(specs), concat(figures)
end

local STYLE = [[
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1d2430;
  background: #f4f6f9; margin: 0; }
header { background: #17324d; color: #fff; padding: 18px 28px 14px; }
header h1 { font-size: 22px; margin: 0 0 4px; font-weight: 600; }
header h1 small { font-weight: 400; font-size: 15px; color: #b9cce0; margin-left: 8px; }
header p { margin: 0 0 10px; color: #d5e2ef; }
dl.facts { display: flex; flex-wrap: wrap; gap: 6px 26px; margin: 0; }
dl.facts div { min-width: 90px; }
dl.facts dt { font-size: 11px; text-transform: uppercase; letter-spacing: .05em; color: #9db6cf; }
dl.facts dd { margin: 0; font-size: 16px; font-variant-numeric: tabular-nums; }
main { padding: 8px 28px 28px; }
h2 { font-size: 17px; margin: 20px 0 8px; }
p.lead { margin: 0 0 10px; color: #4a5566; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 14px; }
figure { background: #fff; border: 1px solid #dde3ea; border-radius: 6px; margin: 0; padding: 10px 12px; }
figcaption { margin-bottom: 6px; }
.unit { color: #6b7686; }
.note { color: #5c6778; font-size: 12px; }
.plot { position: relative; height: 230px; }
details summary { cursor: pointer; color: #3a6ea5; font-size: 12px; }
table { border-collapse: collapse; font-size: 12.5px; background: #fff; }
th, td { border: 1px solid #e0e5eb; padding: 3px 7px; text-align: left; vertical-align: top; white-space: nowrap; }
td.long { white-space: pre-wrap; overflow-wrap: anywhere; min-width: 16em; max-width: 32em; }
th { background: #eef2f6; position: sticky; top: 0; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.numbers { margin-top: 6px; }
.scroll { overflow: auto; max-height: 80vh; border: 1px solid #dde3ea; }
footer { color: #6b7686; font-size: 12px; padding: 0 28px 24px; }
]]

-- The page's own script: the charts' data parsed from its JSON element, one
-- Chart.js chart per figure; the numbers' tables folded once it is drawn.
local SCRIPT = [[
(function () {
  "use strict";
  var box = document.getElementById("wolkvox-data");
  if (!box || typeof Chart === "undefined") { return; }
  var data = JSON.parse(box.textContent);
  var colours = ["#2f6fb0", "#d9822b", "#3b9c6e", "#9a5bb5"];
  var drawn = 0;
  data.charts.forEach(function (c) {
    var figure = document.getElementById(c.id);
    if (!figure) { return; }
    var plot = figure.querySelector(".plot");
    plot.hidden = false;
    new Chart(plot.querySelector("canvas"), {
      type: c.type,
      data: {
        labels: c.labels,
        datasets: c.datasets.map(function (d, i) {
          var colour = colours[i % colours.length];
          return { label: d.label, data: d.data, backgroundColor: colour, borderColor: colour,
                   borderWidth: c.type === "line" ? 2 : 0, pointRadius: c.type === "line" ? 2 : 0 };
        })
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        plugins: { legend: { display: c.datasets.length > 1 } },
        scales: {
          x: { ticks: { autoSkip: true, maxRotation: 50 }, title: { display: c.axis !== "", text: c.axis } },
          y: { beginAtZero: true, ticks: c.whole ? { precision: 0 } : {},
               title: { display: c.unit !== "", text: c.unit } }
        }
      }
    });
    var numbers = figure.querySelector("details");
    if (numbers) { numbers.open = false; }
    drawn += 1;
  });
  document.documentElement.setAttribute("data-charts-drawn", String(drawn));
})();
]]

local function fact(name, value)
    return "<div><dt>" .. M.escape(name) .. "</dt><dd>" .. M.escape(value) .. "</dd></div>"
end

local function finish(w)
    local st = state(w)
    local js = assert(chartjs())
    local about = w.about or {}
    st.rows = w.rows
    local e = st.e
    local name = e and e.name or (w.endpoint ~= nil and tostring(w.endpoint)) or "wolkvox report"
    local title = e and e.title or ""
    local totals = type(about.totals) == "function" and about.totals() or {}
    local range = about.from and about.to and (about.from .. " to " .. about.to) or "(not given)"

    local charts, empty
    if st.per then
        charts, empty = period_charts(st, about)
    else
        charts, empty = detail_charts(st, about), {}
    end
    if w.rows == 0 then
        charts = {}
    end
    local specs, figures = charts_html(charts)
    local data = M.json { charts = specs }

    local style_hash = M.csp_hash(STYLE)
    local csp = "default-src 'none'; script-src " .. js.hash .. " " .. M.csp_hash(SCRIPT) .. "; style-src "
        .. style_hash .. "; img-src data:; base-uri 'none'; form-action 'none'"

    local kind = e and e.kind or "report"
    local what = (st.per and ("A report by " .. st.per .. " (" .. kind .. ")") or ("A " .. kind .. " report"))
        .. " from the wolkvox API, exported by lua-wolkvox."
    local now = os.time()
    local generated = os.date("!%Y-%m-%d %H:%M:%S", now) .. " UTC"
    local facts = {
        fact("Range", range),
        fact("Clock", offset_text(st.offset)),
        fact("Rows", thousands(w.rows)),
        fact("Calls", totals.calls and thousands(totals.calls) or "-"),
        fact("Windows", totals.windows and thousands(totals.windows) or "-"),
        st.per and fact("Per", st.per) or "",
        fact("Generated", generated),
        fact("Version", "lua-wolkvox " .. version),
    }

    local out = {
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"", csp, "\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<meta name=\"generator\" content=\"lua-wolkvox ", M.escape(version), "\">\n",
        "<title>", M.escape(name .. (title ~= "" and (": " .. title) or "") .. ", " .. range), "</title>\n",
        "<style>", STYLE, "</style>\n</head>\n<body>\n<header>\n<h1>", M.escape(title ~= "" and title or name),
        " <small>", M.escape(name), "</small></h1>\n<p>", M.escape(what),
        " Every time is on the operation's clock (", M.escape(offset_text(st.offset)), ").</p>\n<dl class=\"facts\">",
        concat(facts), "</dl>\n</header>\n<main>\n",
    }
    if #charts > 0 then
        out[#out + 1] = "<h2>Charts</h2>\n<p class=\"lead\">"
            .. (st.per and ("Each numeric field of the report over the periods, as the API gives it. The periods"
                .. " are cut to the range: the first and the last may cover only part of a " .. st.per .. ".")
                or "Counts of rows, as the API gave them: not calls, unless a row is a call.")
            .. "</p>\n<section class=\"charts\">\n" .. figures .. "</section>\n"
    end
    if #charts == 0 and w.rows > 0 and not st.per then
        out[#out + 1] = "<p class=\"lead\">No chart: the rows have no readable time field nor duration to be "
            .. "counted by. With a range by period (--per day, week or month) each numeric field is charted over "
            .. "the periods.</p>\n"
    end
    if empty and #empty > 0 then
        local names = {}
        for i, c in ipairs(empty) do
            names[i] = M.escape(c)
        end
        out[#out + 1] = "<p class=\"lead\">No numbers to chart in: " .. concat(names, ", ") .. ".</p>\n"
    end
    out[#out + 1] = "<h2>Rows</h2>\n<p class=\"lead\">"
    if w.rows == 0 then
        out[#out + 1] = "The API gave no rows for this range.</p>\n"
    else
        out[#out + 1] = (st.rest > 0 and ("The first " .. thousands(#st.shown) .. " of " .. thousands(w.rows)
            .. " rows; the other " .. thousands(st.rest) .. " are not on this page (export them as CSV, "
            .. "ndjson or xlsx).") or ("All " .. thousands(w.rows) .. (w.rows == 1 and " row" or " rows") .. "."))
            .. " Values as the API sent them" .. (M.CELL_BYTES and (", each cut at " .. M.CELL_BYTES .. " bytes") or "")
            .. ".</p>\n<div class=\"scroll\">\n<table class=\"rows\">\n<thead><tr>"
        for _, c in ipairs(st.cols) do
            out[#out + 1] = "<th>" .. M.escape(c) .. "</th>"
        end
        out[#out + 1] = "</tr></thead>\n<tbody>\n" .. concat(st.shown) .. "</tbody>\n</table>\n</div>\n"
    end
    out[#out + 1] = "</main>\n<footer>Made by lua-wolkvox " .. M.escape(version) .. " on " .. generated
        .. ". Charts drawn by Chart.js, inlined; this page loads nothing from the network.</footer>\n"
    out[#out + 1] = "<script type=\"application/json\" id=\"wolkvox-data\">" .. data .. "</script>\n"
    out[#out + 1] = "<script>" .. js.text .. "</script>\n"
    out[#out + 1] = "<script>" .. SCRIPT .. "</script>\n</body>\n</html>\n"
    st.shown = nil
    return concat(out)
end

--- Start (the first row settles the columns).
function M.start(w, row)
    local e = registry.lookup(w.endpoint)
    if not w.columns and e and e.name then
        -- (A library's export gives no columns: the registry's order, not the keys' sorted.)
        w.columns = formats.columns(e.name)
    end
    formats.settle_columns(w, row)
    return ""
end

--- Take one row: its numbers into the aggregates, its cells into the table
-- while there are fewer than `TABLE_ROWS`.  Nothing is written yet.
function M.row(w, row)
    return take(w, row)
end

--- The whole page.
function M.finish(w)
    return finish(w)
end

return M
