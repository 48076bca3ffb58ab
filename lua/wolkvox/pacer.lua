--- The per-token limiter: at most two calls in flight for a token, across
-- every process of the machine, and an optional minimum spacing between
-- call starts.
--
-- Each call in flight holds one of the token's two slot files, locked with
-- flock(2) (`wolkvox.core.lock`), under `<state_dir>/<token id>/` where the
-- token id is a hash that does not reveal the token.  The kernel drops a
-- dead process's locks, so a crashed cron job never keeps a slot.  Spacing
-- uses a `last` file holding the time of the latest start.
-- Inside nginx the slots and the spacing live in a shared dict instead
-- (`dict`): slot keys added with a lifetime, so a worker that dies frees
-- them when they expire.  Without either (`state_dir = false`) the limits
-- hold within the process only.
-- @module wolkvox.pacer

local setmetatable, tonumber, format, open, require =
    setmetatable, tonumber, string.format, io.open, require

local M = {}

--- wolkvox's limit of simultaneous calls per token.
M.TOKEN_SLOTS = 2

--- How long to wait before asking again for a busy slot (seconds).
M.POLL = 0.05

local Pacer = {}
Pacer.__index = Pacer

--- A pacer.
-- @tparam table opts `dir` (the token's state directory, which exists) or
--   `dict` (an ngx.shared dict) with `key` (the token id) and `ttl` (slot
--   lifetime, seconds), or neither; `max_concurrent` (this client's own
--   cap), `min_interval` (seconds), `time` (epoch seconds function)
function M.new(opts)
    local self = setmetatable({ dir = opts.dir, dict = opts.dict, key = opts.key, ttl = opts.ttl or 120,
        cap = opts.max_concurrent or M.TOKEN_SLOTS, min_interval = opts.min_interval or 0,
        time = opts.time or os.time, held = 0, last_start = nil }, Pacer)
    if self.dir then
        self.core = require "wolkvox.core"
        self.time = self.core.time
    end
    return self
end

-- A slot of the token: a locked file, a dict key, or only a count.
function Pacer:take_slot()
    if self.dir then
        for i = 1, M.TOKEN_SLOTS do
            local lock = self.core.lock(self.dir .. "/slot" .. i)
            if lock then
                return { lock = lock }
            end
        end
        return nil
    elseif self.dict then
        for i = 1, M.TOKEN_SLOTS do
            local key = "wolkvox:slot:" .. self.key .. ":" .. i
            if self.dict:add(key, true, self.ttl) then
                return { dict_key = key }
            end
        end
        return nil
    end
    return {}
end

-- Claim the start time, or say how long until min_interval has passed.
function Pacer:claim_start()
    local now = self.time()
    if self.dict then
        local key = "wolkvox:pace:" .. self.key
        if self.dict:add(key, now, self.min_interval) then
            return true
        end
        local last = self.dict:get(key) or now
        return false, self.min_interval - (now - last)
    end
    local last = self:last()
    if last and now - last < self.min_interval then
        return false, self.min_interval - (now - last)
    end
    self:stamp(now)
    return true
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
    local slot = self:take_slot()
    if not slot then
        return nil, M.POLL, "slot"
    end
    if self.min_interval > 0 then
        local ok, wait = self:claim_start()
        if not ok then
            self.held = self.held + 1
            self:release(slot)
            return nil, wait, "interval"
        end
    end
    self.held = self.held + 1
    return slot
end

--- Give a slot back (idempotent).
function Pacer:release(slot)
    if slot and not slot.released then
        slot.released = true
        self.held = self.held - 1
        if slot.lock then
            slot.lock:release()
        elseif slot.dict_key then
            self.dict:delete(slot.dict_key)
        end
    end
end

return M
