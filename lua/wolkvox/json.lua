--- A JSON encoder for request bodies.
-- Why not cjson.encode: Debian's lua-cjson (2.1.0) cannot tell an empty list
-- from an empty object (both become `{}`), prints numbers with 14 digits, and
-- orders keys by hash.  Bodies here are small; this encoder writes lists as
-- lists (`M.array` marks an empty one), integers in full, and keys sorted, so
-- a body is the same bytes every time.
-- @module wolkvox.json

local type, pairs, tostring, format, concat, sort, floor, next, getmetatable, setmetatable =
    type, pairs, tostring, string.format, table.concat, table.sort, math.floor, next,
    getmetatable, setmetatable

local M = {}

local ARRAY = {}

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
    end
    error("cannot encode a " .. t .. " in JSON", 0)
end

--- Encode `v` (strings, numbers, booleans, tables); raises a message on
-- values JSON cannot hold.
function M.encode(v)
    return encode(v, {})
end

return M
