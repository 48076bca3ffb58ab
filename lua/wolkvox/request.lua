--- Turning an endpoint and the caller's parameters into an HTTP request.
-- Everything a documented rule forbids is refused here, with a `params`
-- error, before a call is spent.
-- @module wolkvox.request

local errors = require "wolkvox.errors"

local type, pairs, ipairs, concat, sort, format, floor =
    type, pairs, ipairs, table.concat, table.sort, string.format, math.floor

local M = {}

local function refuse(e, msg)
    errors.throw("params", { endpoint = e.name, message = msg })
end

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
        if v == floor(v) and v >= -2^53 and v <= 2^53 then
            return format("%d", v)
        end
        return format("%.17g", v)
    end
    return nil
end

local function query_spec(e, name)
    for _, p in ipairs(e.query) do
        if p.name == name then
            return p
        end
    end
end

local function allowed_names(e)
    local names = {}
    for _, p in ipairs(e.query) do
        names[#names + 1] = p.name
    end
    return #names > 0 and concat(names, ", ") or "none"
end

--- Build the query string of `e` from `params` (a table of name = value).
-- @treturn string "api=...&name=value..." in a stable order
function M.query(e, params, unchecked)
    local pairs_out = {}
    for name, value in pairs(params) do
        if type(name) ~= "string" then
            refuse(e, "parameter names must be strings")
        end
        local spec = query_spec(e, name)
        if not spec and not unchecked then
            refuse(e, "unknown parameter '" .. name .. "' (accepted: " .. allowed_names(e) .. ")")
        end
        local text = M.text(value)
        if text == nil then
            refuse(e, "parameter '" .. name .. "' must be a string or a number (got " .. type(value) .. ")")
        end
        if spec and spec.values then
            local ok = false
            for _, v in ipairs(spec.values) do
                if v == text then
                    ok = true
                    break
                end
            end
            if not ok then
                refuse(e, "parameter '" .. name .. "' must be one of " .. concat(spec.values, ", ")
                    .. " (got '" .. text .. "')")
            end
        end
        pairs_out[#pairs_out + 1] = name .. "=" .. M.escape(text)
    end
    if not unchecked then
        for _, p in ipairs(e.query) do
            if p.required and params[p.name] == nil then
                refuse(e, "missing required parameter '" .. p.name .. "'")
            end
        end
    end
    sort(pairs_out)
    table.insert(pairs_out, 1, "api=" .. M.escape(e.api))
    return concat(pairs_out, "&")
end

--- The request table for the transport.
-- @tparam table e the endpoint (registry entry, or an ad-hoc one for unchecked calls)
-- @tparam string base_url
-- @tparam table params query parameters
-- @tparam[opt] boolean unchecked skip the registry's rules
function M.build(e, base_url, params, unchecked)
    if params == nil then
        params = {}
    elseif type(params) ~= "table" then
        refuse(e, "parameters must be a table (got " .. type(params) .. ")")
    end
    return {
        method = e.method,
        url = base_url .. "/api/v2/" .. e.family .. ".php?" .. M.query(e, params, unchecked),
        -- A write goes on a new connection: libcurl re-sends a request by
        -- itself when a reused one dies, and a send must not happen twice.
        fresh = e.kind == "action" or nil,
    }
end

return M
