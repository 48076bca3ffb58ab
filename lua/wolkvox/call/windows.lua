--- Cutting a date range into the windows the API accepts.
-- All values are wall-clock seconds (see `wolkvox.dates`).  A window is
-- `{ from = w1, to = w2 }` with both ends inclusive; the next window starts
-- one second after the previous one ends, so no second is asked twice or
-- skipped.  Ranges come from `wolkvox.dates.parse`, which keeps them within
-- 2000..2100, so a plan stays small (at most some 1,200 windows of 31 days,
-- or 37,000 days); `MAX_PIECES` stops anything larger before it is built.
-- @module wolkvox.call.windows

local dates = require "wolkvox.dates"

local floor, max, error, format, tostring = math.floor, math.max, error, string.format, tostring

local M = {}

M.DAY = 86400

--- The most windows or periods one split may make (a programming error beyond).
M.MAX_PIECES = 1000000

-- Refuse a range that would make more than MAX_PIECES pieces of `piece`
-- seconds (or a NaN end), before any is made.
local function bounded(from, to, piece, what)
    local n = (to - from) / piece
    if n ~= n or n >= M.MAX_PIECES then
        error(format("%s: a range of %s seconds would make more than %d pieces", what,
            tostring(to - from), M.MAX_PIECES), 3)
    end
end

--- Seconds of a split boundary name ("day", "hour", "30min"), or nil.
M.BOUNDARY = { day = 86400, hour = 3600, ["30min"] = 1800 }

--- The longest span (to - from) one call may ask for endpoint `e`:
-- 31 days less a second, or `max_hours` for endpoints that say so.
function M.max_span(e, max_days)
    if e.max_hours then
        return e.max_hours * 3600 - 1
    end
    return (max_days or 31) * M.DAY - 1
end

-- The last second before the boundary at or below `t` + 1, when that keeps
-- the window non-empty; otherwise `t` itself.
local function align_end(t, from, step)
    if not step then
        return t
    end
    local e = floor((t + 1) / step) * step - 1
    if e < from then
        return t
    end
    return e
end

--- Split [from, to] into consecutive windows of at most `span` seconds
-- (to - from <= span), each ending on a `step` boundary when given.
function M.split(from, to, span, step)
    bounded(from, to, max(span + 1, 1), "windows.split")
    local out = {}
    local s = from
    while s <= to do
        local e = s + span
        if e >= to then
            e = to
        else
            e = align_end(e, s, step)
        end
        out[#out + 1] = { from = s, to = e }
        s = e + 1
    end
    return out
end

--- Halve window `w` (on a `step` boundary when given).
-- @return the two halves, or nil when `w` cannot be split further
--   (span below `min_span`, or no boundary inside it)
function M.bisect(w, min_span, step)
    local span = w.to - w.from + 1
    if span <= max(min_span or 1, 1) then
        return nil
    end
    local mid = w.from + floor(span / 2) -- first second of the second half
    if step then
        mid = floor(mid / step) * step
        if mid <= w.from then
            mid = mid + step
        end
        if mid > w.to then
            return nil
        end
    end
    return { from = w.from, to = mid - 1 }, { from = mid, to = w.to }
end

--- The calendar periods ("day", "week" (ISO, from Monday) or "month") that
-- cover [from, to], clipped to it; each with a `label`.
local PERIOD = { day = M.DAY, week = 7 * M.DAY, month = 28 * M.DAY }

function M.periods(from, to, per)
    bounded(from, to, PERIOD[per] or M.DAY, "windows.periods")
    local out = {}
    local s = from
    while s <= to do
        local y, mo, d = dates.fields(s)
        local day = floor(s / M.DAY)
        local first_next, label
        if per == "day" then
            first_next = (day + 1) * M.DAY
            label = string.format("%04d-%02d-%02d", y, mo, d)
        elseif per == "week" then
            -- 1970-01-01 was a Thursday: day % 7 == 0 is a Thursday.
            local monday = day - (day + 3) % 7
            first_next = (monday + 7) * M.DAY
            local wy, wm, wd = dates.civil_from_days(monday)
            label = string.format("week of %04d-%02d-%02d", wy, wm, wd)
        elseif per == "month" then
            local ny, nm = y, mo + 1
            if nm > 12 then
                ny, nm = y + 1, 1
            end
            first_next = dates.days_from_civil(ny, nm, 1) * M.DAY
            label = string.format("%04d-%02d", y, mo)
        else
            error("unknown period '" .. tostring(per) .. "'", 2)
        end
        local e = first_next - 1
        if e > to then
            e = to
        end
        out[#out + 1] = { from = s, to = e, label = label }
        s = e + 1
    end
    return out
end

return M
