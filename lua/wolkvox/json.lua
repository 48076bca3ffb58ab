--- A JSON encoder for request bodies.
-- Why not cjson.encode: Debian's lua-cjson (2.1.0) cannot tell an empty list
-- from an empty object (both become `{}`), prints numbers with 14 digits, and
-- orders keys by hash.  Bodies here are small; this encoder writes lists as
-- lists (`M.array` marks an empty one), integers in full, and keys sorted, so
-- a body is the same bytes every time.
-- @module wolkvox.json

local type, pairs, ipairs, tostring, format, concat, sort, floor, next, getmetatable, setmetatable, pcall,
    require = type, pairs, ipairs, tostring, string.format, table.concat, table.sort, math.floor, next,
    getmetatable, setmetatable, pcall, require

local M = {}

local ARRAY = {}

-- The decoder's JSON null (a light userdata, where a null stands in a list);
-- lua-cjson's is the same NULL pointer.
local NULL, json_row
do
    local ok, core = pcall(require, "wolkvox.core")
    NULL = ok and type(core) == "table" and core.null or nil
    -- The C encoder of a flat row (src/rowjson.c): the same bytes as
    -- encode_row below, about 13x faster; nil for a row it leaves to it.
    json_row = ok and type(core) == "table" and core.json_row or nil
end

--- The decoder's JSON null (`wolkvox.core.null`; nil without the C core):
-- a null where it stands in a list, and what writers take for one.
M.null = NULL

--- Mark table `t` as a JSON array (so an empty one encodes as `[]`).
function M.array(t)
    return setmetatable(t or {}, ARRAY)
end

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
    ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function string_(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        return ESCAPES[c] or format("\\u%04x", c:byte())
    end) .. '"'
end

-- The length of `t` when it is a list 1..n, else nil.
local function list_length(t)
    local n = 0
    for k in pairs(t) do
        if type(k) ~= "number" or k < 1 or k ~= floor(k) then
            return nil
        end
        if k > n then
            n = k
        end
    end
    for i = 1, n do
        if t[i] == nil then
            return nil
        end
    end
    return n
end

local encode

local function table_(t, seen)
    if seen[t] then
        error("cannot encode a table that contains itself", 0)
    end
    seen[t] = true
    local out
    local n = list_length(t)
    if n and (n > 0 or getmetatable(t) == ARRAY) then
        out = {}
        for i = 1, n do
            out[i] = encode(t[i], seen)
        end
        out = "[" .. concat(out, ",") .. "]"
    elseif next(t) == nil then
        out = "{}"
    else
        local keys = {}
        for k in pairs(t) do
            if type(k) ~= "string" then
                error("cannot encode a table with mixed or non-string keys", 0)
            end
            keys[#keys + 1] = k
        end
        sort(keys)
        out = {}
        for i, k in ipairs(keys) do
            out[i] = string_(k) .. ":" .. encode(t[k], seen)
        end
        out = "{" .. concat(out, ",") .. "}"
    end
    seen[t] = nil
    return out
end

encode = function(v, seen)
    local t = type(v)
    if t == "string" then
        return string_(v)
    elseif t == "number" then
        if v ~= v or v == math.huge or v == -math.huge then
            error("cannot encode " .. tostring(v) .. " in JSON", 0)
        end
        if v == floor(v) and v >= -2^53 and v <= 2^53 then
            return format("%d", v)
        end
        return format("%.17g", v)
    elseif t == "boolean" then
        return tostring(v)
    elseif t == "table" then
        return table_(v, seen)
    elseif v ~= nil and v == NULL then
        return "null"
    end
    error("cannot encode a " .. t .. " in JSON", 0)
end

--- Encode `v` (strings, numbers, booleans, tables, and the decoder's null
-- `wolkvox.core.null`); raises a message on values JSON cannot hold.
function M.encode(v)
    return encode(v, {})
end

-- Where in `v` the first value JSON cannot hold is: its path ("a", "a[2]")
-- and what it is; nil when there is none.
local function culprit(v, path, seen)
    local t = type(v)
    if t == "number" then
        if v ~= v or v == math.huge or v == -math.huge then
            return path, tostring(v)
        end
    elseif t == "table" then
        if seen[v] then
            return path, "a table that contains itself"
        end
        seen[v] = true
        for k, x in pairs(v) do
            local sub = type(k) == "number" and (path .. "[" .. tostring(k) .. "]")
                or (path == "" and tostring(k) or (path .. "." .. tostring(k)))
            local p, what = culprit(x, sub, seen)
            if p then
                return p, what
            end
        end
        seen[v] = nil
    elseif t ~= "string" and t ~= "boolean" and not (v ~= nil and v == NULL) then
        return path, "a " .. t
    end
    return nil
end

--- Encode a row of an answer for an output (NDJSON, a JSON array): the
-- text, or nil and a message naming the field JSON cannot hold, never a
-- raise.  A number the decoder read as infinite (the server sent more
-- digits than a Lua number holds: its text is lost by then) is such a
-- field: writing `inf`, `null` or a rounded number would change the data
-- without a word.
-- @return the text, or nil and a message
function M.encode_row(row)
    local text = json_row and type(row) == "table" and json_row(row)
    if text then
        return text
    end
    local ok
    ok, text = pcall(encode, row, {})
    if ok then
        return text
    end
    local path, what = culprit(row, "", {})
    if path and (what == "inf" or what == "-inf" or what:find("nan")) then
        return nil, "field '" .. path .. "' cannot be written as JSON: the server sent a number "
            .. "beyond what a Lua number holds (it was read as " .. what .. ", its digits are lost)"
    elseif path then
        return nil, "field '" .. path .. "' cannot be written as JSON: it is " .. what
    end
    return nil, "the row cannot be written as JSON: " .. tostring(text)
end

return M
