--- The client object: one operation (server + token), one transport.
-- Methods: one per endpoint (`c:services()`, `c.real_time:agents()`),
-- `c:call(family, api, params)` for any endpoint, `c:report`, `c:each` and
-- `c:plan` for date ranges, `c:stats()`, `c:close()`.
-- Calls return `data, meta` or `nil, err` (see `wolkvox.errors`).
-- @module wolkvox.client

local errors = require "wolkvox.errors"
local options = require "wolkvox.options"
local registry = require "wolkvox.registry"
local report = require "wolkvox.report"

local type, pcall, error, setmetatable, rawget, rawset, tostring, format =
    type, pcall, error, setmetatable, rawget, rawset, tostring, string.format

local M = {}

-- ---- the context the report layer works in ----------------------------------

-- What a call needs from its client, kept apart from the client's methods.
local Ctx = {}
Ctx.__index = Ctx

--- Count `n` sends against the client (each may cost a call of the quota).
function Ctx:spend(n)
    self.calls = self.calls + n
end

--- Remember the schedule of a running iteration (nil when it ends).
function Ctx:track(sched)
    self.active = sched
end

--- Abort what an iteration left in flight (a loop that broke early).
function Ctx:settle()
    local s = self.active
    if s then
        self.active = nil
        s:abort()
    end
end

local function open_transport(opts, token)
    local name = opts.transport or "curl"
    if name ~= "curl" then
        errors.throw("params", { message = "unknown transport '" .. tostring(name) .. "'" })
    end
    local curl = require "wolkvox.transport.curl"
    return curl.new(opts, token)
end

-- ---- calls ----------------------------------------------------------------------

local Client = {}
local Family = {}

local function ready(self, name)
    local ctx = self._ctx
    if ctx.closed then
        errors.throw("closed", { endpoint = name, message = "the client is closed" })
    end
    ctx:settle()
    return ctx
end

-- The one path every call takes: check, plan, send, read.
local function invoke(self, e, params, unchecked)
    local ctx = ready(self, e.name)
    local job = report.prepare(ctx, e, params, { unchecked = unchecked })
    return report.run(ctx, job)
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

-- The endpoint a name stands for: "cdr_1", "reports_manager/cdr_1" or an entry.
local function endpoint_of(name)
    if type(name) == "table" and name.family then
        return name
    end
    if type(name) ~= "string" then
        errors.throw("params", { message = "an endpoint name is needed, such as \"cdr_1\"" })
    end
    local e = name:find("/", 1, true) and registry.get(name) or registry.bare(name)
    if not e then
        errors.throw("params", { endpoint = name, message = "unknown endpoint '" .. name .. "'" })
    end
    return e
end

local function ranged(name)
    local e = endpoint_of(name)
    if not e.dates then
        errors.throw("params", { endpoint = e.name,
            message = e.api .. " takes no date range: call c:" .. e.api .. "() instead" })
    end
    return e
end

--- Call any endpoint.
-- @tparam string family e.g. "information"
-- @tparam string api e.g. "services"
-- @tparam[opt] table params parameters (and range options)
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

--- All rows of a report over any range: windows of at most 31 days (split
-- again while an answer reaches the row cap), fetched two at a time, rows in
-- time order.  `params` takes `from`, `to`, the report's own parameters and
-- `per`, `max_rows`, `min_span`, `max_concurrent`.
-- @tparam string name "cdr_1" or "reports_manager/cdr_1"
-- @return rows (or, with `per`, a list of `{ period, from, to, rows }`) and meta
Client.report = errors.protect(function(self, name, params)
    return invoke(self, ranged(name), params)
end)

--- Iterate the rows of a report window by window; see `report`.
-- `for row, window in c:each("cdr_1", { from = ..., to = ... }) do ... end`.
-- Memory holds at most the windows in flight; breaking out of the loop
-- stops fetching.  Failures raise the structured error.
function Client:each(name, params)
    local ok, it, s, c, closer = pcall(function()
        local e = ranged(name)
        local ctx = ready(self, e.name)
        return report.each(ctx, report.prepare(ctx, e, params))
    end)
    if not ok then
        error(it, 2)
    end
    return it, s, c, closer
end

--- What a call will cost, without spending anything.
-- @treturn table `calls`, `mode`, `endpoint`, `windows`; or nil, err
Client.plan = errors.protect(function(self, name, params)
    local e = endpoint_of(name)
    return report.plan(report.prepare(self._ctx, e, params))
end)

--- Counters of this client: `calls` (requests that went out), `bytes`
-- (answer bytes), `connects` (new connections).
function Client:stats()
    local ctx = self._ctx
    local t = ctx.closed and {} or ctx.transport:stats()
    return { calls = ctx.calls, bytes = t.bytes, connects = t.connects }
end

--- Close the transport; idempotent.  Later calls fail with kind "closed".
function Client:close()
    local ctx = self._ctx
    if not ctx.closed then
        ctx.active = nil
        ctx.closed = true
        ctx.transport:close()
    end
end

--- True once closed.
function Client:closed()
    return self._ctx.closed
end

local mt = {
    __index = index,
    __tostring = function(self)
        local ctx = self._ctx
        return format("wolkvox.client (%s, %s, %d calls)", ctx.base_url,
            ctx.closed and "closed" or "open", ctx.calls)
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
    local ctx = setmetatable({
        transport = transport,
        base_url = o.base_url,
        utc_offset = o.utc_offset,
        max_concurrent = o.max_concurrent,
        max_rows = o.max_rows,
        calls = 0,
        closed = false,
    }, Ctx)
    return setmetatable({ _ctx = ctx }, mt)
end

return M
