--- The runtime every call runs in: one client's transport and clock, its
-- pacer (the token's slots) and quota ledger, its policy, hooks and logger,
-- and its counters.  The call machinery (`wolkvox.call.run`) works against
-- this object; the client's public methods (`wolkvox.client`) make one and
-- hand it their calls.
--
-- The counters (`c:stats()`, `wolkvox.out.metrics`) are kept here, where a
-- call's result is known: every attempt that ended is told to `on_response`
-- (`wolkvox.call.run`'s `finish`), so `emit` counts it by endpoint and
-- outcome (`ok` or the error's kind) before any hook runs; `on_retry` and
-- `on_throttle` count retries and waits the same way, and `delivered` the
-- rows of each finished window.  A transport that shares state between
-- processes (`mod.metrics`: inside nginx, the shared dict) gets the same
-- counts, so one scrape sees every worker's.
-- @module wolkvox.runtime

local errors = require "wolkvox.errors"
local pacer = require "wolkvox.limits.pacer"
local quota = require "wolkvox.limits.quota"
local state = require "wolkvox.limits.shared"
local select_transport = require "wolkvox.transport.select"

local pcall, setmetatable, tostring, format, ipairs = pcall, setmetatable, tostring, string.format, ipairs

local M = {}

local Runtime = {}
Runtime.__index = Runtime

local HOOKS = { "on_request", "on_response", "on_retry", "on_throttle", "on_quota", "on_progress" }

-- Add `n` to counter `name` (with `endpoint` and `outcome` for calls) of the
-- transport's shared store, if there is one.  A store that fails (a full
-- dict) costs the count, never the call.
local function share(self, name, n, endpoint, outcome)
    local m = self.metrics
    if m and n > 0 then
        errors.try(m.add, m, name, n, endpoint, outcome)
    end
end

-- What each event adds to the counters.
local COUNT = {
    on_response = function(self, info)
        local endpoint = info.endpoint
        local outcome = info.error and info.error.kind or "ok"
        local per = self.by_endpoint[endpoint]
        if not per then
            per = {}
            self.by_endpoint[endpoint] = per
        end
        per[outcome] = (per[outcome] or 0) + 1
        share(self, "calls", 1, endpoint, outcome)
        share(self, "bytes", info.bytes or 0)
    end,
    on_retry = function(self)
        share(self, "retries", 1)
    end,
    on_throttle = function(self)
        share(self, "throttled", 1)
    end,
}

--- Count `n` sends (each may cost a call of the quota; `free` ones do not).
function Runtime:spend(n, free)
    self.calls = self.calls + n
    if not free then
        self.ledger:spend(n)
    end
end

-- Where the running schedule is remembered: the transport's store for the
-- current unit of work (the runtime itself; inside nginx the request's own,
-- since the requests of a worker share a client and one request must never
-- abort another's calls).
function Runtime:running()
    return self.store(self)
end

--- Remember the schedule of a running call or iteration (nil when it ends).
function Runtime:track(sched)
    self:running().active = sched
end

--- Abort what an iteration left in flight (a loop that broke early).
function Runtime:settle()
    local r = self:running()
    local s = r.active
    if s then
        r.active = nil
        s:abort()
    end
end

--- Write a log line through the logger, if there is one.  A logger that
-- fails is ignored: logging must not break a call (Ctrl-C while it logs
-- still stops it).
function Runtime:log(level, msg)
    local logger = self.logger
    if logger then
        errors.try(logger, level, msg)
    end
end

--- The transport's calls for one operation (a batch of light threads of the
-- current request inside nginx; the session itself elsewhere).
function Runtime:batch()
    local t = self.transport
    if t.unusable then
        local why = t:unusable()
        if why then
            errors.throw("transport", { reason = "phase", message = why })
        end
    end
    return t.batch and t:batch() or t
end

local function describe(name, info)
    if name == "on_request" then
        return "debug", format("%s %s attempt %d%s", info.method, info.endpoint, info.attempt,
            info.window and (" [" .. info.window .. "]") or "")
    elseif name == "on_response" then
        return "debug", format("%s -> %s, %d bytes, %.3f s%s", info.endpoint, tostring(info.status),
            info.bytes or 0, info.time or 0, info.error and (": " .. tostring(info.error)) or "")
    elseif name == "on_retry" then
        return "info", format("retrying %s in %.2f s after attempt %d: %s", info.endpoint, info.wait,
            info.attempt, tostring(info.error))
    elseif name == "on_throttle" then
        return "info", format("%s waits %.2f s for %s", info.endpoint, info.wait, info.reason)
    elseif name == "on_progress" then
        return "debug", format("%s: %d of %d done, %d rows, %d calls, %.1f s", info.endpoint, info.done,
            info.total, info.rows, info.calls, info.elapsed)
    end
    return "warn", format("quota: %s", tostring(info.error))
end

--- Count `n` rows handed over from a finished window or answer.
function Runtime:delivered(n)
    self.rows = self.rows + n
    share(self, "rows", n)
end

--- Tell the hook `name` (and the log) about `info`, after counting it
-- (`on_response`: a call by endpoint and outcome; `on_retry`, `on_throttle`).
-- A hook that raises is logged and otherwise ignored: it must not break a
-- call half-way.  Nothing passed here holds the token: infos are built from
-- requests (method, URL without token) and from results and errors.
function Runtime:emit(name, info)
    local count = COUNT[name]
    if count then
        count(self, info)
    end
    if self.logger then
        self:log(describe(name, info))
    end
    local hook = self.hooks[name]
    if hook then
        -- (Ctrl-C while a hook runs, the command line's progress line for
        -- one, is Ctrl-C, not a failed hook)
        local ok, err = errors.try(hook, info)
        if not ok then
            self:log("warn", "hook " .. name .. " failed: " .. tostring(err))
        end
    end
end

--- A pacer slot for `item`, or nil and the seconds to wait (announced once
-- per item through on_throttle).
function Runtime:acquire(endpoint, item)
    local slot, wait, why = self.pacer:acquire()
    if slot then
        item.throttled = nil
        return slot
    end
    if not item.throttled or (why == "abandoned" and item.throttled ~= why) then
        item.throttled = why
        self.throttles = self.throttles + 1
        local reason = why == "interval" and "the minimum interval" or "a free slot of the token"
        if why == "abandoned" then
            reason = "a slot an earlier call, abandoned (Ctrl-C, a kill, a timeout), may still hold at wolkvox"
        end
        self:emit("on_throttle", { endpoint = endpoint, wait = wait, reason = reason, why = why,
            ["until"] = why == "abandoned" and os.time() + wait or nil })
    end
    return nil, wait
end

--- Open the transport, the pacer and the ledger for checked options `o`
-- and `token`; raises structured errors.
-- @treturn table the runtime
function M.new(o, token)
    local mod, name = select_transport.module(o.transport)
    if not mod then
        errors.throw("params", { message = name })
    end
    local t = mod.new(o, token)
    token = nil -- luacheck: ignore 311 (drop the only Lua reference early)
    local logger = select_transport.logger(o.logger or (mod.log and name or nil))
    -- Whatever fails from here on (a state directory refused, ...) closes
    -- the transport first.
    local ok, p, l = pcall(function()
        local opts_p, opts_q = mod.state(o, t)
        if opts_p.shared then
            -- Fleet mode: one guard for both, so an outage warns once.
            local guard = state.guard(opts_p.shared, { failure = o.redis_failure, now = mod.clock.now,
                log = logger and function(level, line) errors.try(logger, level, line) end })
            opts_p.shared, opts_q.shared = guard, guard
        end
        local time = mod.clock.time
        opts_p.max_concurrent, opts_p.min_interval, opts_p.time = o.max_concurrent, o.min_interval, time
        opts_p.server_limit = o.server_limit
        opts_q.utc_offset, opts_q.daily_limit, opts_q.reserve, opts_q.time = o.utc_offset, o.daily_limit,
            o.reserve, time
        opts_q.prefer_measured = o.prefer_measured
        return pacer.new(opts_p), quota.new(opts_q)
    end)
    if not ok then
        t:close()
        error(p, 0)
    end
    local clock = mod.clock
    -- The lookup cache (`cache = { ttl = ... }`): the transport's store.
    local store = o.cache and mod.cache and mod.cache(o, t) or nil
    -- Counters shared between processes (inside nginx, the shared dict).
    local metrics = mod.metrics and mod.metrics(o, t) or nil
    local hooks = {}
    for _, hook in ipairs(HOOKS) do
        hooks[hook] = o[hook]
    end
    return setmetatable({
        transport = t, transport_name = name, clock = clock, store = mod.store,
        pacer = p, ledger = l, hooks = hooks,
        logger = logger,
        base_url = o.base_url, utc_offset = o.utc_offset,
        -- Where plans keep their status (`wolkvox.job.plan`), beside the ledger.
        state_dir = o.state_dir,
        -- Where answers of rows streamed to a sink wait (a transport that can).
        spool_dir = mod.spool and o.spool_dir or nil,
        -- Whether those answers can wait as CSV lines made as they arrive.
        spool_lines = mod.spool_lines == true,
        max_concurrent = o.max_concurrent, max_rows = o.max_rows, max_calls = o.max_calls, timeout = o.timeout,
        policy = { retries = o.retries, retry_base = o.retry_base, retry_cap = o.retry_cap,
            deadline = o.deadline },
        calls = 0, retries = 0, throttles = 0, closed = false,
        cache = store, cache_ttl = store and o.cache.ttl, cache_hits = 0,
        by_endpoint = {}, rows = 0, metrics = metrics,
    }, Runtime)
end

return M
