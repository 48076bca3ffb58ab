--- When to try a failed call again, and how long to wait first: whether
-- this one is tried again (`next_attempt`, reading whether its kind may pass
-- from `wolkvox.errors`), how long to wait, and when to go on one at a time.
-- Reads are retried (3 attempts in all by default) with exponential backoff
-- and full jitter; writes only when the request never left (the connection
-- could not be made), since a write that reached the server may have done
-- its work even though the answer was lost.  A Retry-After hint is honoured
-- up to `retry_cap`.  The concurrency 403 backs off by whole seconds (1, then
-- 2-3, 4-7, ...): the calls that filled the token's two places must end
-- first, and a fraction of a second would only spend more calls.
-- @module wolkvox.call.retry

local dates = require "wolkvox.dates"
local errors = require "wolkvox.errors"

local min, max, floor, tonumber, tostring, type, random =
    math.min, math.max, math.floor, tonumber, tostring, type, math.random

local M = {}

--- The error kinds, with whether a later attempt may succeed
-- (`wolkvox.errors.kinds`, the data this policy reads).
M.KINDS = errors.kinds

--- Whether an error of `kind` with these `fields` (`reason`, `status`) may
-- pass on a later attempt (`wolkvox.errors.classify`).
M.classify = errors.classify

-- How the waits of the concurrency and maintenance 403s differ
-- (`wolkvox.errors.waits`: the rule of each 403 is data there).
local WAITS = errors.waits

--- True when `err` may be retried for a read (`write` false) or a write.
-- (Whether a failure can pass is the error's own `retryable`.)
function M.retryable(err, write)
    if not err.retryable then
        return false
    end
    if write then
        return err.kind == "transport" and err.sent == false
    end
    return true
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
    Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

--- Seconds to wait from a Retry-After value (seconds, or an HTTP date
-- compared with `now_epoch`); nil when it cannot be read.
function M.retry_after(value, now_epoch)
    if type(value) ~= "string" then
        return nil
    end
    local n = tonumber(value)
    if n then
        return max(0, n)
    end
    local d, mon, y, h, mi, s = value:match("^%a+, (%d%d?) (%a+) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if d and MONTHS[mon] then
        local at = dates.make(tonumber(y), MONTHS[mon], tonumber(d), tonumber(h), tonumber(mi), tonumber(s))
        if at then
            return max(0, at - (now_epoch or os.time()))
        end
    end
    return nil
end

--- The shortest wait after a concurrency 403 (seconds).
M.CONCURRENCY_MIN = WAITS.concurrency.min

--- The wait before the next attempt, after `attempts` attempts so far.
-- @tparam table err the last error
-- @tparam number attempts attempts made (1 after the first failure)
-- @tparam table policy `retry_base`, `retry_cap`
-- @tparam[opt] function rand returns a number in [0, 1)
-- @tparam[opt] number now_epoch the time, for a Retry-After date
function M.wait(err, attempts, policy, rand, now_epoch)
    local hinted = M.retry_after(err.retry_after, now_epoch)
    if hinted then
        -- The server's hint, but never longer than the caller allows.
        return min(hinted, policy.retry_cap)
    end
    if err.kind == "concurrency" then
        -- Whole seconds, doubling, with jitter; capped by retry_cap or
        -- CONCURRENCY_MIN, whichever is longer.
        local floor_s = M.CONCURRENCY_MIN * 2 ^ (min(attempts, 30) - 1)
        local w = floor_s + floor((rand or random)() * floor_s)
        return max(M.CONCURRENCY_MIN, floor(min(w, max(policy.retry_cap, M.CONCURRENCY_MIN))))
    end
    local shape = WAITS[err.kind] or {}
    local base = policy.retry_base * (shape.factor or 1)
    local ceiling = min(policy.retry_cap * (shape.cap_factor or 1), base * 2 ^ (attempts - 1))
    return (rand or random)() * ceiling
end

--- Whether and when to try again after `err`, the `attempts`-th failure of
-- an item: nil when the policy gives up (not retryable, a write that may
-- have reached the server, no attempts left, or the wait would pass the
-- `deadline`, a `now()` value); else the wait in seconds, and "serial" when
-- what follows must go one at a time (the server counted more calls in
-- flight than the client had).
-- @tparam table err the structured error of the failed attempt
-- @tparam number attempts attempts made so far
-- @tparam table policy `retries`, `retry_base`, `retry_cap`
-- @tparam boolean write the call is a write (retried only if nothing was sent)
-- @tparam[opt] number deadline the job's deadline on the monotonic clock
-- @tparam table clock `now()` (monotonic) and `time()` (epoch)
function M.next_attempt(err, attempts, policy, write, deadline, clock)
    if not M.retryable(err, write) or attempts > policy.retries then
        return nil
    end
    local wait = M.wait(err, attempts, policy, nil, clock.time())
    if deadline and clock.now() + wait >= deadline then
        return nil
    end
    return wait, err.kind == "concurrency" and "serial" or nil
end

--- A short description of a failure, for the history of attempts.
function M.label(err)
    if err.kind == "transport" then
        return "transport " .. tostring(err.reason)
    end
    if err.kind == "http" or err.kind == "decode" then
        return err.kind .. (err.status and (" " .. err.status) or "")
    end
    return err.kind
end

return M
