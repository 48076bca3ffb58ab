--- Shared state across hosts: the contract of a fleet backend, and what
-- happens when it fails.
--
-- The pacer (`wolkvox.limits.pacer`) and the quota ledger (`wolkvox.limits.quota`) keep
-- their state in files under `state_dir`, in an nginx shared dict, or in
-- the process.  Those reach one machine.  A *fleet backend* reaches every
-- host that names it (today `wolkvox.limits.redis`); the pacer and the
-- ledger are given it as `shared`, beside their local backend, and use it
-- first.  A backend is an object with these methods; each returns nil and
-- a message (never holding a password or the token) when the backend
-- cannot be reached, and keys are short names without the namespace
-- ("slot:..."), which the backend adds:
--
-- * `take(keys, lease, poll)` -> the slot's number and a holder id, or
--   false and the seconds to wait: the first of `keys` (one per slot of the
--   token) that is free is taken for `lease` seconds, atomically.  A busy
--   slot held by a live call counts as `poll` seconds of wait; an
--   abandoned one as what is left of it.
-- * `free(key, holder, keep)` -> true: the slot `holder` took is freed
--   (`keep` = 0), or kept busy `keep` more seconds (an abandoned call).
--   Nothing happens when the lease ended and someone else holds it.
-- * `claim(key, interval)` -> true, or false and the seconds to wait: a
--   start is claimed when none was claimed in the last `interval` seconds.
-- * `add(key, n, keep, id, batch)` -> the new count: `n` added atomically
--   to a counter that lives `keep` seconds; a batch (`id`, `batch`: an
--   adder's name and its rising batch number) sent again after its answer
--   was lost is not added twice.
-- * `get(key)` -> the value, or false when there is none.
-- * `put(key, value, keep)` -> true.
-- * `where` -> a description for messages, without credentials.
--
-- Room left by the contract: another backend (a Sentinel- or
-- Cluster-aware client, a database) needs only these seven entries; keys
-- already group a token's slots under one hash tag; a tenant's share of a
-- token would be a third kind of key beside slots and counters.
-- @module wolkvox.limits.shared

local errors = require "wolkvox.errors"

local setmetatable, tostring, unpack = setmetatable, tostring, table.unpack or unpack -- luacheck: ignore 143

local M = {}

--- What a failed backend makes of a call: `"refuse"` (the default) throws
-- a `state` error; `"local"` falls back to this host's own backend (state
-- files, shared dict, or the process) and warns once per outage.
M.FAILURE_MODES = { refuse = true, ["local"] = true }

local Guard = {}
Guard.__index = Guard

--- A guard around `backend`.
-- @tparam table backend a fleet backend (see above)
-- @tparam table opts `failure` ("refuse" or "local"), `log(level, line)`,
--   `now` (a monotonic clock in seconds)
function M.guard(backend, opts)
    return setmetatable({ backend = backend, failure = opts.failure or "refuse", log = opts.log,
        now = opts.now or os.time, down = false, retry_at = 0 }, Guard)
end

--- Seconds during which a failed backend is not asked again in "local"
-- mode, nor by `try` in either mode (each try may wait for a connection
-- timeout).
M.RETRY_AFTER = 5

--- Call `method` of the backend: true and its results; when the backend
-- failed, false in "local" mode (after one warning per outage), else a
-- `state` error is thrown.
function Guard:call(method, ...)
    local b = self.backend
    if self.down and self.failure == "local" and self.now() < self.retry_at then
        return false
    end
    local r = { b[method](b, ...) }
    if r[1] ~= nil then
        if self.down then
            self.down = false
            if self.log then
                self.log("info", "fleet state at " .. b.where .. " is back")
            end
        end
        return true, unpack(r, 1, 3)
    end
    return self:failed("is unreachable: " .. tostring(r[2]))
end

--- The backend failed, or gave what cannot be right (`why`, after "fleet
-- state at WHERE "): as `call` does, a `state` error, or false in "local"
-- mode (after one warning per outage).
function Guard:failed(why)
    why = "fleet state at " .. self.backend.where .. " " .. why
    if self.failure ~= "local" then
        errors.throw("state", { message = why .. " (calls are refused while it is: "
            .. "redis_failure = \"local\" falls back to this host's limits)" })
    end
    self.retry_at = self.now() + M.RETRY_AFTER
    if not self.down then
        self.down = true
        if self.log then
            self.log("warn", why .. "; this host falls back to its own limits until it is back")
        end
    end
    return false
end

--- Like `call`, but never throws: for what must not fail a call that was
-- already made (freeing a slot, counting a call that went out).  A failure
-- is logged once per outage.  Within RETRY_AFTER of a failure the backend
-- is not asked, unless `now` (the last chance of counts that would be lost
-- otherwise: a client that closes).
-- @return true and the results, or false
function Guard:try(method, ...)
    return self:attempt(false, method, ...)
end

--- `try`, asked even within RETRY_AFTER of a failure.
function Guard:try_now(method, ...)
    return self:attempt(true, method, ...)
end

function Guard:attempt(now, method, ...)
    local b = self.backend
    if not now and self.down and self.now() < self.retry_at then
        return false
    end
    local r = { b[method](b, ...) }
    if r[1] ~= nil then
        return true, unpack(r, 1, 3)
    end
    self.retry_at = self.now() + M.RETRY_AFTER
    if not self.down then
        self.down = true
        if self.log then
            self.log("warn", "fleet state at " .. b.where .. " is unreachable: " .. tostring(r[2]))
        end
    end
    return false
end

return M
