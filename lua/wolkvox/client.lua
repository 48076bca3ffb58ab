--- The client object: one operation (server + token), one transport.
-- Methods: one per endpoint (`c:services()`, `c.real_time:agents()`),
-- `c:call(family, api, params)` for any endpoint, `c:report`, `c:each` and
-- `c:plan` for date ranges, `c:stats()`, `c:close()`.
-- Calls return `data, meta` or `nil, err` (see `wolkvox.errors`).
-- @module wolkvox.client

local errors = require "wolkvox.errors"
local options = require "wolkvox.options"
local registry = require "wolkvox.api.registry"
local cache = require "wolkvox.limits.cache"
local pages = require "wolkvox.api.pages"
local prepare = require "wolkvox.call.prepare"
local run = require "wolkvox.call.run"
-- The jobs are loaded when first used: a script that only calls endpoints
-- (or a cron line's fresh process) does not pay for compiling them.
local function job_module(name)
    return require("wolkvox.job." .. name)
end
local runtime = require "wolkvox.runtime"

local type, pcall, error, setmetatable, getmetatable, rawget, rawset, tonumber, format, pairs =
    type, pcall, error, setmetatable, getmetatable, rawget, rawset, tonumber, string.format, pairs

local M = {}

-- ---- calls ----------------------------------------------------------------------

local Client = {}
local Family = {}
-- The clients' metatable (filled at the end of the module).
local mt = {}

-- A method reached with a dot (`c.services()`): its first argument is not
-- the client.  Raised at the caller's line (from a method's first lines).
local function wrong_self(call)
    error("wolkvox: use " .. call:gsub("%.(%w+)$", ":%1") .. "(), not " .. call .. "()", 3)
end

-- Everything a client answers to: its own methods, bare api names, families.
local all_names
local function client_names()
    if not all_names then
        all_names = registry.method_names()
        for k in pairs(Client) do
            all_names[k] = true
        end
    end
    return all_names
end

-- An unknown name: nil, as for any table, unless it is close to a name the
-- client knows (a misspelt method): then a helpful error at the caller's
-- line, rather than "attempt to call a nil value" later.
local function unknown(key, names, prefix)
    if type(key) == "string" and key:match("^%a") then
        local hint = registry.suggest(key, names)
        if hint ~= "" then
            error("wolkvox client: unknown method '" .. prefix .. key .. "'" .. hint, 3)
        end
    end
end

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
    local job = prepare.prepare(ctx, e, params, { unchecked = unchecked })
    return cache.run(ctx, job, run.run)
end
local invoke_protected = errors.protect(invoke)

-- Method functions are shared by all clients: made once per endpoint.
local methods = {}
local function method_for(e)
    local f = methods[e]
    if f == nil then
        local name = "c." .. e.api
        f = function(self, params)
            if getmetatable(self) ~= mt then
                wrong_self(name)
            end
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
    unknown(key, client_names(), "") -- not a tail call: the error's level counts this frame
    return nil
end

Family.__index = function(fam, api)
    local family = rawget(fam, "_family")
    local e = registry.find(family, api)
    if e == nil then
        unknown(api, registry.apis(family), family .. ":")
        return nil
    end
    local f = method_for(e)
    local name = "c." .. family .. "." .. api
    return function(self, params)
        if self ~= fam then
            wrong_self(name)
        end
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
    local e = registry.lookup(name)
    if not e then
        local names = registry.method_names()
        if name:find("/", 1, true) then
            names = {}
            for _, x in ipairs(registry.endpoints) do
                names[#names + 1] = x.name
            end
        end
        errors.throw("params", { endpoint = name, message = "unknown endpoint '" .. name .. "'"
            .. registry.suggest(name, names) })
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

-- The options `call` takes (its fourth argument).
local CALL_OPTIONS = { unchecked = true }

-- A key of `opts` that `call` does not know is refused (kind params, before
-- anything is sent), with a did-you-mean as `wolkvox.new` gives, or the
-- word that it is a parameter, when it is one of the range helpers'.
local function check_call_options(family, api, opts)
    if opts == nil then
        return
    end
    local name = family .. "/" .. api
    if type(opts) ~= "table" then
        errors.throw("params", { endpoint = name,
            message = "call(family, api, params, opts): opts must be a table (got " .. type(opts) .. ")" })
    end
    for k in pairs(opts) do
        if not CALL_OPTIONS[k] then
            local hint = type(k) == "string" and registry.suggest(k, CALL_OPTIONS) or ""
            if hint == "" and prepare.OPTIONS[k] then
                hint = " (" .. k .. " is a parameter: pass it in params, the third argument)"
            end
            errors.throw("params", { endpoint = name, message = "call: unknown option '" .. tostring(k)
                .. "' in opts" .. hint .. "; opts takes: unchecked" })
        end
    end
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
    check_call_options(family, api, opts)
    local unchecked = opts ~= nil and opts.unchecked
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
        return run.each(ctx, run.spool(ctx, prepare.prepare(ctx, e, params)))
    end)
    if not ok then
        error(it, 2)
    end
    return it, s, c, closer
end

--- Write the rows of a report as they come, window by window, in flat
-- memory: a window's rows wait on disk until its answer is known whole (not
-- at the row cap), then go to the output, so none is written twice.
-- `c:export("cdr_1", { from = ..., to = ... }, { format = "csv", output = "cdr.csv" })`.
-- @tparam string name "cdr_1" or "family/api" (any endpoint that answers rows)
-- @tparam table params as for `report`
-- @tparam table opts `format` ("csv" (default), "ndjson", "json", "table", or a
--   format table: see `wolkvox.export`), one of `output` (a path), `file` (an
--   open file) or `on_rows` (a function given each batch of rows and its
--   window; returning false stops the export), `columns` and `bom` (CSV),
--   `map` (a function of a row and its window giving the row to write, nil
--   to write none, or a list of rows),
--   `checkpoint` (a path, with `output`: the export can be run again to
--   finish after it stopped, fetching only the windows not yet written)
-- @return the number of rows written and meta (`windows`, `calls`,
--   `resumed`, ...); or nil, err, where a range that failed partway has
--   `err.partial` (the windows written before it; with a checkpoint also
--   `saved`: `windows` and `to` of everything the output holds, earlier runs
--   included) and names the failed window
Client.export = errors.protect(function(self, name, params, opts)
    local e = endpoint_of(name)
    local ctx = ready(self, e.name)
    return job_module("export").run(ctx, e, params, opts)
end)

--- Fetch what is new since the last run: from the state file's watermark
-- (the first time, `since`) to `until` (default: now minus `lag`), only rows
-- not handed over before, then move the watermark.  A short `overlap`
-- before the watermark is read again for rows recorded late, and rows
-- already delivered are dropped by the endpoint's row key.  Aggregates
-- sync per closed day (`per = "day"`).  Run more often than the vendor's
-- 5-minute polling interval, it warns and spends nothing (`force = true`
-- overrides).
-- `local rows, meta = c:sync("cdr_1", { state = "cdr.sync", since = "2026-01-01" })`.
-- @tparam string name "cdr_1" or "family/api"
-- @tparam table params `state` (a path), `since`, `until`, `lag` (seconds,
--   default 600), `overlap` (seconds, default 3600), `per`, `force`, and the
--   endpoint's own parameters
-- @tparam[opt] table sink where rows go, as for `export` (`output`, `file`,
--   `on_rows`, `format`, `columns`, `bom`, `map`), plus `append = true`
--   (with `output`: rows are added to the file, csv or ndjson); without it
--   the new rows are returned
-- @return the new rows (or their count, with a sink) and meta (`from`,
--   `to`, `watermark`, `dropped`, `calls`, `skipped`, ...); or nil, err
Client.sync = errors.protect(function(self, name, params, sink)
    local e = endpoint_of(name)
    local ctx = ready(self, e.name)
    return job_module("sync").run(ctx, e, params, sink)
end)

--- Run a plan: several syncs ("streams") caught up under one share of the
-- day's quota, highest priority first and in turns among equals; stops
-- when the share is spent (`stopped = "budget"`), and the next run goes
-- on (`wolkvox.job.plan`).
-- `c:run_plan { share = 0.5, streams = { { name = "calls", endpoint = "cdr_1", since = "2025-01-01",
-- into = "calls.db" } } }`
-- @tparam table|string plan a plan table, or the path of a plan file
-- @tparam[opt] table opts `on_turn(info)` after each turn
-- @return a summary (`stopped`, `budget`, `streams`); or nil, err
Client.run_plan = errors.protect(function(self, plan, opts)
    ready(self, nil)
    if type(plan) == "string" then
        plan = job_module("plan").read(plan)
    end
    return job_module("plan").run(self, plan, opts)
end)

--- What a plan would cost, spending nothing: per stream the calls of its
-- backlog and of a steady day, and the days the backlog takes at the
-- plan's share (`days`, nil while the day's limit is unknown).
-- @tparam table|string plan as for `run_plan`
Client.plan_cost = errors.protect(function(self, plan)
    ready(self, nil)
    if type(plan) == "string" then
        plan = job_module("plan").read(plan)
    end
    return job_module("plan").cost(self, plan)
end)

--- Follow a paged lookup's cursor to its end, one call a page
-- (`wolkvox.api.pages`): `wolkvox_storage/list_files` (`page_token`) and
-- `whatsapp/conversations_today_by_customer` (`pagina_mensajes`).
-- `for items, meta in c:pages("list_files", { path = "rec/" }, { max_pages = 20 }) do ... end`:
-- each step gives a page's items and its meta (`page`, `cursor`, `next`,
-- `data`, `calls`, ...).  Failures raise the structured error: a call's,
-- the `max_pages` guard's (`params`, default 100 pages, `err.next` to go on
-- from) or a cursor's that repeats itself (`decode`, reason `cursor`).
-- @tparam string name "list_files" or "wolkvox_storage/list_files"
-- @tparam[opt] table params the endpoint's parameters
-- @tparam[opt] table opts `max_pages`; `cursor` (how an endpoint the
--   registry does not describe pages: `{ type = "token" | "page", param,
--   items, next | last }`)
function Client:pages(name, params, opts)
    local ok, it = pcall(function()
        local e = endpoint_of(name)
        ready(self, e.name)
        return pages.iterate(e, params, opts, function(p) return invoke(self, e, p) end)
    end)
    if not ok then
        error(it, 2)
    end
    return it
end

--- Every item of every page of a paged lookup, merged in order (see
-- `pages`): items and a meta with `pages`, `calls`, `items`, `cached`; or
-- nil and the error, with what was fetched before it in `err.items`.
Client.all_pages = errors.protect(function(self, name, params, opts)
    local e = endpoint_of(name)
    ready(self, e.name)
    return pages.all(e, params, opts, function(p) return invoke(self, e, p) end)
end)

--- What a call will cost, without spending anything.
-- @treturn table `calls` (the first pass), `mode`, `endpoint`, `windows`,
--   `free` (agentbox), `max_calls` (the ceiling on one plan's calls: the
--   option, else 1,000 while the day's limit is unknown), `refused` (why
--   running it would be refused before sending, or nil), and `quota`
--   (today's ledger: `used`, `limit`, `remaining`, `reserve`, `source`); or nil, err
Client.plan = errors.protect(function(self, name, params)
    local ctx = self._ctx
    local e = endpoint_of(name)
    local p = prepare.plan(prepare.prepare(ctx, e, params), ctx)
    p.free = e.free == true
    p.quota = ctx.ledger:status()
    return p
end)

--- The day's quota: `used`, `limit`, `remaining`, `source`, `day`.
-- By default it asks information.php?api=token_info, which sees the calls of
-- every token of the operation and costs one call itself (`calls = 1` in the
-- answer); `{ measure = false }` reads the local ledger instead, for free
-- (`source = "counted"`: this machine's calls only, unless a measurement was
-- taken today; in fleet mode, the `redis` option, the count of every host).
Client.quota = errors.protect(function(self, opts)
    local ctx = ready(self, "information/token_info")
    if type(opts) == "table" and opts.measure == false then
        local s = ctx.ledger:status()
        s.calls = 0
        return s
    end
    local data, meta = invoke(self, registry.find("information", "token_info"), {})
    local row = type(data) == "table" and (data[1] or data) or {}
    local limit = tonumber(row.token_limit)
    local used = tonumber(row.all_token_today) or tonumber(row.token_use_today)
    if not used then
        errors.throw("decode", { endpoint = "information/token_info",
            message = "token_info did not say how many calls were used" })
    end
    ctx.ledger:measured(used, limit)
    local s = ctx.ledger:status()
    s.calls, s.token_use_today = meta.calls, tonumber(row.token_use_today)
    return s
end)

--- Counters of this client: `calls` (requests that went out, each a call of
-- the quota), `retries`, `throttled` (starts that waited for the pacer),
-- `bytes` (answer bytes), `connects` (new connections), `quota_used` (the
-- ledger's count for today), `cache_hits` (answers the lookup cache gave
-- without a call); `by_endpoint` (calls that ended, by endpoint and
-- outcome: `{ ["reports_manager/cdr_1"] = { ok = 3, quota = 1 } }`, the
-- outcome `ok` or the error's kind; every attempt of a retried call counts,
-- a call refused before sending does not; a call cut off in flight, by a
-- deadline or an interrupt, is in `calls` only), `in_flight` (calls of this
-- client holding a slot of the token now), `rows` (rows the calls'
-- answers handed over, every window's), and `quota` (the ledger's status,
-- as `c:quota { measure = false }` gives it, spending nothing; nil when the
-- fleet's shared state cannot be read).  Still readable after `close`, so
-- a run can report what it did at its end (`wolkvox.out.metrics`).
function Client:stats()
    local ctx = self._ctx
    local got, t = pcall(ctx.transport.stats, ctx.transport)
    t = got and t or {}
    -- (nil when the fleet's shared state cannot be read and calls are refused)
    local ok, s = pcall(ctx.ledger.status, ctx.ledger)
    local by_endpoint = {}
    for endpoint, per in pairs(ctx.by_endpoint) do
        local copy = {}
        for outcome, n in pairs(per) do
            copy[outcome] = n
        end
        by_endpoint[endpoint] = copy
    end
    return { calls = ctx.calls, retries = ctx.retries, throttled = ctx.throttles, bytes = t.bytes,
        connects = t.connects, quota_used = ok and s.used or nil, cache_hits = ctx.cache_hits,
        by_endpoint = by_endpoint, in_flight = ctx.pacer.held, rows = ctx.rows, quota = ok and s or nil }
end

--- Close the transport; idempotent.  Later calls fail with kind "closed".
function Client:close()
    local ctx = self._ctx
    if not ctx.closed then
        ctx:running().active = nil
        ctx.closed = true
        ctx.transport:close()
        -- Counts the fleet backend has not taken yet get a last chance.
        pcall(ctx.ledger.flush, ctx.ledger, nil, nil, true)
    end
end

--- True once closed.
function Client:closed()
    return self._ctx.closed
end

-- Every method checks that it was called with a colon.
for name, f in pairs(Client) do
    local call = "c." .. name
    Client[name] = function(self, ...)
        if getmetatable(self) ~= mt then
            wrong_self(call)
        end
        return f(self, ...)
    end
end

mt.__index = index
mt.__tostring = function(self)
    local ctx = self._ctx
    return format("wolkvox.client (%s, %s, %d calls)", ctx.base_url,
        ctx.closed and "closed" or "open", ctx.calls)
end
mt.__close = function(self) self:close() end
mt.__gc = mt.__close

-- Check the options, then open the transport, the pacer and the ledger.
local function open(opts)
    local o, token = options.check(opts)
    return runtime.new(o, token)
end

--- Create a client.
-- @tparam table opts see README: server/base_url, token/token_file, timeout, ...
-- @return the client, or nil and a structured error
function M.new(opts)
    -- Expected failures come back as nil, err; a wrong option (a programming
    -- error) is raised at the caller's line.
    local ok, rt = pcall(open, opts)
    if not ok then
        if errors.is(rt) then
            return nil, rt
        end
        error(rt, 2)
    end
    return setmetatable({ _ctx = rt }, mt)
end

return M
