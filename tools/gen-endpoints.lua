#!/usr/bin/env lua5.4
-- Writes lua/wolkvox/api/endpoints.lua, the project's endpoint registry, from the
-- facts of the wolkvox API catalog the project keeps in
-- data/wolkvox-api/catalog.json (gathered from the vendor's public pages).
--
--   lua5.4 tools/gen-endpoints.lua [-o lua/wolkvox/api/endpoints.lua] [catalog.json]
--
-- The whole output is made before anything is written; with -o it goes to
-- a temporary file renamed over the target, so a failed run (a missing
-- catalog, a bad override) leaves the registry as it was.  Without -o it is
-- printed (never redirect it onto the registry itself: the shell empties the
-- file before this runs).
--
-- The registry keeps only what the library acts on: method, query parameters,
-- body, kind, date range, split boundary, quota, special limits, data shape,
-- fields (for the fake server and CSV columns) and a title.  Decisions the
-- catalog leaves open are made in OVERRIDES below, each with its reason.

local cjson = require "cjson"

local out_path, path
do
    local i = 1
    while arg[i] do
        if arg[i] == "-o" then
            out_path, i = arg[i + 1], i + 2
        else
            path, i = arg[i], i + 1
        end
    end
    path = path or "data/wolkvox-api/catalog.json"
end
local f = assert(io.open(path, "rb"))
local catalog = cjson.decode(f:read("a"))
f:close()
assert(type(catalog) == "table" and type(catalog.endpoints) == "table" and #catalog.endpoints > 0,
    path .. ": no endpoints in the catalog")

-- Per-endpoint facts added on purpose (key "family/api").
local OVERRIDES = {
    -- Documented upload limit: 10,000 records per call.
    ["campaign/add_record"] = { chunk = 10000,
        max_len = { opt1 = 100, opt2 = 100, opt3 = 100, opt4 = 100, opt5 = 100, opt6 = 100,
                    opt7 = 200, opt8 = 200, opt9 = 200, opt10 = 200, opt11 = 200, opt12 = 200 } },
    ["campaign/add_dnc"] = { chunk = 10000 },
    ["configuration/add_dnc"] = { chunk_field = "telephones", chunk = 10000 },
    ["configuration/remove_dnc"] = { chunk_field = "telephones", chunk = 10000 },
    -- upload_audio: at most 50 files per request, parts named file1, file2...
    -- (the vendor's Postman collection); others send several as "file[]".
    ["configuration/upload_audio"] = { max_parts = 50, part_names = "numbered" },
    -- campaign_15 answers its rows in a top-level records[] with a total.
    ["campaign/campaign_15"] = { data_key = "records", total_key = "total_records" },
    -- Multi-status answer with a result per file.
    ["wolkvox_storage/delete_files"] = { multi_status = true },
    -- Splitting drops rows: a record counts only when it and every attempt
    -- fall inside the range (catalog notes), so one call per range.
    ["reports_manager/campaign_3"] = { no_split = true },
    -- Rows include totals (type_of_row) that windows would repeat.
    ["reports_manager/campaign_5"] = { no_split = true },
    -- The vendor asks for a narrower range above 6,000 rows.
    ["reports_manager/diagram_9"] = { max_rows = 6000 },
    -- Paged lookups (catalog notes), for c:pages / c:all_pages: `cursor`
    -- says which parameter carries the cursor, `items` where a page's list
    -- is in `data` (a dotted path; a number indexes a list), and how the
    -- end shows: `next` (the next token; "" on the last page) or `last` (the
    -- number of the last page).  agent_chat documents no page parameter.
    ["wolkvox_storage/list_files"] = { cursor = "token", cursor_param = "page_token",
        cursor_next = "pagination.next_page_token", cursor_items = "items" },
    ["whatsapp/conversations_today_by_customer"] = { cursor = "page", cursor_param = "pagina_mensajes",
        cursor_last = "1.paginacion_mensajes.total_paginas", cursor_items = "1.conversacion" },
}

local function q(s)
    return string.format("%q", s)
end

local function list(t)
    local out = {}
    for i, v in ipairs(t) do
        out[i] = q(v)
    end
    return "{ " .. table.concat(out, ", ") .. " }"
end

-- Closed value lists only: a list holding a placeholder ("<skill id>") is open.
local function closed_values(values)
    if type(values) ~= "table" then
        return nil
    end
    for _, v in ipairs(values) do
        if type(v) ~= "string" or v:find("<", 1, true) then
            return nil
        end
    end
    return values
end

local function emit_query(query)
    local out = {}
    for _, p in ipairs(query) do
        local parts = { "name = " .. q(p.name) }
        if p.required then
            parts[#parts + 1] = "required = true"
        end
        if p.format == "YYYYmmddHHiiss" then
            parts[#parts + 1] = "date = true"
        end
        local values = closed_values(p.values)
        if values then
            parts[#parts + 1] = "values = " .. list(values)
        end
        out[#out + 1] = "{ " .. table.concat(parts, ", ") .. " }"
    end
    return "{ " .. table.concat(out, ", ") .. " }"
end

local function emit_body(body)
    if body == cjson.null or body == nil then
        return nil
    end
    local fields = {}
    for _, fld in ipairs(body.fields or {}) do
        local parts = { "name = " .. q(fld.name), "type = " .. q(fld.type or "string") }
        if fld.required == true then
            parts[#parts + 1] = "required = true"
        end
        fields[#fields + 1] = "{ " .. table.concat(parts, ", ") .. " }"
    end
    local s = "{ kind = " .. q(body.kind)
    if body.optional then
        s = s .. ", optional = true"
    end
    return s .. ", fields = { " .. table.concat(fields, ", ") .. " } }"
end

local function emit_overrides(o)
    local keys = {}
    for k in pairs(o) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    local out = {}
    for _, k in ipairs(keys) do
        local v = o[k]
        if type(v) == "table" then
            local inner, names = {}, {}
            for name in pairs(v) do
                names[#names + 1] = name
            end
            table.sort(names, function(a, b)
                local na, nb = tonumber(a:match("%d+$")), tonumber(b:match("%d+$"))
                if na and nb and a:gsub("%d+$", "") == b:gsub("%d+$", "") then
                    return na < nb
                end
                return a < b
            end)
            for _, name in ipairs(names) do
                inner[#inner + 1] = name .. " = " .. tostring(v[name])
            end
            out[#out + 1] = k .. " = { " .. table.concat(inner, ", ") .. " }"
        elseif type(v) == "string" then
            out[#out + 1] = k .. " = " .. q(v)
        else
            out[#out + 1] = k .. " = " .. tostring(v)
        end
    end
    return table.concat(out, ", ")
end

-- Everything goes into `chunks` first; nothing is written until it is whole.
local chunks = {}
local w = { write = function(_, text) chunks[#chunks + 1] = text end }
w:write("-- The wolkvox API v2 endpoint registry: one entry per (family, api).\n")
w:write("-- Generated by tools/gen-endpoints.lua from data/wolkvox-api/catalog.json;\n")
w:write("-- change the generator (its OVERRIDES) and run it again rather than editing.\n")
w:write("-- Entry keys: family, api, method, kind (detail, aggregate, snapshot, lookup,\n")
w:write("-- action), dates (takes date_ini/date_end), free (quota-free), split (the only\n")
w:write("-- safe split boundary of a bucketed detail report), max_hours, shape (of\n")
w:write("-- `data`), code (JSON type of `code` in the vendor example), title, query,\n")
w:write("-- body, fields; and the OVERRIDES keys chunk (items per call), chunk_field,\n")
w:write("-- max_len, max_parts, part_names, multi_status, no_split (one call per range),\n")
w:write("-- max_rows, data_key and total_key (where the rows are in the answer),\n")
w:write("-- cursor (\"token\" or \"page\": a paged lookup), cursor_param, cursor_next,\n")
w:write("-- cursor_last and cursor_items (see wolkvox.api.pages); time_field (the field\n")
w:write("-- holding a row's time: a detail report split anywhere with a field \"date\",\n")
w:write("-- unless an override names another) and row_key (the field that identifies\n")
w:write("-- a row of a detail report, for sync: \"conn_id\" where it has one).\n")
w:write("return {\n")
local families, seen = {}, {}
for _, e in ipairs(catalog.endpoints) do
    if not seen[e.family] then
        seen[e.family] = true
        families[#families + 1] = e.family
    end
end
w:write("families = " .. list(families) .. ",\n")
w:write("endpoints = {\n")
for _, e in ipairs(catalog.endpoints) do
    local key = e.family .. "/" .. e.api
    local parts = {
        "family = " .. q(e.family), "api = " .. q(e.api), "method = " .. q(e.method),
        "kind = " .. q(e.kind),
    }
    if e.date_range then
        parts[#parts + 1] = "dates = true"
    end
    if e.quota_free then
        parts[#parts + 1] = "free = true"
    end
    if e.split_boundary ~= cjson.null and e.split_boundary then
        parts[#parts + 1] = "split = " .. q(e.split_boundary)
    end
    if e.max_range_hours then
        parts[#parts + 1] = "max_hours = " .. math.tointeger(e.max_range_hours)
    end
    parts[#parts + 1] = "shape = " .. q(e.data_shape)
    if e.example_code_type ~= cjson.null then
        parts[#parts + 1] = "code = " .. q(e.example_code_type)
    end
    parts[#parts + 1] = "title = " .. q(e.title)
    local o = OVERRIDES[key]
    -- The field holding a row's time, where the catalog's field list shows
    -- one: a detail report split anywhere (not by buckets, not one call per
    -- range) with a field named "date".  Window sizing reads it; an
    -- override may name another field.
    if e.kind == "detail" and e.date_range and not (e.split_boundary ~= cjson.null and e.split_boundary)
            and not (o and (o.no_split or o.time_field)) then
        for _, name in ipairs(e.fields) do
            if name == "date" then
                parts[#parts + 1] = "time_field = \"date\""
                break
            end
        end
    end
    -- The field that identifies a row of a detail report (sync drops rows
    -- it delivered before by it): "conn_id", the call's id, where the
    -- catalog's field list has it; an override may name another.
    if e.kind == "detail" and not (o and o.row_key) then
        for _, name in ipairs(e.fields) do
            if name == "conn_id" then
                parts[#parts + 1] = "row_key = \"conn_id\""
                break
            end
        end
    end
    if o then
        parts[#parts + 1] = emit_overrides(o)
        OVERRIDES[key] = nil
    end
    w:write("{ " .. table.concat(parts, ", ") .. ",\n")
    w:write("  query = " .. emit_query(e.query) .. ",\n")
    local body = emit_body(e.body)
    if body then
        w:write("  body = " .. body .. ",\n")
    end
    w:write("  fields = " .. list(e.fields) .. " },\n")
end
w:write("},\n}\n")
local left = next(OVERRIDES)
if left then
    error("override for an endpoint the catalog does not have: " .. left)
end
local text = table.concat(chunks)
if out_path then
    local tmp = out_path .. ".tmp"
    local o = assert(io.open(tmp, "wb"))
    assert(o:write(text))
    assert(o:close())
    assert(os.rename(tmp, out_path))
else
    assert(io.stdout:write(text))
end
