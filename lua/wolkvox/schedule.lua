--- Running a plan of calls over a transport: at most `limit` in flight, each
-- start cleared by the pacer, failed items retried after their wait, and
-- each finished item handed back in plan order, whatever order the answers
-- arrive in.  An item may be replaced, when it finishes, by new items (a
-- truncated window by its two halves); they take its place in the order.
-- @module wolkvox.schedule

local setmetatable, pairs, remove, insert, error, pcall, min, max, huge =
    setmetatable, pairs, table.remove, table.insert, error, pcall, math.min, math.max, math.huge

local M = {}

local Schedule = {}
Schedule.__index = Schedule

--- A schedule over `transport` with `limit` calls in flight.
-- Handlers: `request(item)` gives an item's request; `finish(item, res)`
-- reads its result and returns nothing (done), a list of items to run in its
-- place, or `"retry", seconds[, "serial"]`; it may raise.  `acquire(item)`
-- returns a slot, or nil and seconds to wait; `release(slot)`;
-- `abandon(sends)` is told what aborted transfers had sent; `now()` and
-- `sleep(s)` are the clock.
function M.new(transport, limit, handlers)
    return setmetatable({
        transport = transport, limit = limit, h = handlers,
        items = {}, pos = 1, inflight = 0, by_id = {}, blocked_until = nil,
    }, Schedule)
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
            local ok, req = pcall(h.request, item)
            if not ok then
                h.release(slot)
                error(req, 0)
            end
            local id = self.transport:start(req)
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
function Schedule:abort()
    if self.inflight > 0 then
        local _, sends = self.transport:cancel()
        for _, item in pairs(self.by_id) do
            self.h.release(item.slot)
        end
        self.inflight, self.by_id = 0, {}
        if self.h.abandon then
            self.h.abandon(sends or 0)
        end
    end
    self.pos = #self.items + 1
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
            local wait = t - h.now()
            if wait > 0 then
                h.sleep(wait)
            end
        else
            local id, res = self.transport:wait()
            local item = id and self.by_id[id]
            if not item then
                error("schedule: no transfer in flight for a pending item")
            end
            self.by_id[id] = nil
            self.inflight = self.inflight - 1
            h.release(item.slot)
            item.slot = nil
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
