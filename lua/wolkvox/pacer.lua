--- The per-token limiter: at most two calls in flight for a token, across
-- every process of the machine, and an optional minimum spacing between
-- call starts.
--
-- Each call in flight holds one of the token's two slot files, locked with
-- flock(2) (`wolkvox.core.lock`), under `<state_dir>/<token id>/` where the
-- token id is a hash that does not reveal the token.  The kernel drops a
-- dead process's locks, so a crashed cron job never keeps a slot.  Spacing
-- uses a `last` file holding the time of the latest start.
-- Without a state directory (`state_dir = false`) the limits hold within the
-- process only.  Inside nginx, `wolkvox.pacer_ngx` gives the same interface
-- over a shared dict.
-- @module wolkvox.pacer

local core = require "wolkvox.core"

local setmetatable, tonumber, format, open = setmetatable, tonumber, string.format, io.open

local M = {}

--- wolkvox's limit of simultaneous calls per token.
M.TOKEN_SLOTS = 2

--- How long to wait before asking again for a busy slot (seconds).
M.POLL = 0.05

local Pacer = {}
Pacer.__index = Pacer

--- A pacer.
-- @tparam table opts `dir` (the token's state directory, which exists, or nil),
--   `max_concurrent` (this client's own cap), `min_interval` (seconds)
function M.new(opts)
    local self = setmetatable({ dir = opts.dir, cap = opts.max_concurrent or M.TOKEN_SLOTS,
        min_interval = opts.min_interval or 0, held = 0, last_start = nil }, Pacer)
    return self
end

-- The time of the latest start of this token (shared through the `last` file).
function Pacer:last()
    if not self.dir then
        return self.last_start
    end
    local f = open(self.dir .. "/last", "rb")
    if not f then
        return nil
    end
    local t = tonumber(f:read("*l"))
    f:close()
    return t
end

function Pacer:stamp(t)
    self.last_start = t
    if self.dir then
        -- Written whole by one write(2) (the file is tiny): readers see old or new.
        local f = open(self.dir .. "/last", "wb")
        if f then
            f:write(format("%.6f\n", t))
            f:close()
        end
    end
end

--- Take a slot for one call.
-- @return a slot (give it back with `release`), or nil and the seconds to
--   wait before trying again, and why ("slot" or "interval")
function Pacer:acquire()
    if self.held >= self.cap then
        return nil, M.POLL, "slot"
    end
    local lock
    if self.dir then
        for i = 1, M.TOKEN_SLOTS do
            lock = core.lock(self.dir .. "/slot" .. i)
            if lock then
                break
            end
        end
        if not lock then
            return nil, M.POLL, "slot"
        end
    end
    if self.min_interval > 0 then
        local now, last = core.time(), self:last()
        if last and now - last < self.min_interval then
            if lock then
                lock:release()
            end
            return nil, self.min_interval - (now - last), "interval"
        end
        self:stamp(now)
    end
    self.held = self.held + 1
    return { lock = lock }
end

--- Give a slot back (idempotent).
function Pacer:release(slot)
    if slot and not slot.released then
        slot.released = true
        self.held = self.held - 1
        if slot.lock then
            slot.lock:release()
        end
    end
end

return M
