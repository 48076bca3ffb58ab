--- Running a plan of calls over a transport: at most `limit` in flight, each
-- start cleared by the pacer, failed items retried after their wait, and
-- each finished item handed back in plan order, whatever order the answers
-- arrive in.  An item may be replaced, when it finishes, by new items (a
-- truncated window by its two halves); they take its place in the order.
--
-- Every way out gives back what was taken: a start that raises releases its
-- slot; an error while waiting (an interrupt comes through there) or while
-- reading a result aborts what is in flight, releasing its slots as
-- abandoned (the server may still be running those calls), and raises the
-- same error value again.
-- @module wolkvox.call.schedule

local errors = require "wolkvox.errors"

local setmetatable, pairs, remove, insert, error, pcall, type, format, min, max, huge =
    setmetatable, pairs, table.remove, table.insert, error, pcall, type, string.format,
    math.min, math.max, math.huge

local M = {}

local Schedule = {}
Schedule.__index = Schedule

--- A schedule over `transport` with `limit` calls in flight.
-- Handlers: `request(item)` gives an item's request; `finish(item, res)`
-- reads its result and returns nothing (done), a list of items to run in its
-- place, or `"retry", seconds[, "serial"]`; it may raise.  `acquire(item)`
-- returns a slot, or nil and seconds to wait; `release(slot, abandoned)`
-- (`abandoned`: the call may still run at the server; a table slot is also
-- marked `slot.abandoned = true`); `abandon(sends)` is told what aborted
-- transfers had sent; `now()` and `sleep(s)` are the clock; `deadline`
-- (optional, on the `now()` clock): when nothing is in flight and the next
-- start would come after it, the schedule raises a `transport` error with
-- reason "timeout" instead of waiting.
function M.new(transport, limit, handlers)
    return setmetatable({
        transport = transport, limit = limit, h = handlers,
        items = {}, pos = 1, inflight = 0, by_id = {}, blocked_until = nil, taking = nil,
    }, Schedule)
end

-- Give a slot back to the pacer, saying whether its call may still run.
local function release(h, slot, abandoned)
    if abandoned and type(slot) == "table" then
        slot.abandoned = true
    end
    h.release(slot, abandoned or false)
end

--- Append an item to the plan.
function Schedule:add(item)
    item.state = "pending"
    self.items[#self.items + 1] = item
end

--- Items not started yet, in plan order (for re-planning).
function Schedule:pending()
    local out = {}
    for i = self.pos, #self.items do
        local item = self.items[i]
        if item.state == "pending" and not item.attempts then
            out[#out + 1] = item
        end
    end
    return out
end

--- Put `list` in the place of `item` (pending or just finished).
function Schedule:replace(item, list)
    local items = self.items
    for i = self.pos, #items do
        if items[i] == item then
            remove(items, i)
            for k = #list, 1, -1 do
                list[k].state = "pending"
                insert(items, i, list[k])
            end
            return
        end
    end
    error("schedule: item not in the plan")
end

-- Start what may start now; note when a blocked start may be tried again.
function Schedule:fill()
    local items, h = self.items, self.h
    local now = h.now()
    self.blocked_until = nil
    for i = self.pos, #items do
        if self.inflight >= self.limit then
            return
        end
        local item = items[i]
        if item.state == "pending" and (item.not_before or 0) <= now
                and not (item.alone and self.inflight > 0) then
            local slot, wait = h.acquire(item)
            if not slot then
                self.blocked_until = now + wait
                return
            end
            -- Held here until the transfer owns it: abort() releases it too.
            self.taking = slot
            local ok, req = pcall(h.request, item)
            local id
            if ok then
                ok, id = pcall(self.transport.start, self.transport, req)
            else
                id = req
            end
            self.taking = nil
            if not ok then
                -- Nothing went out: the slot is free again at once.
                release(h, slot, false)
                error(id, 0)
            end
            item.state, item.slot = "inflight", slot
            self.by_id[id] = item
            self.inflight = self.inflight + 1
        end
    end
end

-- The earliest time a pending item may start: its backoff, and no earlier
-- than the pacer allows.
function Schedule:next_start()
    local t = huge
    for i = self.pos, #self.items do
        local item = self.items[i]
        if item.state == "pending" then
            t = min(t, item.not_before or 0)
        end
    end
    if self.blocked_until and t ~= huge then
        t = max(t, self.blocked_until)
    end
    return t
end

--- Abort what is in flight (after an error, or when the caller stops).
-- Its calls are abandoned: they may still run at the server, so their slots
-- stay busy for the pacer until the server must have ended them.
function Schedule:abort()
    local h = self.h
    if self.taking then
        local slot = self.taking
        self.taking = nil
        release(h, slot, false)
    end
    if self.inflight > 0 then
        local okc, _, sends = pcall(self.transport.cancel, self.transport)
        for _, item in pairs(self.by_id) do
            local slot = item.slot
            item.slot = nil
            release(h, slot, true)
        end
        self.inflight, self.by_id = 0, {}
        if h.abandon and okc then
            h.abandon(sends or 0)
        end
    end
    self.pos = #self.items + 1
end

-- How far past the deadline a start must be before the message says by
-- how much (the pacer polls a busy slot every few hundredths of a second:
-- that is no measure of what a longer deadline would have needed).
local WORTH_SAYING = 0.1

-- Raise the timeout of a deadline that passes before the next start (`t`,
-- the earliest it could come).
local function too_late(self, t, now)
    local over = t - self.h.deadline
    -- (Given up on at once when the start is far off: the deadline may not
    -- have passed yet.)
    local msg = now < self.h.deadline and "the deadline would pass" or "the deadline passed"
    if self.blocked_until and t >= self.blocked_until then
        msg = msg .. " while waiting for a free slot of the token"
    else
        msg = msg .. " before the next attempt could start"
    end
    if t ~= huge and over >= WORTH_SAYING then
        msg = msg .. format(" (its earliest start is %.1f s after the deadline)", over)
    end
    errors.throw("transport", { reason = "timeout", retryable = false, message = msg })
end

--- The next finished item in plan order, or nil when the plan is done.
function Schedule:next()
    local h = self.h
    while true do
        local head = self.items[self.pos]
        if head == nil then
            return nil
        end
        if head.state == "done" then
            self.pos = self.pos + 1
            return head
        end
        local ok, err = pcall(self.fill, self)
        if not ok then
            self:abort()
            error(err, 0)
        end
        if self.inflight == 0 then
            -- Nothing to wait for but time: a retry's backoff, or a slot.
            local t = self:next_start()
            if t == huge then
                error("schedule: nothing in flight and nothing to start")
            end
            local now = h.now()
            if h.deadline and t > h.deadline then
                too_late(self, t, now)
            end
            local wait = t - now
            if wait > 0 then
                h.sleep(wait)
            end
        else
            local okw, id, res = pcall(self.transport.wait, self.transport)
            if not okw then
                -- An interrupt, or a broken transport: give back what is held.
                self:abort()
                error(id, 0)
            end
            local item = id and self.by_id[id]
            if not item then
                self:abort()
                error("schedule: no transfer in flight for a pending item")
            end
            self.by_id[id] = nil
            self.inflight = self.inflight - 1
            -- A call we gave up on after its request went out (our timeout)
            -- may still run at the server.  (When the other side ended it,
            -- a reset or a cut answer, the server is done with it.)
            local e = type(res) == "table" and res.error
            local abandoned = type(e) == "table" and e.kind == "transport" and e.sent ~= false
                and e.reason == "timeout"
            local slot = item.slot
            item.slot = nil
            release(h, slot, abandoned)
            local okf, outcome, wait, mode = pcall(h.finish, item, res)
            if not okf then
                self:abort()
                error(outcome, 0)
            end
            if outcome == "retry" then
                item.state, item.not_before = "pending", h.now() + wait
                if mode == "serial" then
                    -- The server counted more calls in flight than we had:
                    -- go on one at a time, after what is in flight now.
                    self.limit, item.alone = 1, true
                end
            elseif outcome then
                self:replace(item, outcome)
            else
                item.state = "done"
            end
        end
    end
end

return M
