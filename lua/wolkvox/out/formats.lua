--- Writing rows to files: one writer per format (CSV, NDJSON, one JSON
-- array, an aligned table for a terminal), each row written as it comes (so
-- an export never holds a range in memory; the table alone waits for the
-- last row, to size its columns), every write checked.
--
--     local export = require "wolkvox.out.formats"
--     local w = assert(export.writer("csv", io.stdout, { columns = export.columns("cdr_1") }))
--     for row in c:each("cdr_1", { from = "2026-01-01", to = "2026-06-30" }) do
--         assert(w:write(row))
--     end
--     assert(w:close())
--
-- A new format is one more entry in `FORMATS`: `start(w)` (before the first
-- row), `row(w, row)` and `finish(w)`, each returning the text to write
-- (`row` may instead return nil and a message: a row it cannot write, which
-- `write` returns as its failure).
--
-- `singer` writes Singer messages (spec 0.3), one JSON object a line: a
-- SCHEMA (the endpoint's JSON Schema, `wolkvox.api.schema`), a RECORD per
-- row with its values typed, and a STATE when closed.  It must know the
-- endpoint (`opts.endpoint`); `opts.utc_offset` (the operation's clock) and
-- `opts.bookmark` (what a sync's state says) are given by the job.
-- @module wolkvox.out.formats

local dates = require "wolkvox.dates"
local defaults = require "wolkvox.defaults"
local json = require "wolkvox.json"
local registry = require "wolkvox.api.registry"
local schema = require "wolkvox.api.schema"

-- The C core writes a CSV line much faster, when it is installed here.
local csv_row
do
    local ok, core = pcall(require, "wolkvox.core")
    csv_row = ok and core.csv_row or nil
end

-- JSON's null, as the JSON encoder writes it (from the C core).
local NULL = require("wolkvox.json").null

local type, tostring, pairs, ipairs, sort, concat, setmetatable, io_type =
    type, tostring, pairs, ipairs, table.sort, table.concat, setmetatable, io.type

local M = {}

--- The columns of endpoint `name` ("cdr_1" or "family/api"): the registry's
-- field list, in the API's order (nested fields such as `counts.total` are
-- left out: they are not columns of a row).
function M.columns(name)
    local e = registry.lookup(name)
    local out = {}
    for _, f in ipairs(e and e.fields or {}) do
        if not f:find("[%.%[]") then
            out[#out + 1] = f
        end
    end
    return out
end

-- RFC 4180: a cell with the delimiter (a comma unless another is given),
-- a quote or a line break is quoted, its quotes doubled.
local function csv_cell(v, delimiter)
    if v == nil then
        return ""
    end
    v = tostring(v)
    if v:find('["\r\n]') or v:find(delimiter or ",", 1, true) then
        return '"' .. v:gsub('"', '""') .. '"'
    end
    return v
end

--- The delimiters a CSV may have beside the comma: Spanish and Portuguese
-- Excel expect ";" (their decimal separator is the comma).
M.DELIMITERS = { [","] = true, [";"] = true, ["\t"] = true, ["|"] = true }

--- One CSV cell (RFC 4180), as the Lua writer makes it (the C core's
-- `csv_row` makes the same, faster).
M.csv_cell = csv_cell

-- The columns of a CSV: the ones given, then any other key of the first
-- row, sorted (a row of an unknown shape still keeps every field).
local function settle_columns(w, row)
    local cols, seen = {}, {}
    for i, c in ipairs(w.columns or {}) do
        cols[i], seen[c] = c, true
    end
    local extra = {}
    for k in pairs(row) do
        if type(k) == "string" and not seen[k] then
            extra[#extra + 1] = k
        end
    end
    sort(extra)
    for _, k in ipairs(extra) do
        cols[#cols + 1] = k
    end
    w.cols = cols
end

--- Settle the columns of writer `w` from its `columns` and the keys of its
-- first `row` (the given ones, then any other key, sorted): sets `w.cols`.
M.settle_columns = settle_columns


-- ---- Singer ----------------------------------------------------------------
-- A tap's output (https://hub.meltano.com/singer/spec), for a target or
-- Meltano to read:
--
--   {"bookmark_properties":["date"],"key_properties":["conn_id"],"schema":{...},"stream":"cdr_1",
--    "type":"SCHEMA"}
--   {"record":{"conn_id":"81816","date":"2026-01-01T00:00:00-05:00","time_seg":3578,...},
--    "stream":"cdr_1","type":"RECORD"}
--   {"type":"STATE","value":{"bookmarks":{"cdr_1":{"since":"2026-01-01 00:00:00",
--    "watermark":"2026-01-10 23:59:59"}}}}
--
-- The stream is the schema's table name; values are typed by
-- `wolkvox.api.schema.value` (numbers as numbers, durations as whole
-- seconds, timestamps RFC 3339 with the operation's offset); a value that
-- does not fit its type is not dropped nor forced: it goes, as sent, into
-- the record's "_unfit" object (declared in the schema), its property
-- null, so every record validates against the schema the target was given.



-- One message as a line, or nil and why (a value JSON cannot hold).
local function message(t)
    local text, why = json.encode_row(t)
    if not text then
        return nil, why
    end
    return text .. "\n"
end

-- Settle what writer `w` writes: its schema, stream, types; false and why
-- when it cannot (no endpoint, or one that gives no rows).
local function singer_setup(w)
    if w.singer ~= nil then
        return w.singer, w.singer_why
    end
    local e = registry.lookup(w.endpoint)
    local s, why
    if not e then
        why = w.endpoint == nil
            and "singer: the endpoint is not known (opts.endpoint): a stream needs its name and schema"
            or "singer: unknown endpoint '" .. tostring(w.endpoint) .. "'"
    else
        s, why = schema.of(e)
    end
    if not s then
        w.singer, w.singer_why = false, why
        return false, why
    end
    local types = {}
    for _, c in ipairs(s.columns) do
        if not c.own then
            types[c.name] = c.type
        end
    end
    local tf = schema.time_field(e)
    w.singer = { s = s, stream = w.stream or s.table, types = types, kind = e.kind,
        time_field = tf and types[tf] == "timestamp" and tf or nil,
        offset = w.utc_offset or defaults.utc_offset }
    return w.singer
end

-- The SCHEMA message (once).
local function singer_schema(w)
    local sg, why = singer_setup(w)
    if not sg then
        w.failed = w.failed or why
        return ""
    end
    if w.schema_sent then
        return ""
    end
    w.schema_sent = true
    local js = schema.json_schema(sg.s)
    js.properties._unfit = { type = { "object", "null" }, additionalProperties = true,
        description = "values that did not fit their property's type, as sent (the property is then null)" }
    local key = sg.s.key
    local msg = { type = "SCHEMA", stream = sg.stream, schema = js,
        key_properties = json.array { key ~= nil and key ~= "_row" and key or nil } }
    if sg.time_field and sg.kind == "detail" then
        msg.bookmark_properties = json.array { sg.time_field }
    end
    return assert(message(msg))
end

-- Row `row` as a RECORD message; remembers the span of its time field.
local function singer_record(w, row)
    local sg = w.singer
    local rec, unfit = {}, nil
    for k, v in pairs(row) do
        if type(k) == "string" then
            local ty = sg.types[k]
            if ty == nil or (NULL ~= nil and v == NULL) then
                rec[k] = v        -- a field the registry does not list (period, key): as it is
            else
                local x, bad = schema.value(ty, v, sg.offset)
                if bad then
                    unfit = unfit or {}
                    unfit[k] = v
                    x = nil
                elseif ty == "timestamp" and x ~= nil then
                    x = x:gsub(" ", "T", 1)
                end
                if x == nil then
                    x = NULL
                end
                rec[k] = x
            end
        end
    end
    rec._unfit = unfit
    local tf = sg.time_field
    local t = tf and type(row[tf]) == "string" and dates.parse(row[tf])
    if t then
        w.first_t = (w.first_t == nil or t < w.first_t) and t or w.first_t
        w.last_t = (w.last_t == nil or t > w.last_t) and t or w.last_t
    end
    return message { type = "RECORD", stream = sg.stream, record = rec }
end

-- The bookmark of the stream: the job's (a sync's since and watermark),
-- else the span of the rows' time field written (a watermark no later
-- than the last row: a sync started from it reads nothing short).
local function singer_bookmark(w)
    local b = w.bookmark
    if type(b) == "function" then
        b = b()
    end
    if type(b) == "table" then
        return b
    end
    local sg = w.singer
    b = {}
    if w.last_t then
        b.replication_key = sg.time_field
        b.replication_key_value = (schema.timestamp(w.last_t, sg.offset):gsub(" ", "T", 1))
        b.since, b.watermark = dates.iso(w.first_t), dates.iso(w.last_t)
    end
    return b
end

-- The formats, by name (see the module's description for adding one).
M.FORMATS = {
    -- Comma-separated values, a header line first, CRLF line ends (RFC 4180);
    -- `bom = true` starts with a UTF-8 byte order mark (for Excel).
    csv = {
        start = function(w, row)
            settle_columns(w, row)
            local head, d = {}, w.delimiter
            for i, c in ipairs(w.cols) do
                head[i] = csv_cell(c, d)
            end
            return (w.bom and "\239\187\191" or "") .. concat(head, d or ",") .. "\r\n"
        end,
        row = function(w, row)
            local d = w.delimiter
            if csv_row and not d then
                return csv_row(row, w.cols)
            end
            local cells = {}
            for i, c in ipairs(w.cols) do
                cells[i] = csv_cell(row[c], d)
            end
            return concat(cells, d or ",") .. "\r\n"
        end,
    },
    -- One JSON object per line, keys as the API sends them.  (A row JSON
    -- cannot hold, see `wolkvox.json.encode_row`, is refused: nil and why.)
    ndjson = {
        row = function(_, row)
            local text, why = json.encode_row(row)
            if not text then
                return nil, why
            end
            return text .. "\n"
        end,
    },
    -- One JSON array, written row by row as the rows come.
    json = {
        start = function(w)
            w.bracket = true
            return "["
        end,
        row = function(w, row)
            local text, why = json.encode_row(row)
            if not text then
                return nil, why
            end
            return (w.rows > 0 and ",\n" or "\n") .. text
        end,
        finish = function(w)
            if not w.bracket then
                return "[]\n"
            end
            return (w.rows > 0 and "\n" or "") .. "]\n"
        end,
    },
    -- Aligned columns for a terminal (columns as for CSV).  A table must
    -- know every row to size its columns: it is written at the end.
    table = {
        start = function(w, row)
            settle_columns(w, row)
            w.held = {}
            return ""
        end,
        row = function(w, row)
            local cells = {}
            for i, c in ipairs(w.cols) do
                local v = row[c]
                cells[i] = v == nil and "" or tostring(v):gsub("[%c]", " ")
            end
            w.held[#w.held + 1] = cells
            return ""
        end,
        finish = function(w)
            if not w.cols then
                return ""
            end
            local width = {}
            local function len(s)
                return #s:gsub("[\128-\191]", "")
            end
            for i, c in ipairs(w.cols) do
                width[i] = len(c)
                for _, cells in ipairs(w.held) do
                    local n = len(cells[i])
                    if n > width[i] then
                        width[i] = n
                    end
                end
            end
            local function line(cells)
                local out = {}
                for i, v in ipairs(cells) do
                    out[i] = i == #cells and v or v .. (" "):rep(width[i] - len(v))
                end
                return (concat(out, "  "):gsub(" +$", "")) .. "\n"
            end
            local out, rule = { line(w.cols) }, {}
            for i = 1, #w.cols do
                rule[i] = ("-"):rep(width[i])
            end
            out[2] = line(rule)
            for _, cells in ipairs(w.held) do
                out[#out + 1] = line(cells)
            end
            w.held = nil
            return concat(out)
        end,
    },
    -- Singer messages (see "Singer" above): SCHEMA first (even with no
    -- row), a RECORD per row, the STATE when closed.
    singer = {
        start = function(w)
            return singer_schema(w)
        end,
        row = function(w, row)
            if not w.singer then
                return nil, w.singer_why
            end
            return singer_record(w, row)
        end,
        finish = function(w)
            local head = singer_schema(w)
            if not w.singer then
                return ""
            end
            local state = { type = "STATE", value = { bookmarks = { [w.singer.stream] = singer_bookmark(w) } } }
            local text, why = message(state)
            if not text then
                w.failed = w.failed or ("singer: the state cannot be written: " .. tostring(why))
                return ""
            end
            return head .. text
        end,
    },
}

-- Formats with a module of their own, loaded when first asked for: a
-- workbook (the optional C module over libxlsxwriter) and an HTML report.
-- Such a module returns its format table; a `ready()` in it says whether
-- what it needs is installed (true, or nil and what to install).
M.MODULES = { xlsx = "wolkvox.out.xlsx", html = "wolkvox.out.html" }

-- The format table of `name`, or nil and why (unknown, or not installed).
local function format_of(name)
    local f = M.FORMATS[name]
    if f then
        return f
    end
    local mod = M.MODULES[name]
    if not mod then
        local names = {}
        for k in pairs(M.FORMATS) do
            names[#names + 1] = k
        end
        for k in pairs(M.MODULES) do
            names[#names + 1] = k
        end
        sort(names)
        return nil, "unknown format '" .. tostring(name) .. "' (" .. concat(names, ", ") .. ")"
    end
    local ok, got = pcall(require, mod)
    if not ok then
        return nil, "the " .. name .. " format cannot be loaded: " .. tostring(got)
    end
    if got.ready then
        local ready, why = got.ready()
        if not ready then
            return nil, why
        end
    end
    return got
end

--- Whether format `name` can be written here (known, and what it needs is
-- installed): true, or nil and a message saying what is missing.  The jobs
-- ask before any call is spent.
function M.ready(name)
    local f, why = format_of(name)
    return f and true or nil, why
end

local Writer = {}
Writer.__index = Writer

-- Write `text`; nil and the error when the file refused it (a full disk, a
-- closed pipe), and every later write fails the same way.
local function put(w, text)
    if w.failed then
        return nil, w.failed
    end
    if text == nil or text == "" then
        return true
    end
    local ok, err = w.file:write(text)
    if not ok then
        w.failed = "cannot write: " .. tostring(err)
        return nil, w.failed
    end
    return true
end

--- Write one row (a table of field -> value).
-- @return true, or nil and a message
function Writer:write(row)
    if type(row) ~= "table" then
        error("export: a row must be a table (got " .. type(row) .. ")", 2)
    end
    local f = self.format
    if not self.started then
        self.started = true
        if f.start then
            local ok, err = put(self, f.start(self, row))
            if not ok then
                return nil, err
            end
        end
    end
    local text, why = f.row(self, row)
    if text == nil and why ~= nil then
        -- This row cannot be written (the file is fine: a later row may be).
        return nil, "row " .. (self.rows + 1) .. ": " .. tostring(why)
    end
    local ok, err = put(self, text)
    if ok then
        self.rows = self.rows + 1
    end
    return ok, err
end

--- Start the output from the given columns alone (a CSV's header: the
-- columns a first row without other members settles), before any row.
-- @return true, or nil and a message
function Writer:begin()
    local f = self.format
    self.started = true
    if f.start then
        return put(self, f.start(self, {}))
    end
    return true
end

--- Write `n` rows already formatted as `text` (CSV lines made by the C
-- core from the answer itself); the writer must have started.
-- @return true, or nil and a message
function Writer:write_lines(text, n)
    local ok, err = put(self, text)
    if ok then
        self.rows = self.rows + n
    end
    return ok, err
end

--- Finish the output (a CSV with no row still gets its header when the
-- columns were given) and flush the file; the file itself stays open.
-- @return true, or nil and a message
function Writer:close()
    local f = self.format
    if not self.started and self.columns then
        local ok, err = self:begin()
        if not ok then
            return nil, err
        end
    end
    if f.finish then
        local ok, err = put(self, f.finish(self))
        if not ok then
            return nil, err
        end
    end
    if self.failed then
        return nil, self.failed
    end
    local ok, err = self.file:flush()
    if not ok then
        self.failed = "cannot write: " .. tostring(err)
        return nil, self.failed
    end
    return true
end

--- Drop what a writer cut short holds outside its file (a workbook's
-- private directory): for an output that will not be finished.  Safe to
-- call more than once, and after close.
function Writer:discard()
    local f = self.format
    if f.discard then
        f.discard(self)
    end
end

--- A writer of `format` to the open `file`.
-- @tparam string format "csv", "ndjson", "json", "table", "singer" (a key of `FORMATS`),
--   "xlsx" or "html" (a key of `MODULES`)
-- @tparam file file an open file (`io.stdout`, `io.open(path, "wb")`)
-- @tparam[opt] table opts `columns` (a list; CSV), `bom` (CSV); for
--   singer: `endpoint` (a registry entry or a name, needed), `utc_offset`
--   (the operation's clock, seconds east of UTC; default `wolkvox.defaults`'),
--   `bookmark` (the stream's bookmark in the STATE: a table, or a function
--   giving it when the writer closes), `stream` (another stream name);
--   `about` (what a report's header says: `from`, `to` (ISO), `per`,
--   `totals()` giving `{ calls =, windows = }` when the writer closes)
-- @return the writer (`write(row)`, `close()`, `rows`), or nil and a message
function M.writer(format, file, opts)
    local f, why = format_of(format)
    if not f then
        return nil, why
    end
    if io_type(file) ~= "file" then
        error("export.writer: an open file expected", 2)
    end
    return M.custom(f, file, opts)
end

--- A writer of a format of your own to the open `file`.
-- @tparam table format `row(w, row)`, optionally `start(w, row)` and
--   `finish(w)`, each returning the text to write (see the module's
--   description; `w.rows` counts the rows written so far)
-- @tparam file file an open file
-- @tparam[opt] table opts as for `writer`
-- @return the writer
function M.custom(format, file, opts)
    if type(format) ~= "table" or type(format.row) ~= "function" then
        error("export.custom: a format table with a row function expected", 2)
    end
    if io_type(file) ~= "file" then
        error("export.custom: an open file expected", 2)
    end
    opts = opts or {}
    local d = opts.delimiter
    if d ~= nil and not M.DELIMITERS[d] then
        error("export: delimiter must be one of , ; | or a tab", 2)
    end
    return setmetatable({ format = format, file = file, columns = opts.columns, bom = opts.bom, rows = 0,
        endpoint = opts.endpoint, utc_offset = opts.utc_offset, bookmark = opts.bookmark, stream = opts.stream,
        delimiter = d ~= "," and d or nil, about = opts.about or {} }, Writer)
end

return M
