--- The per-token limiter: at most two calls in flight for a token, across
-- every process of the machine, and an optional minimum spacing between
-- call starts.
--
-- Each call in flight holds one of the token's two slot files, locked with
-- flock(2) (`wolkvox.core.lock`), under `<state_dir>/<token id>/` where the
-- token id is a hash that does not reveal the token.  The kernel drops a
-- dead process's locks.  Spacing uses a `last` file holding the time of the
-- latest start.  State files are never followed through symbolic links and
-- are created 0600 in a directory only this user may change (see
-- `wolkvox.core.mkdir`).
--
-- A call the client gives up on (its timeout, a deadline, a loop left early,
-- an interrupt, a killed process) may still run at wolkvox, and keep one of
-- the token's two places there, until the server's own limit of
-- `SERVER_LIMIT` seconds ends it.  So a slot stays busy until then: when a
-- slot is taken its file says "busy until start + SERVER_LIMIT"; a call that
-- got its answer clears that, an abandoned one leaves it, and whoever takes
-- the lock later waits for the stamp to pass.  A process killed while a call
-- is in flight leaves the stamp too, which is right.
--
-- Inside nginx the slots and the spacing live in a shared dict instead
-- (`dict`): slot keys added with a lifetime, so a worker that dies frees
-- them when they expire; an abandoned slot's key is kept until start +
-- SERVER_LIMIT.  Without either (`state_dir = false`) the limits hold within
-- the process only (abandoned slots included).
--
-- In fleet mode (`shared`: a guarded backend of `wolkvox.limits.shared`, e.g.
-- Redis) the slots are leases of `lease` seconds in the backend, shared by
-- every host, and the spacing is claimed there too; when the backend fails
-- and the guard says "local", this host's own slots (above) stand in.
-- @module wolkvox.limits.pacer

local errors = require "wolkvox.errors"

local setmetatable, tonumber, tostring, format, require, ipairs, pcall, error, min, huge =
    setmetatable, tonumber, tostring, string.format, require, ipairs, pcall, error, math.min, math.huge

local M = {}

--- wolkvox's limit of simultaneous calls per token.
M.TOKEN_SLOTS = 2

--- Seconds after which the server has ended any call (its own timeout):
-- an abandoned call's slot stays busy this long from its start.
M.SERVER_LIMIT = require("wolkvox.defaults").UNSET.server_limit

--- How long to wait before asking again for a busy slot (seconds).
M.POLL = 0.05

local Pacer = {}
Pacer.__index = Pacer

local function refuse(message)
    errors.throw("params", { message = message .. " (set state_dir to another directory, or state_dir = false)" })
end

-- A state file of directory `dir` could not be written (a full disk, a
-- quota, an I/O error): a local failure, said as such, naming the directory.
local function unwritable(dir, err)
    local why = tostring(err):gsub("^writing a lock file: ", "")
    errors.throw("output", { message = "cannot write the pacing state in " .. dir .. ": " .. why
        .. " (free space there, set state_dir to another directory, or state_dir = false)" })
end

-- Whether `err` (a message of the C core) says the file system is full or
-- read-only, rather than that the directory is not one we may use.
local function full(err)
    local s = tostring(err)
    return s:find("No space left on device", 1, true) or s:find("Disk quota exceeded", 1, true)
        or s:find("Read-only file system", 1, true)
end

--- A pacer.
-- @tparam table opts `dir` (the token's state directory) or `dict` (an
--   ngx.shared dict) with `key` (the token id) and `ttl` (slot lifetime,
--   seconds), or neither; `max_concurrent` (this client's own cap),
--   `min_interval` (seconds), `server_limit` (seconds an abandoned call
--   keeps its slot; default `SERVER_LIMIT`), `time` (epoch seconds function);
--   in fleet mode `shared` (a `wolkvox.limits.shared` guard), `shared_key` (the
--   token's part of its keys) and `lease` (seconds a live call's slot is
--   held at most)
function M.new(opts)
    local self = setmetatable({ dir = opts.dir, dict = opts.dict, key = opts.key, ttl = opts.ttl or 120,
        shared = opts.shared, lease = opts.lease or (opts.server_limit or M.SERVER_LIMIT) + 5,
        cap = opts.max_concurrent or M.TOKEN_SLOTS, min_interval = opts.min_interval or 0,
        server_limit = opts.server_limit or M.SERVER_LIMIT,
        time = opts.time or os.time, held = 0, last_start = nil, abandoned = {} }, Pacer)
    if self.shared then
        local k = opts.shared_key
        self.slot_keys, self.pace_key = {}, "pace:" .. k
        for i = 1, M.TOKEN_SLOTS do
            self.slot_keys[i] = "slot:" .. k .. ":" .. i
        end
    end
    if self.dir then
        self.core = require "wolkvox.core"
        self.time = self.core.time
        -- Made if missing, and refused when others could change it.
        local ok, err = self.core.mkdir(self.dir)
        if not ok then
            if full(err) then
                unwritable(self.dir, err)
            end
            refuse("unusable state directory: " .. tostring(err))
        end
    end
    return self
end

-- The busy-until stamp of a slot file ("" or a number of epoch seconds).
local function stamp_of(lock)
    return tonumber((lock:read():match("^%s*(%S+)"))) or 0
end

-- A slot of the token: a locked file, a dict key, or only a count.
-- @return the slot, or nil, the seconds until one may be free, and
--   "abandoned" when that wait is for a call a run abandoned (it may still
--   run at wolkvox: a rerun after Ctrl-C waits for it)
function Pacer:take_slot()
    local now = self.time()
    local busy_until = now + self.server_limit
    if self.shared then
        local ok, i, holder = self.shared:call("take", self.slot_keys, self.lease, M.POLL)
        if ok then
            if i then
                return { shared_key = self.slot_keys[i], holder = holder, busy_until = busy_until }
            end
            return nil, holder
        end
        -- (the backend failed and the guard said "local")
    end
    if self.dir then
        local wait, kind = huge, nil
        for i = 1, M.TOKEN_SLOTS do
            local path = self.dir .. "/slot" .. i
            local lock, why = self.core.lock(path)
            if lock then
                -- (No stamp counts for more than server_limit from now: a
                -- clock set back must not block a slot for longer.)
                local stamp = min(stamp_of(lock), now + self.server_limit)
                if stamp > now then
                    -- A call abandoned there may still run at the server.
                    lock:release()
                    if stamp - now < wait then
                        wait, kind = stamp - now, "abandoned"
                    end
                else
                    -- (lock:write raises when the file cannot be written.)
                    local ok, err = pcall(lock.write, lock, format("%.6f\n", busy_until))
                    if not ok then
                        lock:release()
                        errors.pass_interrupt(err)
                        unwritable(self.dir, err)
                    end
                    return { lock = lock, busy_until = busy_until }
                end
            elseif why == "busy" then
                if M.POLL < wait then
                    wait, kind = M.POLL, nil
                end
            elseif full(why) then
                unwritable(self.dir, why)
            else
                refuse("cannot use the pacing slot: " .. tostring(why))
            end
        end
        return nil, wait, kind
    elseif self.dict then
        for i = 1, M.TOKEN_SLOTS do
            local key = "wolkvox:slot:" .. self.key .. ":" .. i
            if self.dict:add(key, true, self.ttl) then
                return { dict_key = key, busy_until = busy_until }
            end
        end
        return nil, M.POLL
    end
    -- In memory: abandoned calls count until their stamps pass.
    local left, wait = {}, huge
    for _, t in ipairs(self.abandoned) do
        if t > now then
            left[#left + 1] = t
            wait = min(wait, t - now)
        end
    end
    self.abandoned = left
    if self.held + #left >= M.TOKEN_SLOTS then
        return nil, self.held > 0 and M.POLL or wait
    end
    return { busy_until = busy_until }
end

-- Claim the start time, or say how long until min_interval has passed.
function Pacer:claim_start()
    local now = self.time()
    if self.shared then
        local ok, claimed, wait = self.shared:call("claim", self.pace_key, self.min_interval)
        if ok then
            return claimed, wait
        end
    end
    -- (No start counts as later than now: a clock set back must not hold
    -- calls for longer than min_interval, as slot stamps are capped too.)
    if self.dict then
        local key = "wolkvox:pace:" .. self.key
        if self.dict:add(key, now, self.min_interval) then
            return true
        end
        local last = min(self.dict:get(key) or now, now)
        return false, self.min_interval - (now - last)
    end
    local last = self:last()
    if last and last > now then
        last = now
    end
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
    local text, err, code = self.core.read_file(self.dir .. "/last")
    if not text then
        if code == "missing" then
            return nil
        end
        refuse("cannot read the pacing state: " .. tostring(err))
    end
    return tonumber(text:match("^%s*(%S+)"))
end

function Pacer:stamp(t)
    self.last_start = t
    if self.dir then
        -- Replaced whole (a new file renamed over it): readers see old or new.
        local ok, err = self.core.write_file(self.dir .. "/last", format("%.6f\n", t))
        if not ok then
            unwritable(self.dir, err)
        end
    end
end

--- Take a slot for one call.
-- @return a slot (give it back with `release`), or nil and the seconds to
--   wait before trying again, and why ("slot", "abandoned": a slot an abandoned call may still hold, or "interval")
function Pacer:acquire()
    if self.held >= self.cap then
        return nil, M.POLL, "slot"
    end
    local slot, wait, kind = self:take_slot()
    if not slot then
        return nil, wait, kind or "slot"
    end
    self.held = self.held + 1
    if self.min_interval > 0 then
        local ok, started, pause = pcall(self.claim_start, self)
        if not (ok and started) then
            self:release(slot)
            if not ok then
                error(started, 0)
            end
            return nil, pause, "interval"
        end
    end
    return slot
end

--- Give a slot back (idempotent).
-- @tparam table slot what `acquire` gave
-- @tparam[opt] boolean abandoned true when the call may still run at the
--   server (its transfer was cancelled, or it failed after the request went
--   out): the slot then stays busy until its start + `server_limit`; a
--   slot marked `slot.abandoned = true` is abandoned too
function Pacer:release(slot, abandoned)
    if not slot or slot.released then
        return
    end
    abandoned = abandoned or slot.abandoned
    slot.released = true
    self.held = self.held - 1
    local left = abandoned and slot.busy_until and slot.busy_until - self.time() or 0
    if slot.shared_key then
        -- Never raises: a slot the backend could not free ends with its lease.
        self.shared:try("free", slot.shared_key, slot.holder, left > 0 and left or 0)
    elseif slot.lock then
        if left <= 0 then
            -- The call is over: the slot is free at once.  (A failure here
            -- leaves the stamp, which only makes the slot wait longer.)
            pcall(slot.lock.write, slot.lock, "")
        end
        slot.lock:release()
    elseif slot.dict_key then
        if left > 0 then
            self.dict:set(slot.dict_key, true, left)
        else
            self.dict:delete(slot.dict_key)
        end
    elseif left > 0 then
        self.abandoned[#self.abandoned + 1] = slot.busy_until
    end
end

return M
