--- The daily quota ledger of an operation.
-- wolkvox gives an operation licences x 1000 calls a day, shared by all its
-- tokens; every call costs one (agentbox calls none).  The ledger counts the
-- calls this machine spent today in `<state_dir>/<operation id>/calls-YYYY-MM-DD`:
-- one byte appended per call, so the count is the file's size and two
-- processes appending at once never lose a call (O_APPEND writes are
-- atomic).  The day turns at midnight on the operation's clock.  A
-- measurement from token_info (which sees every token of the operation) is
-- kept beside it, and later calls are counted on top of it.  Inside nginx
-- the counts live in a shared dict (`dict`), incremented atomically by every
-- worker.  The files are never followed through symbolic links and are
-- created 0600 in a directory only this user may change.
--
-- The limit: a `daily_limit` the user gave (or `licenses` x 1000) is the one
-- in force, even after token_info measured another; `prefer_measured` makes
-- a measured limit win.  `status()` says which (`limit_source`) and reports
-- the measured figure apart (`measured_limit`).
-- @module wolkvox.limits.quota

local dates = require "wolkvox.dates"
local errors = require "wolkvox.errors"

local setmetatable, tonumber, tostring, format, floor, rep, max, require =
    setmetatable, tonumber, tostring, string.format, math.floor, string.rep, math.max, require

local M = {}

local Ledger = {}
Ledger.__index = Ledger

-- A ledger file that cannot be written (a full disk, a read-only file
-- system): a local failure, as for the pacer's files (kind output, exit 1).
local function unwritable(message)
    errors.throw("output", { message = message .. " (free space there, set state_dir to another directory, "
        .. "or state_dir = false)" })
end

local function refuse(message)
    errors.throw("params", { message = message .. " (set state_dir to another directory, or state_dir = false)" })
end

--- A ledger.
-- @tparam table opts `dir` (the operation's state directory) or `dict` (an
--   ngx.shared dict) with `key` (the operation id), or neither (memory);
--   `utc_offset`, `daily_limit` (the user's; nil: unknown until measured),
--   `prefer_measured` (a measured limit replaces `daily_limit`), `reserve`,
--   `time` (epoch seconds function); in fleet mode `shared` (a
--   `wolkvox.limits.shared` guard) and `shared_key` (the operation's part of its keys)
function M.new(opts)
    local self = setmetatable({ dir = opts.dir, dict = opts.dict, key = opts.key,
        shared = opts.shared, shared_key = opts.shared_key, pending = 0, batch = 0,
        utc_offset = opts.utc_offset or 0, limit = opts.daily_limit, reserve = opts.reserve or 0,
        prefer_measured = opts.prefer_measured and true or false,
        time = opts.time or os.time, memory = {} }, Ledger)
    if self.dir then
        self.core = require "wolkvox.core"
        -- Made if missing, and refused when others could change it.
        local ok, err = self.core.mkdir(self.dir)
        if not ok then
            refuse("unusable state directory: " .. tostring(err))
        end
    end
    return self
end

-- Keys of the dict backend.
local KEEP = 3 * 86400
function Ledger:dict_key(what, day)
    return "wolkvox:" .. what .. ":" .. self.key .. ":" .. day
end

--- Today on the operation's clock, "YYYY-MM-DD".
function Ledger:day()
    return self:day_before(0)
end

-- The size of a ledger file (0 when missing); a link or a stranger is refused.
function Ledger:size_of(path)
    local n, err, code = self.core.file_size(path)
    if n then
        return n
    elseif code == "missing" then
        return 0
    end
    refuse("cannot read the quota ledger: " .. tostring(err))
end

-- The content of a ledger file, or nil when missing.
function Ledger:read(path)
    local text, err, code = self.core.read_file(path)
    if text or code == "missing" then
        return text
    end
    refuse("cannot read the quota ledger: " .. tostring(err))
end

-- The fleet backend's key of `what` for `day`.
function Ledger:fleet_key(what, day)
    return what .. ":" .. self.shared_key .. ":" .. day
end

-- Calls counted in today's file (or in memory without a directory).
function Ledger:counted(day)
    if self.shared then
        local ok, v = self.shared:call("get", self:fleet_key("calls", day))
        local n = ok and type(v) == "string" and v:match("^%d+$") and tonumber(v)
        if ok and v and not n then
            -- (a planted or broken value: read as 0 it would spend the day twice)
            self.shared:failed(format("holds '%s' for today's calls, not a count",
                (tostring(v):sub(1, 24):gsub("[%c'\\\128-\255]", "?"))))
        elseif ok then
            return (n or 0) + self.pending + (self.unsure and self.unsure.n or 0)
        end
    end
    return self:local_counted(day)
end

-- Calls this host counted (files, dict or memory).
function Ledger:local_counted(day)
    if self.dict then
        return self.dict:get(self:dict_key("calls", day)) or 0
    end
    if not self.dir then
        return self.memory[day] or 0
    end
    return self:size_of(self.dir .. "/calls-" .. day)
end

-- Today's measurement: used, limit, and the count when it was taken.
function Ledger:measurement(day)
    local text
    local ok, v
    if self.shared then
        ok, v = self.shared:call("get", self:fleet_key("measured", day))
    end
    if ok then
        text = v or nil
    elseif self.dict then
        text = self.dict:get(self:dict_key("measured", day))
    elseif not self.dir then
        return self.memory.measured and self.memory.measured.day == day and self.memory.measured or nil
    else
        text = self:read(self.dir .. "/measured-" .. day)
    end
    local used, limit, at = (text or ""):match("^(%d+) (%d+) (%d+)")
    if not used then
        return nil
    end
    return { used = tonumber(used), limit = tonumber(limit), at = tonumber(at) }
end

-- Days of files kept: a day's counts are dropped when it is this old.
M.KEEP_DAYS = 8

-- The "YYYY-MM-DD" of `back` days before today.
function Ledger:day_before(back)
    local days = floor((self.time() + self.utc_offset) / 86400) - back
    return format("%04d-%02d-%02d", dates.civil_from_days(days))
end

-- Once a day, remove the files of the days that are no longer kept.
function Ledger:prune(day)
    if not self.dir or self.pruned == day then
        return
    end
    self.pruned = day
    for back = M.KEEP_DAYS, M.KEEP_DAYS + 31 do
        local old = self:day_before(back)
        os.remove(self.dir .. "/calls-" .. old)
        os.remove(self.dir .. "/measured-" .. old)
    end
end

--- Count `n` calls spent now.
function Ledger:spend(n)
    if n <= 0 then
        return
    end
    local day = self:day()
    self:prune(day)
    if self.shared then
        self:flush(day, n)
    end
    if self.dict then
        self.dict:incr(self:dict_key("calls", day), n, 0, KEEP)
        return
    end
    if not self.dir then
        self.memory[day] = (self.memory[day] or 0) + n
        return
    end
    local ok, err = self.core.append_file(self.dir .. "/calls-" .. day, rep(".", n))
    if not ok then
        unwritable("cannot count a call in the quota ledger: " .. tostring(err))
    end
end

--- Add the calls not yet counted by the fleet backend (and `n` more);
-- never raises: those the backend does not take wait for the next time.
-- `last`: the client closes, the backend is asked even if it failed a
-- moment ago (those counts have no next time).  Counts go in numbered
-- batches: one whose answer was lost (Redis went away after adding it, or
-- before) is sent again as it was, before anything else, and the backend
-- adds a batch once.
-- @return true when nothing is left waiting
function Ledger:flush(day, n, last)
    if not self.shared then
        return true
    end
    local try = self.shared[last and "try_now" or "try"]
    local u = self.unsure
    if u then
        if not try(self.shared, "add", u.key, u.n, M.FLEET_KEEP, self:adder(), u.batch) then
            self.pending = self.pending + (n or 0)
            return false
        end
        self.unsure = nil
    end
    n = self.pending + (n or 0)
    self.pending = 0
    if n > 0 then
        self.batch = self.batch + 1
        local key = self:fleet_key("calls", day or self:day())
        if not try(self.shared, "add", key, n, M.FLEET_KEEP, self:adder(), self.batch) then
            self.unsure = { key = key, n = n, batch = self.batch }
        end
    end
    return self.unsure == nil
end

-- This ledger's name for its batches: random, from the system's generator
-- where the C core is (else from what differs between processes).
function Ledger:adder()
    if not self.adder_id then
        local ok, core = pcall(require, "wolkvox.core")
        self.adder_id = ok and core.random_hex and core.random_hex(16)
            or require("wolkvox.transport").fingerprint(format("%s %s %.17g %.17g %.17g", tostring(self),
                tostring({}), os.time(), os.clock(), math.random()))
    end
    return self.adder_id
end

--- Seconds a day's count is kept by a fleet backend: a week.
M.FLEET_KEEP = 7 * 86400

--- Record what token_info said: calls used today by every token, and the
-- limit (in force unless the user gave one; see `status`).
function Ledger:measured(used, limit)
    local day = self:day()
    local at = self:counted(day)
    local text = format("%d %d %d", used, limit or 0, at)
    if self.shared then
        self.shared:call("put", self:fleet_key("measured", day), text, M.FLEET_KEEP)
        -- (and this host's own record below, used while the backend is down)
        at = self:local_counted(day)
        text = format("%d %d %d", used, limit or 0, at)
    end
    if self.dict then
        self.dict:set(self:dict_key("measured", day), text, KEEP)
    elseif not self.dir then
        self.memory.measured = { day = day, used = used, limit = limit or 0, at = at }
    else
        local ok, err = self.core.write_file(self.dir .. "/measured-" .. day, text .. "\n")
        if not ok then
            unwritable("cannot write the quota ledger: " .. tostring(err))
        end
    end
end

--- Today's state: `used`, `limit` (or nil), `remaining`, `source` (of
-- `used`: "measured" when token_info was asked today, else "counted": only
-- this machine's calls), `limit_source` ("configured": the `daily_limit` or
-- `licenses` given, "measured": token_info's, or nil when none is known),
-- `measured_limit` (token_info's figure today, in force or not), `day`.
function Ledger:status()
    local day = self:day()
    local counted = self:counted(day)
    local m = self:measurement(day)
    local used, source = counted, "counted"
    local limit, limit_source = self.limit, self.limit and "configured" or nil
    local measured_limit = m and m.limit > 0 and m.limit or nil
    if m then
        used, source = m.used + max(0, counted - m.at), "measured"
    end
    if measured_limit and (not limit or self.prefer_measured) then
        limit, limit_source = measured_limit, "measured"
    end
    return { used = used, limit = limit, remaining = limit and max(0, limit - used) or nil,
        reserve = self.reserve, source = source, limit_source = limit_source,
        measured_limit = measured_limit, day = day }
end

--- Refuse, with a `quota` error and no call spent, when `planned` more
-- calls would cross the limit less the reserve.
function Ledger:check(planned, endpoint)
    local s = self:status()
    if s.limit and planned > 0 and s.used + planned > s.limit - self.reserve then
        errors.throw("quota", { endpoint = endpoint, calls = 0, message = format(
            "%d call(s) planned, %d of %d used today (%s; the limit is %s), %d kept in reserve: "
            .. "refused before sending", planned, s.used, s.limit, s.source, s.limit_source, self.reserve) })
    end
    return s
end

return M
