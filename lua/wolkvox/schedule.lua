--- Running a plan of calls over a transport: at most `limit` in flight, and
-- each finished item handed back in plan order, whatever order the answers
-- arrive in.  An item may be replaced, when it finishes, by new items (a
-- truncated window by its two halves); they take its place in the order.
-- @module wolkvox.schedule

local setmetatable, remove, insert, error = setmetatable, table.remove, table.insert, error

local M = {}

local Schedule = {}
Schedule.__index = Schedule

--- A schedule over `transport` with `limit` calls in flight.
-- `handlers.request(item)` returns the request of an item;
-- `handlers.finish(item, res)` reads its result: it returns nothing when
-- the item is done, or a list of items to run in its place; it may raise.
-- `handlers.abandon(sends)` is told what aborted transfers had sent.
function M.new(transport, limit, handlers)
    return setmetatable({
        transport = transport, limit = limit, h = handlers,
        items = {}, pos = 1, inflight = 0, by_id = {},
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
        if self.items[i].state == "pending" then
            out[#out + 1] = self.items[i]
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

function Schedule:fill()
    local items = self.items
    for i = self.pos, #items do
        if self.inflight >= self.limit then
            return
        end
        local item = items[i]
        if item.state == "pending" then
            local id = self.transport:start(self.h.request(item))
            item.state = "inflight"
            self.by_id[id] = item
            self.inflight = self.inflight + 1
        end
    end
end

--- Abort what is in flight (after an error, or when the caller stops).
function Schedule:abort()
    if self.inflight > 0 then
        local _, sends = self.transport:cancel()
        self.inflight, self.by_id = 0, {}
        if self.h.abandon then
            self.h.abandon(sends or 0)
        end
    end
    self.pos = #self.items + 1
end

--- The next finished item in plan order, or nil when the plan is done.
function Schedule:next()
    while true do
        local head = self.items[self.pos]
        if head == nil then
            return nil
        end
        if head.state == "done" then
            self.pos = self.pos + 1
            return head
        end
        self:fill()
        local id, res = self.transport:wait()
        local item = id and self.by_id[id]
        if not item then
            error("schedule: no transfer in flight for a pending item")
        end
        self.by_id[id] = nil
        self.inflight = self.inflight - 1
        local ok, replacement = pcall(self.h.finish, item, res)
        if not ok then
            self:abort()
            error(replacement, 0)
        end
        if replacement then
            self:replace(item, replacement)
        else
            item.state = "done"
        end
    end
end

return M
