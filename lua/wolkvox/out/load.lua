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

local type, pairs, ipairs, tostring, tonumber, pcall, setmetatable, format, concat, sort, floor, tointeger =
    type, pairs, ipairs, tostring, tonumber, pcall, setmetatable, string.format, table.concat, table.sort,
    math.floor, math.tointeger

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
    conn:commit()
    self:prepare()
    return self
end

-- The insert (and merge) statement for the columns known now.
function Loader:prepare()
    local s, names, marks, sets = self.s, {}, {}, {}
    self.order = {}
    for _, c in ipairs(s.columns) do
        self.order[#self.order + 1] = c
    end
    for _, c in pairs(self.known) do
        if c.added then
            self.order[#self.order + 1] = c
        end
    end
    for i, c in ipairs(self.order) do
        names[i], marks[i] = q(c.name), "?"
        if c.name ~= s.key then
            sets[#sets + 1] = q(c.name) .. " = excluded." .. q(c.name)
        end
    end
    local sql = format("INSERT INTO %s (%s) VALUES (%s)", q(s.table), concat(names, ", "), concat(marks, ", "))
    if s.key then
        sql = sql .. format(" ON CONFLICT (%s) DO ", q(s.key))
            .. (#sets > 0 and ("UPDATE SET " .. concat(sets, ", ")) or "NOTHING")
    end
    self.insert = sql
end

--- The state of this stream in the database, or nil.
function M.state(conn, stream)
    -- Numbers read as text: LuaDBI reads integers as 32 bits.
    return conn:rows("SELECT endpoint, " .. q("table") .. " AS tbl, since, watermark, "
        .. "CAST(complete AS text) AS complete, CAST(windows AS text) AS windows, CAST(calls AS text) AS calls, "
        .. "CAST(last_run AS text) AS last_run FROM " .. q("_wolkvox_state") .. " WHERE stream = ?", stream)[1]
end

-- A field the table lacks: added as a text column, logged.
function Loader:add(name)
    if not schema_of.valid_name(name) then
        return false
    end
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

--- Load `list` (rows of window `w`) inside the window's transaction.
function Loader:rows(list, w)
    self:open_window(w)
    local s, conn = self.s, self.conn
    for _, row in ipairs(list) do
        if type(row) ~= "table" then
            errors.throw("output", { endpoint = s.endpoint, message = "a row that is not an object cannot be loaded" })
        end
        for k in pairs(row) do
            if not self.known[k] and not self:add(k) then
                errors.throw("output", { endpoint = s.endpoint, message = format(
                    "the API sent a field whose name cannot be a column: %q", errors.snippet(tostring(k), 60)) })
            end
        end
        local vals, unfit, n = {}, nil, #self.order
        for i, c in ipairs(self.order) do
            local v, why
            if c.own then
                if c.name == "_row" then
                    v = content_id(row)
                elseif c.name == "_period_start" then
                    v = self.period[1]
                elseif c.name == "_period_end" then
                    v = self.period[2]
                elseif c.name == "_taken_at" then
                    v = self.started
                end
            else
                local raw = row[c.name]
                if c.type == "json" then
                    v = raw ~= nil and json.encode(raw) or nil
                else
                    v, why = schema_of.value(c.type, raw, self.offset)
                    if why then
                        unfit = unfit or {}
                        unfit[c.name] = raw
                    end
                end
            end
            vals[i] = as_text(v)
        end
        if unfit then
            if conn.dialect == "postgresql" then
                -- No PostgreSQL text holds a NUL, not even inside jsonb: it
                -- is kept as the six characters \u0000 (documented).
                for k, v in pairs(unfit) do
                    if type(v) == "string" and v:find("\0", 1, true) then
                        unfit[k] = v:gsub("%z", "\\u0000")
                    end
                end
            end
            for i, c in ipairs(self.order) do
                if c.name == "_unfit" then
                    vals[i] = json.encode(unfit)
                end
            end
        end
        if s.key and s.key ~= "_row" and (row[s.key] == nil or row[s.key] == "") then
            errors.throw("output", { endpoint = s.endpoint, message = format(
                "a row without its key %s cannot be merged into %s (nothing of this window was loaded)",
                s.key, s.table) })
        end
        conn:exec_list(self.insert, vals, n)
        self.window_rows = self.window_rows + 1
    end
    self.loaded = self.loaded + #list
    return true
end

--- The window `w` is whole: its load record and the stream's state (`st`:
-- `since`, `watermark`, `complete`, `windows`, `calls`, `last_run`) go in
-- with its rows, and the transaction commits.
function Loader:commit(w, st)
    self:open_window(w)
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
    self.conn:rollback()
    self.window = nil
end

return M
