--- Running a prepared call: its items scheduled over the transport (two at
-- a time at most, each start cleared by the pacer), failed attempts retried
-- by the retry policy, truncated windows split again, and the answers
-- assembled in plan order: one answer, the rows of every window, a list of
-- periods, or the results of an upload's chunks.  `each` hands the rows
-- over window by window instead, and `deliver` to a sink; for both, a
-- transport that can keeps each answer's rows on disk until they are handed
-- over (`wolkvox.call.spooled`), so memory stays flat over any range.
-- @module wolkvox.call.run

local dates = require "wolkvox.dates"
local errors = require "wolkvox.errors"
local prepare = require "wolkvox.call.prepare"
local response = require "wolkvox.api.response"
local retry = require "wolkvox.call.retry"
local schedule = require "wolkvox.call.schedule"
local sizing = require "wolkvox.call.sizing"
local spooled = require "wolkvox.call.spooled"

local type, pairs, ipairs, format, setmetatable, error, pcall =
    type, pairs, ipairs, string.format, setmetatable, error, pcall

local M = {}

local is_list = response.is_list

local function span_text(w)
    return dates.iso(w.from) .. " .. " .. dates.iso(w.to)
end

local function copy_of(req)
    local copy = {}
    for k, v in pairs(req) do
        copy[k] = v
    end
    return copy
end

-- The request of an attempt: the item's, with the time the deadline leaves
-- and the spool directory when its rows go to disk.
local function attempt_request(ctx, job, item)
    local req, copied = prepare.request(job, item), false
    if job.deadline then
        local left = job.deadline - ctx.clock.now()
        if left <= 0 then
            local last = item.last_error
            if last then
                error(last, 0)
            end
            errors.throw("transport", { reason = "timeout", endpoint = job.e.name, calls = job.calls,
                message = "the deadline passed before the call could start" })
        end
        req, copied = copy_of(req), true
        req.timeout = left < ctx.timeout and left or nil
    end
    if job.spool then
        req = copied and req or copy_of(req)
        req.spool = job.spool
        -- Rows a sink takes as CSV or NDJSON lines are made into them as
        -- they arrive.
        req.csv = ctx.spool_lines and job.lines and job.lines() or nil
        item.csv = req.csv
    end
    item.attempts = (item.attempts or 0) + 1
    job.attempts = job.attempts + 1
    ctx:emit("on_request", { endpoint = job.e.name, method = req.method, url = req.url,
        attempt = item.attempts, window = item.from and span_text(item) or nil })
    return req
end

-- A failed attempt: "retry", wait[, "serial"] when the policy allows another,
-- else the error is raised, with its attempts and its window or chunk named.
local function failed(ctx, job, item, err)
    item.history = item.history or {}
    item.history[#item.history + 1] = retry.label(err)
    item.last_error = err
    local wait, mode = retry.next_attempt(err, item.attempts, job.policy, job.write, job.deadline, ctx.clock)
    if wait then
        job.retries, job.waited = job.retries + 1, job.waited + wait
        ctx.retries = ctx.retries + 1
        ctx:emit("on_retry", { endpoint = job.e.name, attempt = item.attempts, wait = wait,
            error = err, window = item.from and span_text(item) or nil })
        return "retry", wait, mode
    end
    if err.kind == "quota" then
        ctx:emit("on_quota", { endpoint = job.e.name, error = err })
    end
    err.attempts, err.history, err.calls = item.attempts, item.history, job.calls
    if item.attempts > 1 then
        err.message = err.message .. " (attempts: " .. table.concat(item.history, "; ") .. ")"
    end
    if item.from then
        err.window = { from = dates.iso(item.from), to = dates.iso(item.to) }
        err.message = err.message .. " [window " .. span_text(item) .. "]"
    elseif item.first then
        err.chunk = { first = item.first, last = item.last }
        err.message = format("%s [records %d-%d; %d before them were accepted]",
            err.message, item.first, item.last, item.first - 1)
    end
    error(err, 0)
end

-- An answer that could not be written to the spool directory (a full
-- disk) is a local failure, as a full output is (kind `output`, never
-- retried: another call would fill the same disk), naming the directory.
local function spool_failed(job, err)
    local why = err.message:match("spool directory: (.*)$") or err.message
    return errors.new("output", { endpoint = job.e.name, reason = "spool", sent = err.sent,
        message = "cannot write the answer to the spool directory " .. job.spool .. ": " .. why
            .. " (free space there, or set the option spool_dir to another directory, or to false"
            .. " to hold each window in memory)" })
end

-- A window that answered the row cap: the windows to ask instead, or a
-- `truncated` error when it cannot be split further.  `wolkvox.call.sizing`
-- decides how (by the density its rows show, or in halves).
local function split_truncated(job, sched, item, rows)
    local parts = sizing.truncated(job, sched, item, rows)
    if not parts then
        errors.throw("truncated", { endpoint = job.e.name, calls = job.calls,
            window = { from = dates.iso(item.from), to = dates.iso(item.to) },
            message = format("window %s answered %d rows, the cap of %d: rows may be missing, "
                .. "and it cannot be split further", span_text(item), #rows, job.max_rows) })
    end
    job.truncated = job.truncated + 1
    return parts
end

-- The `decode` error of an answer whose data is `data` (not a table) where
-- rows were expected.  (A server that sends it once will again: not retried.)
local function not_rows(job, data, res)
    local what = type(data) == "string" and ("the text \"" .. errors.snippet(data, 100) .. "\"")
        or type(data) == "number" and ("the number " .. tostring(data))
        or ("the value " .. tostring(data))
    return errors.new("decode", { endpoint = job.e.name, retryable = false,
        status = res and res.status ~= 0 and res.status or nil,
        message = "the answer's data is " .. what .. " instead of a list of rows" })
end

-- Read one answer: store it on the item, or say what to do instead (retry
-- it, or ask for its window in parts); raise what cannot be mended.
local function finish(ctx, job, sched, item, res)
    local sends = res.sends or 1
    ctx:spend(sends, job.e.free)
    item.calls = (item.calls or 0) + sends
    job.calls = job.calls + sends
    job.bytes = job.bytes + (res.bytes or 0)
    local ok, data, meta = pcall(response.interpret, res, job.e)
    if not ok and job.spool and errors.is(data) and data.reason == "spool" then
        data = spool_failed(job, data)
    end
    ctx:emit("on_response", { endpoint = job.e.name, status = res.status, bytes = res.bytes,
        time = res.time, calls = sends, attempt = item.attempts,
        error = not ok and errors.is(data) and data or nil })
    -- Rows on disk: the answer, its lines, or both.
    local kept = (res.spool or res.lines) and spooled.new(res.spool, res.rows, res.lines and {
        spool = res.lines, columns = item.csv.columns, ndjson = item.csv.ndjson ~= nil, extra = res.lines_extra,
        times = res.times, time_field = item.csv.time })
    if kept and not (ok and res.streamed and is_list(data)) then
        kept:close()          -- an error, or rows that were not streamed
        kept = nil
    end
    if not ok then
        if errors.is(data) then
            return failed(ctx, job, item, data)
        end
        error(data, 0)
    end
    if item.from and type(data) ~= "table" then
        -- A window's answer is rows (or an object of buckets): text or a
        -- number in their place is said, not taken for an empty window.
        return failed(ctx, job, item, not_rows(job, data, res))
    end
    data = kept or data
    local on_disk = spooled.is(data)
    local rows = (on_disk or is_list(data)) and spooled.count(data)
    if item.from and rows and rows >= job.max_rows then
        -- Rows on disk: their times only, for sizing the next windows.
        local list = on_disk and data:only(job.e.time_field, job.e.name) or data
        if on_disk then
            data:close()
        end
        return split_truncated(job, sched, item, list)
    end
    if item.from and rows then
        sizing.fitted(job, sched, item, rows)
    end
    item.data, item.meta = data, meta
end

local function start(ctx, job)
    job.calls, job.bytes, job.truncated, job.span_cap = 0, 0, 0, math.huge
    job.attempts, job.retries, job.waited = 0, 0, 0
    job.total, job.done, job.rows, job.began = #job.items, 0, 0, ctx.clock.now()
    if job.policy.deadline then
        job.deadline = ctx.clock.now() + job.policy.deadline
    end
    -- A plan beyond the ceiling or the day's quota is refused before sending.
    local err = prepare.refusal(ctx, job)
    if err then
        if err.kind == "quota" then
            ctx:emit("on_quota", { endpoint = job.e.name, error = err })
        end
        error(err, 0)
    end
    local sched
    sched = schedule.new(ctx:batch(), job.limit, {
        request = function(item) return attempt_request(ctx, job, item) end,
        finish = function(item, res) return finish(ctx, job, sched, item, res) end,
        acquire = function(item) return ctx:acquire(job.e.name, item) end,
        -- `abandoned`: the slot's call was cut off in flight (the pacer may
        -- keep its slot taken for a while: the server may still count it).
        release = function(slot, abandoned) ctx.pacer:release(slot, abandoned) end,
        deadline = job.deadline,
        abandon = function(sends)
            ctx:spend(sends, job.e.free)
            job.calls = job.calls + sends
        end,
        now = ctx.clock.now,
        sleep = ctx.clock.sleep,
    })
    for _, item in ipairs(job.items) do
        sched:add(item)
    end
    ctx:track(sched)
    return sched
end

-- An item finished: tell `on_progress` (and the log) how far the call got.
local function progress(ctx, job, item)
    job.done = job.done + 1
    if is_list(item.data) or spooled.is(item.data) then
        job.rows = job.rows + spooled.count(item.data)
        ctx:delivered(spooled.count(item.data))
    end
    local info = { endpoint = job.e.name, done = job.done, total = job.total, rows = job.rows,
        calls = job.calls, elapsed = ctx.clock.now() - job.began }
    ctx:emit("on_progress", info)
    -- The call's own hook too (a parameter), failing as quietly as the client's.
    if job.on_progress then
        local ok, err = pcall(job.on_progress, info)
        if not ok then
            ctx:log("warn", "hook on_progress failed: " .. tostring(err))
        end
    end
end

local function window_meta(item)
    local data = item.data
    -- (A single call, as an export of an endpoint without dates, has no window.)
    return { from = item.from and dates.iso(item.from), to = item.to and dates.iso(item.to), label = item.label,
        rows = (is_list(data) or spooled.is(data)) and spooled.count(data) or nil, calls = item.calls }
end

-- Call `fn(item)` for each finished item, in plan order.
local function finished(sched, fn)
    while true do
        local item = sched:next()
        if not item then
            return
        end
        fn(item)
    end
end

-- The counters every way of running a job reports.
local function totals(job, meta)
    meta.calls, meta.bytes, meta.truncated = job.calls, job.bytes, job.truncated
    meta.attempts, meta.retries, meta.waited = job.attempts, job.retries, job.waited
    meta.open = job.open
    return meta
end

-- A job that failed partway: what it had finished goes with the error
-- (`partial`: the windows and what they gave), and the message says so.
local function with_partial(err, partial)
    if errors.is(err) and #partial.windows > 0 then
        err.partial = partial
        err.message = format("%s (%d windows before it were finished: see err.partial)",
            err.message, #partial.windows)
    end
    return err
end

--- Run `job` to the end.
-- @return the data and meta: for one call the endpoint's own answer; for a
--   range the rows of every window in time order; for `per` a list of
--   `{ period, from, to, rows }`; for a chunked upload a list of
--   `{ first, last, data, meta }`.  A range that fails partway raises its
--   error with `partial = { rows, windows }`: the rows of the windows
--   finished before the failed one, in order.
function M.run(ctx, job)
    local sched = start(ctx, job)
    local meta = { endpoint = job.e.name, windows = {} }
    local out, merged = {}, nil
    local last
    local ok, err = pcall(finished, sched, function(item)
        last = item
        progress(ctx, job, item)
        if job.mode == "single" then
            out = item.data
        elseif job.mode == "chunks" then
            out[#out + 1] = { first = item.first, last = item.last, data = item.data, meta = item.meta }
        elseif job.mode == "periods" then
            out[#out + 1] = { period = item.label, from = dates.iso(item.from), to = dates.iso(item.to),
                rows = item.data }
            meta.windows[#meta.windows + 1] = window_meta(item)
        else
            meta.windows[#meta.windows + 1] = window_meta(item)
            if is_list(item.data) then
                for _, row in ipairs(item.data) do
                    out[#out + 1] = row
                end
            elseif type(item.data) == "table" then
                -- An object keyed by bucket (cdr_4): windows add keys.
                merged = merged or {}
                for k, v in pairs(item.data) do
                    merged[k] = v
                end
            end
        end
        item.data = nil
    end)
    if not ok then
        error(with_partial(err, { rows = merged or out, windows = meta.windows }), 0)
    end
    ctx:track(nil)
    if merged then
        out = merged
    end
    if job.mode == "single" or job.mode == "window" then
        for k, v in pairs(last.meta) do
            meta[k] = v
        end
        if job.mode == "single" then
            meta.windows = nil
        end
    elseif last and last.meta then
        meta.status, meta.code, meta.msg = last.meta.status, last.meta.code, last.meta.msg
    end
    totals(job, meta)
    if job.mode == "windows" or job.mode == "window" then
        meta.rows = #out
    end
    return out, meta
end

--- Whether the rows of `job` may wait on disk (the transport can, and the
-- rows stand where the streaming decoder finds them): sets `job.spool`.
function M.spool(ctx, job)
    if ctx.spool_dir and job.mode ~= "chunks" and not job.write and not job.e.data_key then
        -- A directory that cannot hold the answers fails here, before a call.
        local probe, why = require("wolkvox.core").spool(ctx.spool_dir)
        if not probe then
            errors.throw("output", { endpoint = job.e.name, message = why
                .. " (set the option spool_dir to a directory of your own, or false to hold "
                .. "each window in memory instead)" })
        end
        probe:close()
        job.spool = ctx.spool_dir
    end
    return job
end

-- Hand the rows of a finished item to `give(list)`: a list, batches read
-- back from disk, or one value that is not a list (an object of buckets).
-- A sink that writes spooled rows itself (`sink.spooled(data, window)`,
-- true when it did) is given them whole: their count is returned.
local function hand_over(job, data, give, sink, w)
    if spooled.is(data) and sink and sink.spooled and sink.spooled(data, w) then
        return data.count
    end
    if spooled.is(data) then
        for rows in data:batches(job.e.name) do
            give(rows)
        end
    elseif is_list(data) then
        if #data > 0 then
            give(data)
        end
    elseif type(data) == "table" then
        give({ data })
    elseif data ~= nil then
        error(not_rows(job, data), 0)
    end
end

--- Iterate the rows of `job` window by window: memory holds at most the
-- windows in flight, or a batch of rows when they wait on disk (`spool`).
-- Each step returns the row and its window (`from`, `to`, `label`).
-- Failures raise the structured error, after every row of the windows
-- finished before it.
function M.each(ctx, job)
    local sched = start(ctx, job)
    local cur, rows, i, batches = nil, nil, 0, nil
    local function iter()
        while true do
            if rows and i < #rows then
                i = i + 1
                return rows[i], cur
            end
            rows = nil
            if batches then
                rows, i = batches(), 0
                if not rows then
                    batches = nil
                end
            else
                local item = sched:next()
                if not item then
                    ctx:track(nil)
                    return nil
                end
                progress(ctx, job, item)
                cur = window_meta(item)
                local data = item.data
                item.data = nil
                if spooled.is(data) then
                    batches = data:batches(job.e.name)
                elseif is_list(data) then
                    rows, i = data, 0
                else
                    rows, i = { data }, 0
                end
            end
        end
    end
    -- Lua 5.4 calls the closing value when a loop breaks early.
    local closer = setmetatable({}, { __close = function() ctx:settle() end })
    return iter, nil, nil, closer
end

--- Hand the rows of `job` to `sink`, in plan order, window by window:
-- `sink.rows(list, window)` for each batch (true, or nil and a message:
-- a failed write, raised as kind `output`), then `sink.window(window)`
-- once every row of the window was handed over (where a checkpoint is
-- written).  A window's rows are handed over only when its answer is
-- known whole (not at the row cap), so none is given twice.
-- @return the count of rows and meta (`windows`, `rows`, `calls`, ...);
--   a failure raises its error with `partial = { windows, rows }`: the
--   windows finished and handed over before it
function M.deliver(ctx, job, sink)
    local sched = start(ctx, job)
    local done, n = {}, 0
    local ok, err = pcall(finished, sched, function(item)
        progress(ctx, job, item)
        local w = window_meta(item)
        local data = item.data
        item.data = nil
        local whole = hand_over(job, data, function(list)
            local written, why = sink.rows(list, w)
            if not written then
                errors.throw("output", { endpoint = job.e.name, message = tostring(why) })
            end
            n = n + #list
        end, sink, w)
        n = n + (whole or 0)
        if sink.window then
            sink.window(w)
        end
        done[#done + 1] = w
    end)
    if not ok then
        error(with_partial(err, { windows = done, rows = n }), 0)
    end
    ctx:track(nil)
    return n, totals(job, { endpoint = job.e.name, windows = done, rows = n })
end

return M
