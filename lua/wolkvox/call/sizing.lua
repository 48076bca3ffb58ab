--- Sizing the windows of a range from what the server answered.
-- A window that answers the row cap (truncated) is asked again in smaller
-- windows; the windows not started yet are cut (or joined) to fit the
-- density seen.  Two ways:
--
-- * halving (endpoints without a row time, bucketed reports, or with
--   `density` off): the window in two halves, and every window not started
--   yet cut to that span;
-- * density (detail reports whose registry entry names a `time_field`):
--   the rows of a truncated answer show where its rows lie, and a window
--   that fitted shows the density exactly; windows are sized to hold
--   a share (`TARGET`) of the cap.
--
-- The server's order for a truncated answer is not documented: it may be
-- the first rows in time (then the answer shows the density exactly) or
-- any rows of the window (then it shows only that the window has at least
-- the cap).  Nothing here depends on which: a truncated window is cut in
-- parts each at most half of it, the windows always cover the range without
-- a gap or an overlap, and a joined window never holds one that was
-- truncated; a wrong guess costs calls, never rows.  No row of a truncated
-- answer is kept: which rows it left out is unknown (it need not be a
-- time-ordered prefix), so no part of its window is known complete without
-- asking again, and reusing its rows could not save a call.
-- @module wolkvox.call.sizing

local dates = require "wolkvox.dates"
local windows = require "wolkvox.call.windows"

local type, ipairs, floor, ceil, max, min, sort =
    type, ipairs, math.floor, math.ceil, math.max, math.min, table.sort

local M = {}

--- Size windows from the density the answers show (false: plain halving,
-- kept for comparison).
M.density = true

--- The share of the row cap a window is sized to hold at first: room for
-- the density to vary between the window measured and the next.  Each
-- window sized so that is truncated anyway lowers it by `STEP_DOWN`, to
-- `LOWEST` at least (real densities vary by hour and weekday).
M.TARGET = 0.95
M.STEP_DOWN = 0.05
M.LOWEST = 0.6

--- The most windows one window is cut into at a time (a density measured
-- on a burst of one second is not spread over a month in windows of a
-- minute).
M.MAX_PARTS = 256

-- ---- halving -----------------------------------------------------------------

-- The two halves of `item`; windows not started yet cut to that span.
local function halve(job, sched, item)
    local a, b = windows.bisect(item, job.min_span, job.step)
    if not a then
        return nil
    end
    -- Windows not started yet are cut to the span that now has to fit;
    -- a window that was already in flight is cut to it too, not halved.
    local span = a.to - a.from
    if span < job.span_cap then
        job.span_cap = span
        for _, p in ipairs(sched:pending()) do
            if p.to - p.from > span then
                local parts = windows.split(p.from, p.to, span, job.step)
                job.total = job.total + #parts - 1
                sched:replace(p, parts)
            end
        end
    elseif span > job.span_cap then
        local parts = windows.split(item.from, item.to, job.span_cap, job.step)
        job.total = job.total + #parts - 1
        return parts
    end
    job.total = job.total + 1
    return { a, b }
end

-- ---- density -----------------------------------------------------------------

local function state(job)
    local st = job.sizing
    if not st then
        st = { truncated = {}, target = M.TARGET }
        job.sizing = st
    end
    return st
end

local function by_density(job)
    return M.density and job.mode == "windows" and job.e.time_field ~= nil and not job.step
end

-- The times of `rows` inside `item`, sorted; rows without a time the dates
-- module reads, or outside the window, are left out.
local function row_times(field, item, rows)
    local out = {}
    for _, row in ipairs(rows) do
        local v = type(row) == "table" and row[field]
        if type(v) == "string" then
            local t = dates.parse(v)
            if t and t >= item.from and t <= item.to then
                out[#out + 1] = t
            end
        end
    end
    sort(out)
    return out
end

-- True when [from, to] holds a window that answered the cap: it would be
-- truncated too.
local function holds_truncated(st, from, to)
    for _, w in ipairs(st.truncated) do
        if w.from >= from and w.to <= to then
            return w
        end
    end
    return nil
end

-- [from, to] in windows of `len` seconds (longer when more than `parts`
-- windows would be needed, but never over `limit`), none holding a window
-- known truncated, none shorter than `min_span` unless the whole is.
local function cut(st, from, to, len, min_span, limit, parts)
    len = min(max(len, ceil((to - from + 1) / parts), 1), limit)
    local out, s = {}, from
    while s <= to do
        local e = min(s + len - 1, to)
        if to - e < min_span and to - s < limit then
            e = to -- no short tail: the last window takes it
        end
        local w = holds_truncated(st, s, e)
        while w do
            e = w.to - 1
            w = holds_truncated(st, s, e)
        end
        out[#out + 1] = { from = s, to = e }
        s = e + 1
    end
    return out
end

-- Runs of windows not started yet that lie after `after`, each a list of
-- windows that follow one another without a gap.
local function pending_runs(sched, after)
    local runs, run = {}, nil
    for _, p in ipairs(sched:pending()) do
        if p.from > after then
            if run and run[#run].to + 1 == p.from then
                run[#run + 1] = p
            else
                run = { p }
                runs[#runs + 1] = run
            end
        end
    end
    return runs
end

-- Put `parts` in the place of the windows of `run`.
local function replace_run(job, sched, run, parts)
    sched:replace(run[1], parts)
    for i = 2, #run do
        sched:replace(run[i], {})
    end
    job.total = job.total + #parts - #run
end

-- Seconds a window may span: the endpoint's limit, as a length.
local function longest(job)
    return windows.max_span(job.e) + 1
end

-- The span halving would settle on at `rate`: the longest window halved
-- until it holds fewer rows than the cap.  Sizes below it would cost more
-- calls than halving.
local function halving_span(job, rate)
    local len = longest(job)
    while rate * len >= job.max_rows and len > job.min_span do
        len = floor(len / 2)
    end
    return len
end

-- Mark windows as sized here (a truncation of one lowers the target).
local function sized(parts)
    for _, w in ipairs(parts) do
        w.sized = true
    end
    return parts
end

-- A truncated window cut by its rows: the first window up to the row at
-- the target share of the answered ones (exact when the answer was the
-- first rows in time), the rest by the density of the later half of them;
-- each at most half the window.  Windows after it that would hold more
-- than the cap at that density are cut too.
local function split_by_rows(job, sched, item, rows)
    local st = state(job)
    local span = item.to - item.from + 1
    local min_span = max(job.min_span, 1)
    if span <= min_span then
        return nil
    end
    st.truncated[#st.truncated + 1] = { from = item.from, to = item.to }
    if item.sized then
        st.target = max(M.LOWEST, st.target - M.STEP_DOWN)
    end
    local half = floor(span / 2)
    if span < 2 * min_span then
        local a, b = windows.bisect(item, job.min_span)
        job.total = job.total + 1
        return { a, b }
    end
    local ts = row_times(job.e.time_field, item, rows)
    local k = #ts
    local first, rest = half, half
    if k >= 2 and 2 * k >= #rows then
        -- Up to (not including) the second of the row at the target share
        -- of those seen.
        local m = max(1, floor(st.target * k))
        first = ts[m] - item.from
        -- The later half: rows per second between its first and last row.
        local j = ceil(k / 2)
        local rate = (k - j) / (ts[k] - ts[j] + 1)
        rest = max(floor(st.target * job.max_rows / rate), halving_span(job, rate))
    end
    first = min(max(first, min_span), half, span - min_span)
    rest = min(max(rest, min_span), half)
    -- Only sizes the density chose (not halves) count against the target.
    local parts = { { from = item.from, to = item.from + first - 1, sized = first < half } }
    for _, w in ipairs(cut(st, item.from + first, item.to, rest, min_span, half, M.MAX_PARTS)) do
        w.sized = rest < half
        parts[#parts + 1] = w
    end
    job.total = job.total + #parts - 1
    -- Windows after it, longer than the span found, would be truncated
    -- where the density goes on: cut them now.
    for _, run in ipairs(pending_runs(sched, item.to)) do
        for _, p in ipairs(run) do
            if p.to - p.from + 1 > rest then
                local pieces = cut(st, p.from, p.to, rest, min_span, rest, M.MAX_PARTS)
                if rest < half then
                    sized(pieces)
                end
                job.total = job.total + #pieces - 1
                sched:replace(p, pieces)
            end
        end
    end
    return parts
end

--- The windows to ask instead of `item`, which answered the row cap with
-- `rows`; nil when it cannot be split further (at `min_span`, or no
-- boundary inside it).  Windows not started yet may be cut too.
-- @tparam table job the job (`mode`, `e`, `min_span`, `step`, `max_rows`)
-- @tparam table sched its schedule
-- @tparam table item the truncated window
-- @tparam table rows the rows it answered
function M.truncated(job, sched, item, rows)
    if job.mode ~= "windows" then
        return nil
    end
    if not by_density(job) then
        return halve(job, sched, item)
    end
    return split_by_rows(job, sched, item, rows)
end

-- The calls a window of `len` seconds is expected to cost at `rate`: one
-- when it fits, else one more for each target share of the cap it holds.
local function expected_calls(job, rate, len)
    local n = rate * len
    if n < job.max_rows then
        return 1
    end
    return 1 + ceil(n / (job.sizing.target * job.max_rows))
end

--- A window answered fewer rows than the cap: its density is known.  The
-- windows not started yet after it are cut again to hold the target share
-- of the cap at that density (joined where they are smaller, split where
-- they would be truncated), where that is expected to save calls.
-- @tparam table job the job
-- @tparam table sched its schedule
-- @tparam table item the window
-- @param rows its rows, or their count
function M.fitted(job, sched, item, rows)
    if not by_density(job) then
        return
    end
    local st = state(job)
    -- One row more than seen: a short window without rows is not taken
    -- for an empty month.
    local n = type(rows) == "number" and rows or #rows
    local rate = (n + 1) / (item.to - item.from + 1)
    local len = max(floor(st.target * job.max_rows / rate), halving_span(job, rate))
    len = min(max(len, job.min_span, 1), longest(job))
    for _, run in ipairs(pending_runs(sched, item.to)) do
        local before = 0
        for _, p in ipairs(run) do
            before = before + expected_calls(job, rate, p.to - p.from + 1)
        end
        local parts = cut(st, run[1].from, run[#run].to, len, job.min_span, longest(job), #run * M.MAX_PARTS)
        local after = 0
        for _, p in ipairs(parts) do
            after = after + expected_calls(job, rate, p.to - p.from + 1)
        end
        if after < before then
            replace_run(job, sched, run, sized(parts))
        end
    end
end

return M
