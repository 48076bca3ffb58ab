--- The client object: one operation (server + token), one transport.
-- Methods: one per endpoint (`c:services()`, `c.real_time:agents()`),
-- `c:call(family, api, params)` for any endpoint, `c:stats()`, `c:close()`.
-- Every method returns `data, meta` or `nil, err` (see `wolkvox.errors`).
-- @module wolkvox.client

local errors = require "wolkvox.errors"
local options = require "wolkvox.options"
local registry = require "wolkvox.registry"
local request = require "wolkvox.request"
local response = require "wolkvox.response"

local type, pcall, error, setmetatable, rawget, rawset, tostring, format =
    type, pcall, error, setmetatable, rawget, rawset, tostring, string.format

local M = {}

local Client = {}
local Family = {}

local function open_transport(opts, token)
    local name = opts.transport or "curl"
    if name ~= "curl" then
        errors.throw("params", { message = "unknown transport '" .. tostring(name) .. "'" })
    end
    local curl = require "wolkvox.transport.curl"
    return curl.new(opts, token)
end

-- The one path every call takes: validate, send, read the answer.
local function invoke(self, e, params, unchecked)
    if self._closed then
        errors.throw("closed", { endpoint = e.name, message = "the client is closed" })
    end
    local req = request.build(e, self._base_url, params, unchecked)
    local res = self._transport:request(req)
    -- Every send may cost a call of the quota (libcurl re-sends once on a
    -- keep-alive connection that died).
    self._calls = self._calls + (res.sends or 1)
    self._bytes = self._bytes + (res.bytes or 0)
    return response.interpret(res, e)
end
local invoke_protected = errors.protect(invoke)

-- Method functions are shared by all clients: made once per endpoint.
local methods = {}
local function method_for(e)
    local f = methods[e]
    if f == nil then
        f = function(self, params)
            return invoke_protected(self, e, params)
        end
        methods[e] = f
    end
    return f
end

local function index(self, key)
    local m = Client[key]
    if m ~= nil then
        return m
    end
    if registry.is_family(key) then
        local fam = setmetatable({ _client = self, _family = key }, Family)
        rawset(self, key, fam)
        return fam
    end
    local e = registry.bare(key)
    if e then
        return method_for(e)
    end
    return nil
end

Family.__index = function(fam, api)
    local e = registry.find(rawget(fam, "_family"), api)
    if e == nil then
        return nil
    end
    local f = method_for(e)
    return function(_, params)
        return f(rawget(fam, "_client"), params)
    end
end

Family.__tostring = function(fam)
    return "wolkvox family " .. rawget(fam, "_family")
end

--- Call any endpoint.
-- @tparam string family e.g. "information"
-- @tparam string api e.g. "services"
-- @tparam[opt] table params query parameters
-- @tparam[opt] table opts `unchecked = true` sends an endpoint or a parameter
--   the registry does not know (a newer API), skipping its rules
-- @return data, meta; or nil, err
Client.call = errors.protect(function(self, family, api, params, opts)
    if type(family) ~= "string" or type(api) ~= "string" then
        errors.throw("params", { message = "call(family, api, params): family and api must be strings" })
    end
    local unchecked = type(opts) == "table" and opts.unchecked
    local e = registry.find(family, api)
    if e == nil then
        local name = family .. "/" .. api
        if not unchecked then
            local why = registry.is_family(family) and ("unknown endpoint " .. name)
                or ("unknown family '" .. family .. "'")
            errors.throw("params", { endpoint = name, message = why
                .. " (pass { unchecked = true } to send it anyway)" })
        end
        if not (family:match("^[%w_]+$") and api:match("^[%w_]+$")) then
            errors.throw("params", { endpoint = name, message = "family and api must be [A-Za-z0-9_]" })
        end
        e = { family = family, api = api, name = name, method = "GET", query = {} }
    end
    return invoke(self, e, params, unchecked)
end)

--- Counters of this client: `calls` (requests that reached the network),
-- `bytes` (answer bytes), `connects` (new connections).
function Client:stats()
    local t = self._closed and {} or self._transport:stats()
    return { calls = self._calls, bytes = self._bytes, connects = t.connects }
end

--- Close the transport; idempotent.  Later calls fail with kind "closed".
function Client:close()
    if not self._closed then
        self._closed = true
        self._transport:close()
    end
end

--- True once closed.
function Client:closed()
    return self._closed
end

local mt = {
    __index = index,
    __tostring = function(self)
        return format("wolkvox.client (%s, %s, %d calls)", self._base_url,
            self._closed and "closed" or "open", self._calls)
    end,
}
mt.__close = function(self) self:close() end
mt.__gc = mt.__close

--- Create a client.
-- @tparam table opts see README: server/base_url, token/token_file, timeout, ...
-- @return the client, or nil and a structured error
function M.new(opts)
    local ok, o, token = pcall(options.check, opts)
    if not ok then
        if errors.is(o) then
            return nil, o
        end
        error(o, 2)
    end
    local okt, transport = pcall(open_transport, o, token)
    token = nil -- luacheck: ignore 311 (drop the only Lua reference early)
    if not okt then
        if errors.is(transport) then
            return nil, transport
        end
        error(transport, 2)
    end
    return setmetatable({
        _transport = transport,
        _base_url = o.base_url,
        _opts = o,
        _closed = false,
        _calls = 0,
        _bytes = 0,
    }, mt)
end

return M
