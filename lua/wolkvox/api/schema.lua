--- What each field of an endpoint is: the schema a destination builds its
-- table from (SQL DDL, JSON Schema for Singer), and the value each field
-- is stored as.  The field list, its order and the row key come from the
-- registry; a field's type comes from its name by the rule below (the
-- names wolkvox uses are stable and say what they hold: `*_id` identifies,
-- `*_time` lasts, `date*` is a moment), never from the values of one answer.
-- A value that does not fit its field's type is not forced: `value`
-- answers nil and "unfit", and the destination keeps it as sent.
-- @module wolkvox.api.schema

local coerce = require "wolkvox.coerce"
local dates = require "wolkvox.dates"
local registry = require "wolkvox.api.registry"

local type, pairs, ipairs, tostring, tonumber, floor, format, abs =
    type, pairs, ipairs, tostring, tonumber, math.floor, string.format, math.abs
local tointeger = math.tointeger

local M = {}

--- The types a field may have.  `duration` is whole seconds ("01:02:03"
-- is 3723), `percent` the number before the sign ("9,336.00 %" is 9336),
-- `timestamp` a moment on the operation's clock.
M.TYPES = { integer = true, decimal = true, duration = true, percent = true, timestamp = true, text = true }

--- Names whose type the rule would get wrong, by name (lower case).
M.NAMED = {
    time_seg = "duration",     -- seconds: a number, or "HH:MM:SS"
    time_min = "decimal",      -- minutes as a decimal number
    cost = "decimal", telephone_costs = "decimal", billed_minutes = "decimal", minutes = "decimal",
    ivr_minutes = "decimal", credits = "decimal", nlp_credits = "decimal", tts_credits = "decimal",
    average = "decimal", size_mb = "decimal",
    login = "timestamp", logout = "timestamp", last_use = "timestamp", updated = "timestamp",
    last_update = "timestamp",
    close_time = "text", closing_time = "text", time_state_now = "duration", hour = "text",
    day = "text", month = "text", day_of_week = "text", last_day = "text", interval = "text",
    hang_up = "text", hung_up = "text", token_limit = "integer", token_use_today = "integer",
    all_token_today = "integer", licenses = "integer", size = "integer", units = "integer",
}

-- Counts: whole numbers of calls, chats, agents...
local COUNTS = { "calls", "inbound", "outbound", "internal", "hits", "hit", "rpc", "count", "cantidad",
    "total", "attempts", "attempt", "answer", "abandon", "busy", "congestion", "failed", "no_answer",
    "interactions", "characters", "chars", "recall_count", "recall_ok", "recall_fail", "errors",
    "connected_agents", "total_agents", "agents_needed", "times_chatted", "evaluations" }
local IS_COUNT = {}
for _, n in ipairs(COUNTS) do
    IS_COUNT[n] = true
end

--- The type of a field named `name` (`TYPES`): by `NAMED`, else by the rule.
function M.field_type(name)
    local l = tostring(name):lower()
    local named = M.NAMED[l]
    if named then
        return named
    end
    if l:find("date", 1, true) or l:find("fecha", 1, true) or l:find("_at$") then
        return "timestamp"
    elseif l == "id" or l:find("_id$") or l:find("^id_") or l:find("_id_") or l:find("dni", 1, true)
            or l:find("phone", 1, true) or l:find("^tel") or l:find("cod", 1, true) or l == "ani"
            or l == "dnis" or l:find("token", 1, true) then
        return "text"    -- identifiers and numbers that are names: "0031" stays "0031"
    elseif l:find("percent", 1, true) or l:find("occupancy", 1, true) or l:find("ocupation", 1, true)
            or l:find("service_level", 1, true) or l:find("rate$") or l:find("penetration", 1, true) then
        return "percent"
    elseif l:find("time", 1, true) or l:find("aht", 1, true) or l:find("duration", 1, true)
            or l == "tmo" or l == "asa" or l == "ata" or l == "att" or l == "acw" then
        return "duration"
    elseif IS_COUNT[l] or l:find("_calls$") or l:find("^calls_") or l:find("^total_") or l:find("^abandon")
            or l:find("^answer_") or l:find("^inbound_calls") then
        return "integer"
    end
    return "text"
end

-- The top-level name of a registry field: "agents[].calls" and "a.b" are
-- held by the row's "agents" and "a" (kept as JSON text).
local function top(field)
    return field:match("^([^%.%[]+)")
end

--- The columns of endpoint `e`, in API order: `{ name, type }`, nested
-- fields as one `json` column of their parent.
function M.columns(e)
    local cols, seen = {}, {}
    for _, f in ipairs(e.fields or {}) do
        local name = top(f)
        if name and not seen[name] then
            seen[name] = true
            cols[#cols + 1] = { name = name, type = name == f and M.field_type(name) or "json" }
        end
    end
    return cols
end

-- Fields that identify a row, in the order they are looked for when the
-- registry names none (as a sync does).
local KEYS = { "conn_id", "id_conn", "call_id", "id_call", "id_chat", "chat_id", "conversation_id", "id" }

-- The first of `names` that is a field of `e`.
local function first_field(e, names)
    for _, k in ipairs(names) do
        for _, f in ipairs(e.fields or {}) do
            if f == k then
                return k
            end
        end
    end
    return nil
end

--- The field that identifies a row of `e` (the registry's `row_key`, else
-- the first of the usual names it has), or nil (then the whole row does).
function M.row_key(e)
    return e.row_key or first_field(e, KEYS)
end

--- The field that holds a row's time (the registry's `time_field`, else
-- the first of date, date_ini, fecha it has), or nil.
function M.time_field(e)
    return e.time_field or first_field(e, { "date", "date_ini", "fecha" })
end

--- How rows of a kind merge into a table that already holds some:
-- `upsert` (detail: a row seen again replaces the one with its key),
-- `period` (aggregates: a period fetched again replaces that period's rows),
-- `append` (snapshots: each taking added, with the time it was taken),
-- `replace` (lookups: the table is the latest list).
M.MERGE = { detail = "upsert", aggregate = "period", snapshot = "append", lookup = "replace" }

--- A name a table may have: letters, digits and "_", not starting with a digit.
function M.valid_name(s)
    return type(s) == "string" and #s <= 63 and s:find("^[%a_][%w_]*$") ~= nil
end

--- The table name of endpoint `e`: its api name when the bare name means
-- it (`cdr_1`), else family_api (`real_time_agents`).
function M.table_name(e)
    local bare = registry.bare(e.api)
    local name = bare == e and e.api or (e.family .. "_" .. e.api)
    return (name:gsub("[^%w_]", "_"))
end

--- The schema of endpoint `e` for a destination: `table`, `endpoint`,
-- `kind`, `merge` (`MERGE`, or `opts.merge`), `columns` (the endpoint's,
-- then the destination's own, whose names start with "_"), `key` (the
-- column a row is merged on, upsert only).  Nil and why for an endpoint
-- that gives no rows to keep.
-- @tparam table e a registry entry
-- @tparam[opt] table opts `table` (a name), `merge`
function M.of(e, opts)
    opts = opts or {}
    local merge = opts.merge or M.MERGE[e.kind]
    if not merge then
        return nil, e.name .. " (" .. tostring(e.kind) .. ") is not a report: it gives no rows a table can keep"
    end
    local cols = M.columns(e)
    local s = { table = opts.table or M.table_name(e), endpoint = e.name, kind = e.kind, merge = merge,
        columns = cols }
    if merge == "upsert" then
        s.key = M.row_key(e)
        if not s.key then
            -- No field identifies a row: its content does.
            s.key = "_row"
            cols[#cols + 1] = { name = "_row", type = "text", own = true }
        end
    elseif merge == "period" then
        cols[#cols + 1] = { name = "_period_start", type = "timestamp", own = true }
        cols[#cols + 1] = { name = "_period_end", type = "timestamp", own = true }
    elseif merge == "append" then
        cols[#cols + 1] = { name = "_taken_at", type = "timestamp", own = true }
    end
    -- Values that did not fit their column, as sent (a JSON object).
    cols[#cols + 1] = { name = "_unfit", type = "json", own = true }
    return s
end

-- JSON Schema of each type (every value may be null: "-" and "" are).
local JSON_TYPES = {
    integer = { type = { "integer", "null" } },
    decimal = { type = { "number", "null" } },
    duration = { type = { "integer", "null" }, description = "seconds" },
    percent = { type = { "number", "null" }, description = "percent (34.5 is 34.5 %)" },
    timestamp = { type = { "string", "null" }, format = "date-time" },
    text = { type = { "string", "null" } },
}

--- The JSON Schema (draft 7) of the rows of schema `s`, as Singer's SCHEMA
-- message carries it: the endpoint's fields with their types (the
-- destination's own "_" columns left out), `key_properties` beside.
function M.json_schema(s)
    local props = {}
    for _, c in ipairs(s.columns) do
        if not c.own then
            local t = JSON_TYPES[c.type] or {}
            local p = {}
            for k, v in pairs(t) do
                p[k] = v
            end
            props[c.name] = p
        end
    end
    return { type = "object", properties = props, additionalProperties = true }
end

local function offset_text(offset)
    local sign = offset < 0 and "-" or "+"
    offset = abs(offset)
    return format("%s%02d:%02d", sign, floor(offset / 3600), floor(offset % 3600 / 60))
end

--- Wall time `t` (seconds, the operation's clock) as stored: ISO 8601
-- with the offset of that clock ("2026-01-05 10:00:00-05:00"), which
-- PostgreSQL's timestamptz reads as its UTC moment and SQLite's date
-- functions turn to UTC.
function M.timestamp(t, offset)
    return dates.iso(t) .. offset_text(offset or 0)
end

local function integer(n)
    if type(n) ~= "number" or n ~= floor(n) or abs(n) >= 2 ^ 53 then
        return nil
    end
    return tointeger and tointeger(n) or n
end

-- A decimal with optional thousands separators ("1,234.5").
local function decimal(s)
    local n = coerce.number(s)
    if n == nil and s:find(",", 1, true) then
        n = coerce.percent(s .. "%")
    end
    if n == nil and s:find("^%-?0%d*%.?%d*$") then
        n = tonumber(s)    -- "0.58", "007.5": a leading zero is still a number here
    end
    return n
end

local CONVERT = {
    integer = function(s)
        local n = decimal(s)
        return n and integer(n)
    end,
    decimal = decimal,
    duration = function(s)
        return coerce.duration(s) or (s:find("^%-?%d+$") and integer(tonumber(s)))
    end,
    percent = function(s)
        return coerce.percent(s) or decimal(s)
    end,
}

--- The value `v` of a field of type `ty` as stored (a number or a string),
-- on a clock `offset` seconds east of UTC; nil for no value ("", "-",
-- "--", JSON null); nil and "unfit" when `v` is not of that type.
function M.value(ty, v, offset)
    if v == nil or v == "" or v == "-" or v == "--" then
        return nil
    end
    if ty == "json" then
        return v
    end
    local tv = type(v)
    if tv == "table" or tv == "boolean" then
        return nil, "unfit"
    end
    local s = tv == "number" and format("%.17g", v) or v
    if tv == "number" and v == floor(v) and abs(v) < 2 ^ 53 then
        s = format("%d", v)
    end
    if s:find("\0", 1, true) then
        return nil, "unfit"   -- no database text holds a NUL: kept as JSON, escaped
    end
    if ty == "text" then
        return s
    elseif ty == "timestamp" then
        local t = dates.parse(s)
        if not t then
            return nil, "unfit"
        end
        return M.timestamp(t, offset)
    end
    local n = CONVERT[ty](s)
    if n == nil then
        return nil, "unfit"
    end
    return n
end

return M
