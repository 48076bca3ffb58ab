--- Turning an endpoint and the caller's parameters into HTTP requests.
-- Everything a documented rule forbids is refused here, with a `params`
-- error, before a call is spent.
--
-- One table carries everything: query parameters and body fields by their
-- API names (a name the registry lists in both places goes to both, which
-- covers the two documented forms of `list_templates` and
-- `speech_on_demand`), plus `body` (a whole JSON body), `records` (the list
-- of a JSON-array upload) and `file` / `files` (multipart uploads: a path, or
-- `{ path | data, filename, content_type, name }`).
-- @module wolkvox.api.request

local dates = require "wolkvox.dates"
local errors = require "wolkvox.errors"
local json = require "wolkvox.json"
local registry = require "wolkvox.api.registry"

local type, pairs, ipairs, tostring, tonumber, concat, sort, format, floor, open =
    type, pairs, ipairs, tostring, tonumber, table.concat, table.sort, string.format, math.floor, io.open

local M = {}


local refuse = errors.refuse

--- Percent-encode a query value (RFC 3986 unreserved characters stay).
function M.escape(s)
    return (s:gsub("[^%w%-%._~]", function(c)
        return format("%%%02X", c:byte())
    end))
end

--- A parameter value as the API wants it: text.  Integral numbers lose the
-- ".0" that Lua 5.4 would print for floats.
function M.text(v)
    local t = type(v)
    if t == "string" then
        return v
    elseif t == "number" then
        if v == floor(v) and v >= -2 ^ 53 and v <= 2 ^ 53 then
            return format("%d", v)
        end
        return format("%.17g", v)
    end
    return nil
end

--- Characters of UTF-8 text (bytes that start a character).
function M.chars(s)
    local _, n = s:gsub("[^\128-\191]", "")
    return n
end

-- Lookup tables of an endpoint's names, built once: `query` (query
-- parameters), `body` (body fields), `top` (every name a caller may pass at
-- the top of the parameter table) and `list` (the same, for messages).
local function names(e)
    local n = e._names
    if n then
        return n
    end
    n = { query = {}, body = {}, top = {}, list = {} }
    local function accept(name)
        if not n.top[name] then
            n.top[name] = true
            n.list[#n.list + 1] = name
        end
    end
    for _, p in ipairs(e.query or {}) do
        n.query[p.name] = p
        accept(p.name)
    end
    local b = e.body
    if b then
        for _, f in ipairs(b.fields) do
            n.body[f.name] = f
            -- Record fields live inside `records`, file fields in `file(s)`.
            if b.kind == "json_object" or (b.kind == "multipart" and f.type ~= "file") then
                accept(f.name)
            end
        end
        if b.kind == "json_array" then
            accept("records")
        elseif b.kind == "multipart" then
            accept("file")
            accept("files")
        end
        if b.kind ~= "multipart" then
            accept("body")
        end
    end
    e._names = n
    return n
end

local function accepted(e)
    local list = names(e).list
    return #list > 0 and concat(list, ", ") or "none"
end

-- The body fields of `e`, in the registry's order, for messages.
local function field_list(e)
    local list = {}
    for _, f in ipairs(e.body and e.body.fields or {}) do
        list[#list + 1] = f.name
    end
    return #list > 0 and concat(list, ", ") or "none"
end

-- ---- query --------------------------------------------------------------

local function query_value(e, spec, name, value, utc_offset)
    if spec and spec.date then
        local wall, why = dates.parse(value, name == "date_end", utc_offset)
        if not wall then
            refuse(e, "parameter '" .. name .. "': " .. why)
        end
        return dates.format(wall)
    end
    local text = M.text(value)
    if text == nil then
        refuse(e, "parameter '" .. name .. "' must be a string or a number (got " .. type(value) .. ")")
    end
    if spec and spec.values then
        for _, v in ipairs(spec.values) do
            if v == text then
                return text
            end
        end
        refuse(e, "parameter '" .. name .. "' must be one of " .. concat(spec.values, ", ")
            .. " (got '" .. text .. "')")
    end
    return text
end

--- The query string for `e` and `params`: "api=...&name=value" in a stable order.
function M.query(e, params, opts)
    local n, unchecked = names(e), opts and opts.unchecked
    local items = {}
    for name, value in pairs(params) do
        if type(name) ~= "string" then
            refuse(e, "parameter names must be strings (got " .. type(name) .. ")")
        end
        local spec = n.query[name]
        local known = n.top[name]
        if not known and not unchecked then
            refuse(e, "unknown parameter '" .. name .. "'" .. registry.suggest(name, n.top)
                .. " (accepted: " .. accepted(e) .. ")")
        end
        if spec or (not known and unchecked and name ~= "body") then
            -- Names are escaped like values: an unchecked "x&api" must not
            -- smuggle a second api=, nor a "#" cut the query.
            items[#items + 1] = M.escape(name) .. "="
                .. M.escape(query_value(e, spec, name, value, opts and opts.utc_offset))
        end
    end
    if not unchecked then
        local dated = opts and opts.dated
        for _, p in ipairs(e.query or {}) do
            if p.required and params[p.name] == nil
                and not (dated and (p.name == "date_ini" or p.name == "date_end")) then
                refuse(e, "missing required parameter '" .. p.name .. "'")
            end
        end
    end
    sort(items)
    table.insert(items, 1, "api=" .. M.escape(e.api))
    return concat(items, "&")
end

-- ---- JSON bodies ----------------------------------------------------------

local function field_value(e, f, value, where)
    local t = f.type
    if t == "string" then
        local text = M.text(value)
        if text == nil then
            refuse(e, where .. " must be a string (got " .. type(value) .. ")")
        end
        return text
    elseif t == "integer" then
        local n = tonumber(value)
        if n == nil or n ~= floor(n) then
            refuse(e, where .. " must be a whole number")
        end
        return n
    elseif t == "array" then
        if type(value) ~= "table" then
            refuse(e, where .. " must be a list (got " .. type(value) .. ")")
        end
        return json.array(value)
    elseif t == "object" then
        if type(value) ~= "table" then
            refuse(e, where .. " must be a table (got " .. type(value) .. ")")
        end
        return value
    end
    return value
end

local function check_lengths(e, record, where)
    for name, limit in pairs(e.max_len or {}) do
        local v = record[name]
        if type(v) == "string" and M.chars(v) > limit then
            refuse(e, format("%s: '%s' has %d characters, the API takes at most %d",
                where, name, M.chars(v), limit))
        end
    end
end

--- True when `name` is a parameter or body field of `e` (such a name is
-- sent to the API even where the range helpers use it too: add_interaction
-- has fields "from", "to" and "body").
function M.takes(e, name)
    return names(e).top[name] == true or names(e).body[name] ~= nil
end

local function object_body(e, params, unchecked)
    local n = names(e)
    if params.body ~= nil and not n.body.body then
        if type(params.body) ~= "table" then
            refuse(e, "'body' must be a table")
        end
        return params.body
    end
    local obj, any = {}, false
    for name, value in pairs(params) do
        local f = n.body[name]
        if f then
            obj[name] = field_value(e, f, value, "field '" .. name .. "'")
            any = true
        end
    end
    if not unchecked then
        for _, f in ipairs(e.body.fields) do
            if f.required and obj[f.name] == nil then
                refuse(e, "missing required field '" .. f.name .. "'")
            end
        end
    end
    if not any and e.body.optional then
        return nil
    end
    return obj
end

local function check_records(e, records, unchecked, first)
    local n = names(e)
    for i, record in ipairs(records) do
        local where = "record " .. (first + i - 1)
        if type(record) ~= "table" then
            refuse(e, where .. " must be a table")
        end
        for name, value in pairs(record) do
            local f = n.body[name]
            if not f and not unchecked then
                refuse(e, where .. ": unknown field '" .. tostring(name) .. "'"
                    .. (type(name) == "string" and registry.suggest(name, n.body) or "")
                    .. " (accepted: " .. field_list(e) .. ")")
            end
            if f then
                field_value(e, f, value, where .. " field '" .. name .. "'")
            end
        end
        check_lengths(e, record, where)
    end
end

local function array_body(e, params, unchecked)
    local records = params.records or params.body
    if type(records) ~= "table" or records[1] == nil then
        refuse(e, "'records' must be a non-empty list of records")
    end
    check_records(e, records, unchecked, 1)
    return records
end

-- ---- multipart ------------------------------------------------------------

-- A part's name, filename and content type end up in its headers
-- (Content-Disposition: form-data; name="..."; filename="..."): a CR or LF
-- would start another header, a quote would end the value early.  Both
-- transports refuse them too (as a raised error): here they are a params
-- error, before any call.
local function header_text(e, what, v)
    if v == nil then
        return nil
    end
    if type(v) ~= "string" then
        refuse(e, "a file's " .. what .. " must be a string (got " .. type(v) .. ")")
    end
    if v:find('[%c"]') then
        refuse(e, "a file's " .. what .. " must not contain control characters or double quotes")
    end
    return v
end

local function file_part(e, spec, default_name)
    if type(spec) == "string" then
        spec = { path = spec }
    end
    if type(spec) ~= "table" then
        refuse(e, "a file must be a path or a table { path | data, filename, content_type }")
    end
    local part = { name = header_text(e, "name", spec.name) or default_name,
        filename = header_text(e, "filename", spec.filename),
        content_type = header_text(e, "content_type", spec.content_type) }
    if spec.path then
        if type(spec.path) ~= "string" then
            refuse(e, "a file's path must be a string (got " .. type(spec.path) .. ")")
        end
        local f = open(spec.path, "rb")
        if not f then
            refuse(e, "cannot read file '" .. spec.path .. "'")
        end
        f:close()
        part.path = spec.path
        if not part.filename then
            local base = spec.path:match("([^/\\]+)$") or ""
            if base:find('[%c"]') then
                refuse(e, "the file name '" .. base:gsub("%c", "?") .. "' holds a control character or a "
                    .. "double quote: pass filename = ... for the upload")
            end
            part.filename = base
        end
    elseif type(spec.data) == "string" then
        part.data = spec.data
        part.filename = part.filename or "upload"
    else
        refuse(e, "a file needs 'path' or 'data'")
    end
    return part
end

local function multipart(e, params)
    local files = params.files
    if params.file ~= nil then
        if files ~= nil then
            refuse(e, "pass 'file' or 'files', not both")
        end
        files = { params.file }
    end
    if type(files) ~= "table" or files[1] == nil then
        refuse(e, "a file to upload is needed: file = path (or files = { ... })")
    end
    if e.max_parts and #files > e.max_parts then
        refuse(e, format("%d files given; the API takes at most %d per call", #files, e.max_parts))
    end
    local parts = {}
    for i, spec in ipairs(files) do
        local name = "file"
        if #files > 1 then
            -- "file[]" as storage documents it, or file1, file2... (upload_audio).
            name = e.part_names == "numbered" and ("file" .. i) or "file[]"
        end
        parts[i] = file_part(e, spec, name)
    end
    for name, f in pairs(names(e).body) do
        if f.type ~= "file" and params[name] ~= nil then
            parts[#parts + 1] = { name = name, data = field_value(e, f, params[name], "field '" .. name .. "'") }
        end
    end
    return parts
end

-- ---- requests ---------------------------------------------------------------

local function check_table(e, params)
    if params == nil then
        return {}
    elseif type(params) ~= "table" then
        refuse(e, "parameters must be a table (got " .. type(params) .. ")")
    end
    return params
end

local function base_request(e, base_url, params, opts)
    return {
        method = e.method,
        url = base_url .. "/api/v2/" .. e.family .. ".php?" .. M.query(e, params, opts),
        -- A write goes on a new connection: libcurl re-sends a request by
        -- itself when a reused one dies, and a send must not happen twice.
        fresh = e.kind == "action" or nil,
    }
end

local function encode_body(e, value)
    local ok, text = pcall(json.encode, value)
    if not ok then
        refuse(e, "the body cannot be sent as JSON: " .. tostring(text))
    end
    return text
end

--- The request for one call of `e`.
-- @tparam table e the endpoint (registry entry, or an ad-hoc one for unchecked calls)
-- @tparam string base_url
-- @tparam table params see the module description
-- @tparam[opt] table opts `unchecked` (skip the registry's rules), `utc_offset`,
--   `dated` (the dates come later, through `dated`, window by window)
function M.build(e, base_url, params, opts)
    params = check_table(e, params)
    local unchecked = opts and opts.unchecked
    local req = base_request(e, base_url, params, opts)
    local b = e.body
    if b == nil then
        if params.body ~= nil then
            req.body = encode_body(e, params.body) -- only reached when unchecked
        end
    elseif b.kind == "multipart" then
        req.parts = multipart(e, params)
    elseif b.kind == "json_array" then
        req.body = encode_body(e, json.array(array_body(e, params, unchecked)))
    else
        local obj = object_body(e, params, unchecked)
        if obj ~= nil then
            req.body = encode_body(e, obj)
        end
    end
    return req
end

--- The request `tpl` (from `build` with `dated = true`) for the window
-- `from` .. `to` (wall-clock seconds): its dates added, nothing checked again.
function M.dated(tpl, from, to)
    local req = {}
    for k, v in pairs(tpl) do
        req[k] = v
    end
    req.url = tpl.url .. "&date_ini=" .. dates.format(from) .. "&date_end=" .. dates.format(to)
    return req
end

--- True when `e` uploads in chunks (a JSON-array or list field of `chunk` items).
function M.chunked(e)
    return e.chunk ~= nil
end

--- The requests of a chunked upload: one per `e.chunk` items, each with the
-- 1-based `first` and `last` item it carries.
function M.build_chunks(e, base_url, params, opts)
    params = check_table(e, params)
    local unchecked = opts and opts.unchecked
    local size = e.chunk
    local list, field
    if e.body.kind == "json_array" then
        list = array_body(e, params, unchecked)
    else
        field = e.chunk_field
        local obj = object_body(e, params, unchecked) or {}
        list = obj[field]
        if type(list) ~= "table" or list[1] == nil then
            refuse(e, "'" .. field .. "' must be a non-empty list")
        end
    end
    local out = {}
    local base = base_request(e, base_url, params, opts)
    for first = 1, #list, size do
        local last = math.min(first + size - 1, #list)
        local slice = {}
        for i = first, last do
            slice[#slice + 1] = list[i]
        end
        local body
        if field then
            local obj = {}
            for k, v in pairs(object_body(e, params, unchecked) or {}) do
                obj[k] = v
            end
            obj[field] = json.array(slice)
            body = obj
        else
            body = json.array(slice)
        end
        out[#out + 1] = {
            first = first, last = last,
            req = { method = base.method, url = base.url, fresh = base.fresh, body = encode_body(e, body) },
        }
    end
    return out
end

return M
