--- Rows into a database table, exactly once.  The table is made from the
-- endpoint's schema (`wolkvox.api.schema`); each window's rows, the load
-- record (`_wolkvox_loads`) and the stream's state (`_wolkvox_state`: how
-- far it got) are committed in one transaction, so a run killed at any
-- moment leaves the database as it was after the last whole window, and the
-- next run goes on from there: no state file, nothing twice, nothing lost.
-- Rows merge by the schema's rule: upsert on the row key (detail), the
-- window's period replaced (aggregates), appended with the time taken
-- (snapshots), the table replaced (lookups).
-- @module wolkvox.out.load

local dates = require "wolkvox.dates"
local db = require "wolkvox.out.db"
local errors = require "wolkvox.errors"
local json = require "wolkvox.json"
local schema_of = require "wolkvox.api.schema"
local version = require "wolkvox.version"

local type, pairs, ipairs, tostring, tonumber, pcall, setmetatable, format, concat, sort, floor, tointeger, find,
    match, min =
    type, pairs, ipairs, tostring, tonumber, pcall, setmetatable, string.format, table.concat, table.sort,
    math.floor, math.tointeger, string.find, string.match, math.min

local M = {}

local q = db.quote

-- SQL types by dialect.
local SQL = {
    sqlite = { integer = "INTEGER", decimal = "REAL", duration = "INTEGER", percent = "REAL", timestamp = "TEXT",
        text = "TEXT", json = "TEXT" },
    postgresql = { integer = "bigint", decimal = "numeric", duration = "integer", percent = "numeric",
        timestamp = "timestamptz", text = "text", json = "jsonb" },
}
M.SQL = SQL

--- The statements that make the tables of `s` (a schema) in `dialect`:
-- the data table, its index, and the two tables of the loads and states.
function M.ddl(s, dialect)
    local types = SQL[dialect]
    local cols = {}
    for _, c in ipairs(s.columns) do
        cols[#cols + 1] = "  " .. q(c.name) .. " " .. types[c.type] .. (c.name == s.key and " NOT NULL" or "")
    end
    if s.key then
        cols[#cols + 1] = "  PRIMARY KEY (" .. q(s.key) .. ")"
    end
    local out = { "CREATE TABLE IF NOT EXISTS " .. q(s.table) .. " (\n" .. concat(cols, ",\n") .. "\n)" }
    if s.merge == "period" then
        out[#out + 1] = format("CREATE INDEX IF NOT EXISTS %s ON %s (%s, %s)", q(s.table .. "_period"), q(s.table),
            q("_period_start"), q("_period_end"))
    end
    local serial = dialect == "sqlite" and "INTEGER PRIMARY KEY AUTOINCREMENT" or "bigserial PRIMARY KEY"
    out[#out + 1] = "CREATE TABLE IF NOT EXISTS " .. q("_wolkvox_loads") .. " (\n  id " .. serial
        .. ",\n  stream text NOT NULL,\n  endpoint text NOT NULL,\n  " .. q("table") .. " text NOT NULL,\n"
        .. "  window_from text,\n  window_to text,\n  rows integer NOT NULL,\n  calls integer NOT NULL,\n"
        .. "  started text NOT NULL,\n  finished text NOT NULL,\n  version text NOT NULL\n)"
    out[#out + 1] = "CREATE TABLE IF NOT EXISTS " .. q("_wolkvox_state") .. " (\n  stream text PRIMARY KEY,\n"
        .. "  endpoint text NOT NULL,\n  " .. q("table") .. " text NOT NULL,\n  since text,\n  watermark text,\n"
        .. "  complete integer NOT NULL DEFAULT 0,\n  windows integer NOT NULL DEFAULT 0,\n"
        .. "  calls integer NOT NULL DEFAULT 0,\n  last_run bigint,\n  version text NOT NULL\n)"
    return out
end

-- The columns the table has now.
local function existing(conn, name)
    local have = {}
    local rows
    if conn.dialect == "sqlite" then
        rows = conn:rows("SELECT name FROM pragma_table_info(?)", name)
    else
        rows = conn:rows("SELECT column_name AS name FROM information_schema.columns "
            .. "WHERE table_schema = current_schema() AND table_name = ?", name)
    end
    for _, r in ipairs(rows) do
        have[r.name] = true
    end
    return have
end

-- The time now on the wall clock of UTC, as stored.
local function stamp()
    return schema_of.timestamp(os.time(), 0)
end

local Loader = {}
Loader.__index = Loader

--- A loader of the rows of schema `s` into `conn` for `stream` (a name
-- the state is kept under).  Makes the tables, adds the columns the
-- schema has and the table lacks.
-- @tparam table conn a connection (`wolkvox.out.db.connect`)
-- @tparam table s a schema (`wolkvox.api.schema.of`)
-- @tparam string stream the stream's name
-- @tparam table opts `utc_offset`, `log(level, msg)`
function M.new(conn, s, stream, opts)
    local self = setmetatable({ conn = conn, s = s, stream = stream, offset = opts.utc_offset or 0,
        log = opts.log or function() end, loaded = 0, known = {}, started = stamp() }, Loader)
    conn:begin()
    for _, sql in ipairs(M.ddl(s, conn.dialect)) do
        conn:exec(sql)
    end
    local have = existing(conn, s.table)
    for _, c in ipairs(s.columns) do
        if not have[c.name] then
            conn:exec(format("ALTER TABLE %s ADD COLUMN %s %s", q(s.table), q(c.name), SQL[conn.dialect][c.type]))
            self.log("info", format("%s: added the column %s (%s)", s.table, c.name, c.type))
        end
        self.known[c.name] = c
    end
    -- Columns earlier runs added for fields the registry does not list.
    for name in pairs(have) do
        if not self.known[name] then
            self.known[name] = { name = name, type = "text", added = true }
        end
    end
    self.lower, self.added = {}, 0
    for name in pairs(self.known) do
        self.lower[name:lower()] = true
    end
    conn:commit()
    self:prepare()
    return self
end

-- Rows go in by statements of up to BATCH rows each (one call into the
-- driver, one round trip to PostgreSQL, per statement), and never more
-- than MAX_PARAMS values in one: SQLite's limit is 32766; LuaDBI's
-- PostgreSQL driver writes each `?` as "$N" in at most 4 characters, so
-- from $1000 on it would cut the number ("$100").  A batch short of BATCH
-- goes in by the fewest statements of 2^k rows (a few prepared statements,
-- not one per length).
M.BATCH = 64
M.MAX_PARAMS = { sqlite = 32766, postgresql = 999 }

-- Through COPY (wolkvox.pg), the rows go to the server this many at a time;
-- they are merged into the target every MERGE_CHUNK rows (while the next
-- ones are read: at most COPY_HOLD wait meanwhile, looking every COPY_POLL
-- whether the merge is done), and when the window commits, a key comes
-- again or a column is added.
M.COPY_BATCH = 1024
M.MERGE_CHUNK = 4096
M.COPY_HOLD = 4096
M.COPY_POLL = 256

-- The common case of a row's values, made in C (`core.cells`); false
-- (or no C core) makes every row by the Lua path (`Loader:typed_row`),
-- which a spec compares with it.
local has_core, core_or_why = pcall(require, "wolkvox.core")
M.cells = has_core and core_or_why.cells or false
local function lua_only()
    return false
end

-- How each column's value is made (`Loader:prepare`).
local OWN, JSON, TEXT, STAMP, MEMO = 1, 2, 3, 4, 5

-- The values a converter cache keeps at most per column (then it starts
-- again: memory stays flat whatever the values).
local MEMO_SIZE = 4096

-- The INSERT of `rows` rows of the columns `names` into `s`'s table,
-- merged by its key.
local function insert_sql(s, names, sets, rows)
    local marks = {}
    for i = 1, #names do
        marks[i] = "?"
    end
    local tuple = "(" .. concat(marks, ", ") .. ")"
    local tuples = {}
    for i = 1, rows do
        tuples[i] = tuple
    end
    local sql = format("INSERT INTO %s (%s) VALUES %s", q(s.table), concat(names, ", "), concat(tuples, ", "))
    if s.key then
        sql = sql .. format(" ON CONFLICT (%s) DO ", q(s.key))
            .. (#sets > 0 and ("UPDATE SET " .. concat(sets, ", ")) or "NOTHING")
    end
    return sql
end

-- The insert (and merge) statements for the columns known now, and how
-- each column's value is made.
function Loader:prepare()
    local s, names, sets = self.s, {}, {}
    self.order = {}
    for _, c in ipairs(s.columns) do
        self.order[#self.order + 1] = c
    end
    for _, c in pairs(self.known) do
        if c.added then
            self.order[#self.order + 1] = c
        end
    end
    self.kinds, self.memos, self.key_at = {}, {}, nil
    -- For core.cells: the columns' fields, the fields that are plain
    -- columns, and our own columns it leaves to `own_values`.
    self.names, self.plain, self.owns = {}, {}, {}
    for name, c in pairs(self.known) do
        if not c.own then
            self.plain[name] = true
        end
    end
    for i, c in ipairs(self.order) do
        names[i] = q(c.name)
        self.names[i] = c.name
        if c.own and c.name ~= "_unfit" then
            self.owns[#self.owns + 1] = { i = i, name = c.name }
        end
        if c.name ~= s.key then
            sets[#sets + 1] = q(c.name) .. " = excluded." .. q(c.name)
        else
            self.key_at = i
        end
        local kind = c.own and OWN or c.type == "json" and JSON or c.type == "text" and TEXT
            or c.type == "timestamp" and STAMP or MEMO
        self.kinds[i] = kind
        if kind == MEMO then
            self.memos[i] = { n = 0 }
        end
    end
    self.width = #self.order
    self.batch = math.max(1, min(M.BATCH, floor(M.MAX_PARAMS[self.conn.dialect] / self.width)))
    -- The statement of 1, 2, 4 ... rows and of a whole batch, made when first used.
    self.inserts = setmetatable({}, { __index = function(t, rows)
        local sql = insert_sql(s, names, sets, rows)
        t[rows] = sql
        return sql
    end })
    self.insert = self.inserts[1]
    if self.conn.copy then
        -- Through COPY (wolkvox.pg): the rows go into a temporary table of
        -- the target's columns (emptied at each commit), and one statement
        -- merges them into the target as the INSERT above would.  A new
        -- table for each set of columns (a column added: a new name).
        self.copy = true
        self.stage_n = (self.stage_n or 0) + 1
        self.stage = q("_wolkvox_stage_" .. self.stage_n)
        self.stage_ready = false
        self.batch = M.COPY_BATCH
        self.staged = self.staged or 0
        self.copy_sql = format("COPY %s (%s) FROM STDIN", self.stage, concat(names, ", "))
        local list = concat(names, ", ")
        self.merge_sql = format("INSERT INTO %s (%s) SELECT %s FROM %s", q(s.table), list, list, self.stage)
        if s.key then
            self.merge_sql = self.merge_sql .. format(" ON CONFLICT (%s) DO ", q(s.key))
                .. (#sets > 0 and ("UPDATE SET " .. concat(sets, ", ")) or "NOTHING")
        end
    end
    self.spill_at = self.batch
    -- The rows waiting to go in: their values one after another, and the
    -- keys among them (a key twice in one statement: PostgreSQL refuses
    -- it, so the batch goes in first, keeping the order of the merges).
    self.buf, self.pending, self.keys = {}, 0, {}
end

-- COPY: the rows waiting go into the temporary table (the COPY started,
-- and the table made, when first needed in the window); once it holds
-- MERGE_CHUNK rows, they are merged into the target by a statement sent
-- without waiting: the server merges while the next rows are read, and
-- those wait (up to COPY_HOLD) until it is done.  `force`: no waiting rows
-- kept, no merge sent.  Else as `flush`.
function Loader:spill(force)
    if not self.copy then
        return self:flush()
    end
    local pending, conn = self.pending, self.conn
    if pending == 0 then
        return
    end
    if conn.sent then
        if not force and pending < M.COPY_HOLD and not conn:ready() then
            self.spill_at = pending + M.COPY_POLL
            return
        end
        conn:wait()
    end
    if not conn.copying then
        if not self.stage_ready then
            conn:exec(format("CREATE TEMP TABLE IF NOT EXISTS %s (LIKE %s) ON COMMIT DELETE ROWS", self.stage,
                q(self.s.table)))
            self.stage_ready = true
        end
        conn:copy_begin(self.copy_sql)
        self.copy_first = self.window_rows - pending + 1
    end
    conn:copy_rows(self.buf, 1, pending, self.width)
    self.staged = self.staged + pending
    self.pending = 0
    self.spill_at = self.batch
    if not force and self.staged >= M.MERGE_CHUNK then
        conn:copy_end(nil, nil, self:copy_what())
        conn:send(self.merge_sql .. "; TRUNCATE " .. self.stage)
        self.staged = 0
        self.keys = {}
    end
end

-- What the COPY open holds (its line 1 is the window's row `copy_first`).
function Loader:copy_what()
    return format("(its line 1 is row %d of the window into %s)", self.copy_first or 1, self.s.table)
end

-- COPY: every row merged into the target (what was sent waited for); the
-- temporary table emptied (`final`: the commit empties it).
function Loader:merge(final)
    local conn = self.conn
    self:spill(true)
    conn:wait()
    conn:copy_end(nil, nil, self:copy_what())
    if self.staged > 0 then
        conn:exec(self.merge_sql)
        if not final then
            conn:exec("TRUNCATE " .. self.stage)
        end
        self.staged = 0
    end
    self.keys = {}
end

-- Send the rows waiting (in the window's transaction), in their order.
function Loader:flush(final)
    if self.copy then
        return self:merge(final)
    end
    local pending = self.pending
    if pending == 0 then
        return
    end
    local conn, buf, width, inserts, batch = self.conn, self.buf, self.width, self.inserts, self.batch
    local done = 0
    while done < pending do
        local size = pending - done
        if size >= batch then
            size = batch
        else
            local p = 1
            while p * 2 <= size do
                p = p * 2
            end
            size = p
        end
        conn:exec_list(inserts[size], buf, size * width, done * width + 1)
        done = done + size
    end
    self.pending = 0
    self.keys = {}
end

--- The state of this stream in the database, or nil.
function M.state(conn, stream)
    -- Numbers read as text: LuaDBI reads integers as 32 bits.
    return conn:rows("SELECT endpoint, " .. q("table") .. " AS tbl, since, watermark, "
        .. "CAST(complete AS text) AS complete, CAST(windows AS text) AS windows, CAST(calls AS text) AS calls, "
        .. "CAST(last_run AS text) AS last_run FROM " .. q("_wolkvox_state") .. " WHERE stream = ?", stream)[1]
end

--- Columns a run adds at most for fields the registry does not list; the
-- fields past them are kept in `_unfit`.
M.MAX_ADDED = 64

-- A field the table lacks: added as a text column, logged; false (the
-- value goes to `_unfit`) for a name that cannot be one (not letters,
-- digits and _, or starting with _ as our own columns do), a name that
-- differs from a column only by case (one column for SQLite), or past
-- `MAX_ADDED` in this run.
function Loader:add(name)
    if not schema_of.valid_name(name) or name:find("^_") or self.lower[name:lower()]
            or self.added >= M.MAX_ADDED then
        return false
    end
    self.added = self.added + 1
    self.lower[name:lower()] = true
    self:flush()
    local c = { name = name, type = "text", added = true }
    self.conn:exec(format("ALTER TABLE %s ADD COLUMN %s %s", q(self.s.table), q(name), SQL[self.conn.dialect].text))
    self.known[name] = c
    self.log("warn", format("%s: the API sent a field the registry does not list, '%s': added as a text column",
        self.s.table, name))
    self:prepare()
    return true
end

-- The identity of a row without a key: its content, sorted.
local function content_id(row)
    local names = {}
    for k in pairs(row) do
        names[#names + 1] = tostring(k)
    end
    sort(names)
    local parts = {}
    for i, k in ipairs(names) do
        local v = row[k]
        parts[i] = k .. "=" .. (type(v) == "table" and json.encode(v) or tostring(v))
    end
    return require("wolkvox.core").sha256(concat(parts, "\0")):sub(1, 32)
end

-- Begin the window `w` (its transaction; a period or a list replaced).
function Loader:open_window(w)
    if self.window then
        return
    end
    local conn, s = self.conn, self.s
    conn:begin()
    self.window, self.window_rows = w, 0
    -- (made again if missing: a rolled-back window may have taken it along)
    self.stage_ready, self.staged, self.spill_at = false, 0, self.batch
    if s.merge == "period" then
        self.period = { w.from and schema_of.timestamp(dates.parse(w.from), self.offset),
            w.to and schema_of.timestamp(dates.parse(w.to), self.offset) }
        conn:exec(format("DELETE FROM %s WHERE %s = ? AND %s = ?", q(s.table), q("_period_start"), q("_period_end")),
            self.period[1], self.period[2])
    elseif s.merge == "replace" and not self.replaced then
        conn:exec("DELETE FROM " .. q(s.table))
        self.replaced = true
    end
end

-- A value bound as text (LuaDBI binds numbers through doubles and
-- "%.14g"): integers whole, decimals in the fewest digits that read back
-- the same ("5.05", not "5.0499999999999998").
local function as_text(v)
    if type(v) == "number" then
        local i = tointeger and tointeger(v) or (v == floor(v) and v)
        if i then
            return format("%d", i)
        end
        local s = format("%.15g", v)
        return tonumber(s) == v and s or format("%.17g", v)
    end
    return v
end

local MIN_YEAR, MAX_YEAR, make = dates.MIN_YEAR, dates.MAX_YEAR, dates.make
local value = schema_of.value
local UNFIT = {}

-- Days read so far ("2026-01-05" -> true when a real day wolkvox holds),
-- started again past MEMO_SIZE.
local days, days_n = {}, 0

-- The value of a timestamp field: the form most reports send
-- ("YYYY-MM-DD HH:MM:SS" of a real day and time) is read here, as
-- `schema.value` reads it (`dates.parse`, `dates.make`: such a time prints
-- back as it was written); any other through `schema.value`.
local function stamp_value(raw, offset, suffix)
    if type(raw) == "string" then
        local day, h = match(raw, "^(%d%d%d%d%-%d%d%-%d%d) ([0-2]%d):[0-5]%d:[0-5]%d$")
        if day and tonumber(h) <= 23 then
            local real = days[day]
            if real == nil then
                local y, mo, d = match(day, "^(%d+)%-(%d+)%-(%d+)$")
                y = tonumber(y)
                real = y >= MIN_YEAR and y <= MAX_YEAR and make(y, tonumber(mo), tonumber(d), 0, 0, 0) ~= nil
                if days_n >= MEMO_SIZE then
                    days, days_n = {}, 0
                end
                days[day], days_n = real, days_n + 1
            end
            if real then
                return raw .. suffix
            end
        end
    end
    local v, why = value("timestamp", raw, offset)
    return as_text(v), why
end

-- The value of our own column `name` for `row` (`_unfit` is nil here: it
-- is filled once the row's values are made).
local function own_value(self, name, row)
    if name == "_row" then
        return content_id(row)
    elseif name == "_period_start" then
        return self.period[1]
    elseif name == "_period_end" then
        return self.period[2]
    elseif name == "_taken_at" then
        return self.started
    end
end

-- The values of our own columns but `_unfit` (nil: the row fitted).
local function own_values(self, row, base)
    local buf = self.buf
    for _, o in ipairs(self.owns) do
        buf[base + o.i] = own_value(self, o.name, row)
    end
end

-- The values of `row` at `base` in the buffer, each column's the loader's
-- way (`core.cells` does the common case in C, the same way).  Fields that
-- are not columns of their own (a name no column may have, one of ours, too
-- many new ones) are kept in `_unfit`.  Its place in the buffer (a column
-- added flushes what was waiting), or nothing when the row went in already.
function Loader:typed_row(row, offset, suffix, dialect)
    local known = self.known
    local extra
    for k, v in pairs(row) do
        local c = known[k]
        if (c and c.own) or (not c and not self:add(k)) then
            extra = extra or {}
            extra[tostring(k)] = v
        end
    end
    -- (after `add`: the columns, and so these, may have changed)
    local order, kinds, memos, buf, n = self.order, self.kinds, self.memos, self.buf, self.width
    local base = self.pending * n
    local unfit
    for i = 1, n do
        local c, kind = order[i], kinds[i]
        local v, why
        if kind == TEXT then
            local raw = row[c.name]
            if raw == nil or raw == "" or raw == "-" or raw == "--" then
                v = nil
            elseif type(raw) == "string" and not find(raw, "\0", 1, true) then
                v = raw
            else
                v, why = value("text", raw, offset)
                v = as_text(v)
            end
        elseif kind == MEMO then
            -- Numbers, durations, percentages: few distinct values, each
            -- read once (a pure function of the text).
            local raw = row[c.name]
            if type(raw) == "string" then
                local memo = memos[i]
                v = memo[raw]
                if v == nil then
                    v, why = value(c.type, raw, offset)
                    v = as_text(v)
                    if memo.n >= MEMO_SIZE then
                        memo = { n = 0 }
                        memos[i] = memo
                    end
                    memo[raw], memo.n = why and UNFIT or v or false, memo.n + 1
                elseif v == UNFIT then
                    v, why = nil, "unfit"
                elseif v == false then
                    v = nil
                end
            else
                v, why = value(c.type, raw, offset)
                v = as_text(v)
            end
        elseif kind == STAMP then
            v, why = stamp_value(row[c.name], offset, suffix)
        elseif kind == JSON then
            local raw = row[c.name]
            v = raw ~= nil and json.encode(raw) or nil
        else
            v = own_value(self, c.name, row)
        end
        if why then
            unfit = unfit or {}
            unfit[c.name] = row[c.name]
        end
        buf[base + i] = v
    end
    if extra then
        unfit = unfit or {}
        for k, v in pairs(extra) do
            unfit[k] = v
        end
    end
    if unfit then
        if dialect == "postgresql" then
            -- No PostgreSQL text holds a NUL, not even inside jsonb: it
            -- is kept as the six characters \u0000 (documented).
            local clean = {}
            for k, v in pairs(unfit) do
                if type(v) == "string" and v:find("\0", 1, true) then
                    v = v:gsub("%z", "\\u0000")
                end
                clean[(k:gsub("%z", "\\u0000"))] = v
            end
            unfit = clean
        end
        for i = 1, n do
            if order[i].name == "_unfit" then
                buf[base + i] = json.encode(unfit)
            end
        end
    end
    return base
end

--- Load `list` (rows of window `w`) inside the window's transaction.
-- The rows wait in batches (`BATCH`) until the batch is full, a key comes
-- again, the columns change or the window commits.
function Loader:rows(list, w)
    self:open_window(w)
    local s = self.s
    local offset, key = self.offset, s.key
    local dialect = self.conn.dialect
    -- The offset as stored after a time ("-05:00").
    local suffix = schema_of.timestamp(0, offset):sub(20)
    local cells = M.cells or lua_only
    for _, row in ipairs(list) do
        if type(row) ~= "table" then
            errors.throw("output", { endpoint = s.endpoint, message = "a row that is not an object cannot be loaded" })
        end
        local base = self.pending * self.width
        if not cells(row, self.plain, self.names, self.kinds, self.memos, days, suffix, self.buf, base) then
            base = self:typed_row(row, offset, suffix, dialect)
        elseif self.owns[1] then
            own_values(self, row, base)
        end
        local buf, n = self.buf, self.width
        if key and key ~= "_row" and (row[key] == nil or row[key] == "") then
            errors.throw("output", { endpoint = s.endpoint, message = format(
                "a row without its key %s cannot be merged into %s (nothing of this window was loaded)",
                key, s.table) })
        end
        if key then
            -- A key already waiting: those rows go in first (one statement
            -- cannot merge one key twice).
            local k = buf[base + self.key_at]
            if k ~= nil then
                if self.keys[k] then
                    -- (flush sends the rows before this one; it then moves
                    -- to the front of the emptied batch)
                    self:flush()
                    for i = 1, n do
                        buf[i] = buf[base + i]
                    end
                end
                self.keys[k] = true
            end
        end
        self.pending = self.pending + 1
        self.window_rows = self.window_rows + 1
        if self.pending >= self.spill_at then
            self:spill()
        end
    end
    self.loaded = self.loaded + #list
    return true
end

--- The window `w` is whole: its load record and the stream's state (`st`:
-- `since`, `watermark`, `complete`, `windows`, `calls`, `last_run`) go in
-- with its rows, and the transaction commits.
function Loader:commit(w, st)
    self:open_window(w)
    self:flush(true)
    local conn, s = self.conn, self.s
    conn:exec("INSERT INTO " .. q("_wolkvox_loads") .. " (stream, endpoint, " .. q("table") .. ", window_from, "
        .. "window_to, rows, calls, started, finished, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        self.stream, s.endpoint, s.table, w.from, w.to, tostring(self.window_rows), tostring(w.calls or 0),
        self.started, stamp(), version)
    M.save_state(conn, self.stream, s, st)
    conn:commit()
    self.window = nil
end

--- Write the state of `stream` (inside the caller's transaction).
function M.save_state(conn, stream, s, st)
    local vals = { stream, s.endpoint, s.table, st.since, st.watermark, st.complete and "1" or "0",
        tostring(st.windows or 0), tostring(st.calls or 0), st.last_run and format("%d", st.last_run) or nil,
        version }
    conn:exec_list("INSERT INTO " .. q("_wolkvox_state") .. " (stream, endpoint, " .. q("table") .. ", since, "
        .. "watermark, complete, windows, calls, last_run, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        .. "ON CONFLICT (stream) DO UPDATE SET endpoint = excluded.endpoint, " .. q("table") .. " = excluded."
        .. q("table") .. ", since = excluded.since, watermark = excluded.watermark, complete = excluded.complete, "
        .. "windows = excluded.windows, calls = excluded.calls, last_run = excluded.last_run, "
        .. "version = excluded.version", vals, 10)
end

--- Hold `stream` for this run: a second run of the same stream into the
-- same database at once is refused (kind `busy`) before it spends a call.
-- PostgreSQL: a session advisory lock (the server drops it when the
-- connection ends, a killed run included); SQLite: a flock(2) on a file
-- beside the database (the kernel drops it with its holder).
-- @return the hold: `release()` it
function M.hold(conn, stream, what)
    local core = require "wolkvox.core"
    local busy = format("%s: another run is loading the %s %s into %s now; let it finish", conn.display,
        what or "stream", stream, conn.display)
    if conn.dialect == "postgresql" then
        -- 52 bits of the stream's digest: exact in a double, a bigint key.
        local key = format("%d", tonumber(core.sha256("wolkvox:" .. stream):sub(1, 13), 16))
        local got = conn:value("SELECT CAST(pg_try_advisory_lock(CAST(? AS bigint)) AS integer) AS got", key)
        if tonumber(got) ~= 1 then
            errors.throw("busy", { message = busy })
        end
        return { release = function()
            pcall(conn.exec, conn, "SELECT pg_advisory_unlock(CAST(? AS bigint))", key)
        end }
    end
    local path = conn.target.path .. "." .. core.sha256(stream):sub(1, 12) .. ".lock"
    local lock, why = core.lock(path)
    if not lock then
        if why == "busy" then
            errors.throw("busy", { message = busy })
        end
        errors.throw("output", { message = format("%s: cannot lock %s: %s", conn.display, path, tostring(why)) })
    end
    return { release = function() lock:remove(path) end }
end

--- Give up the open window (its rows are not kept).
function Loader:abort()
    self.pending, self.keys, self.staged = 0, {}, 0
    self.conn:rollback()
    self.window = nil
end

return M
