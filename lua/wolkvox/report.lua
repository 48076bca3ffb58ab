--- Calls as plans: any date range in allowed windows, truncated windows
-- split again, aggregates per period, uploads in chunks.
--
-- `prepare` checks a call and turns it into a job (nothing is sent);
-- `plan` says what the job will cost; `run` collects its result; `each`
-- iterates its rows window by window.  Every call of an endpoint goes
-- through here, so a one-window call and a six-month report share one path.
-- @module wolkvox.report

local dates = require "wolkvox.dates"
local errors = require "wolkvox.errors"
local request = require "wolkvox.request"
local response = require "wolkvox.response"
local retry = require "wolkvox.retry"
local schedule = require "wolkvox.schedule"
local windows = require "wolkvox.windows"

local type, pairs, ipairs, next, format, min, setmetatable, error, pcall =
    type, pairs, ipairs, next, string.format, math.min, setmetatable, error, pcall

local M = {}

--- Names in a call's parameter table that steer the range helpers rather
-- than going to the API.
M.OPTIONS = { from = true, to = true, per = true, max_rows = true, min_span = true, max_concurrent = true,
    retries = true, retry_base = true, retry_cap = true, deadline = true, max_calls = true }

M.DEFAULT_MAX_ROWS = 60000  -- the API's silent cap per answer
M.DEFAULT_MIN_SPAN = 60     -- seconds: the smallest window bisection makes
--- The most calls one plan may spend while the day's quota limit is
-- unknown (no `daily_limit`/`licenses`, no token_info measured today).
-- `max_calls` (per client or per call) sets the ceiling instead.
M.MAX_CALLS = 1000

local function refuse(e, msg)
    errors.throw("params", { endpoint = e.name, message = msg })
end

local function is_list(t)
    return type(t) == "table" and (t[1] ~= nil or next(t) == nil)
end

local function span_text(w)
    return dates.iso(w.from) .. " .. " .. dates.iso(w.to)
end

-- ---- preparing ---------------------------------------------------------------

local function check_options(e, o, ctx)
    if o.per ~= nil and o.per ~= "day" and o.per ~= "week" and o.per ~= "month" then
        refuse(e, "per must be \"day\", \"week\" or \"month\"")
    end
    if o.max_rows ~= nil and (type(o.max_rows) ~= "number" or o.max_rows < 1) then
        refuse(e, "max_rows must be a positive number")
    end
    if o.min_span ~= nil and (type(o.min_span) ~= "number" or o.min_span < 1) then
        refuse(e, "min_span must be a positive number of seconds")
    end
    for _, k in ipairs { "retries", "retry_base", "retry_cap", "deadline" } do
        if o[k] ~= nil and (type(o[k]) ~= "number" or o[k] < 0) then
            refuse(e, k .. " must be a number of at least 0")
        end
    end
    if o.max_calls ~= nil and (type(o.max_calls) ~= "number" or o.max_calls ~= o.max_calls or o.max_calls < 1) then
        refuse(e, "max_calls must be a number of at least 1 (math.huge: no ceiling)")
    end
    local limit = ctx.max_concurrent
    if o.max_concurrent ~= nil then
        if o.max_concurrent ~= 1 and o.max_concurrent ~= 2 then
            refuse(e, "max_concurrent must be 1 or 2")
        end
        limit = min(limit, o.max_concurrent)
    end
    return limit
end

local function parse_date(e, name, v, is_end, utc_offset)
    local wall, why = dates.parse(v, is_end, utc_offset)
    if not wall then
        refuse(e, name .. ": " .. why)
    end
    return wall
end

local function date_required(e)
    for _, p in ipairs(e.query or {}) do
        if p.name == "date_ini" then
            return p.required
        end
    end
    return false
end

-- Set job.mode and job.items for an endpoint with a date range.
local function prepare_range(job, e, api, o, ctx)
    local from_v, to_v = o.from, o.to
    if from_v ~= nil and api.date_ini ~= nil or to_v ~= nil and api.date_end ~= nil then
        refuse(e, "give the range as from/to or as date_ini/date_end, not both")
    end
    from_v, to_v = from_v or api.date_ini, to_v or api.date_end
    api.date_ini, api.date_end = nil, nil
    if from_v == nil and to_v == nil then
        if date_required(e) and not job.unchecked then
            refuse(e, "a date range is needed: from = ..., to = ...")
        end
        job.mode, job.items = "single", { {} }
        return
    end
    if from_v == nil or to_v == nil then
        refuse(e, "both ends of the range are needed (from and to)")
    end
    local from = parse_date(e, "from", from_v, false, ctx.utc_offset)
    local to = parse_date(e, "to", to_v, true, ctx.utc_offset)
    if to < from then
        refuse(e, "the range ends (" .. dates.iso(to) .. ") before it starts (" .. dates.iso(from) .. ")")
    end
    job.from, job.to = from, to
    local limit = windows.max_span(e)
    local what = e.max_hours and (e.max_hours .. " hours") or "31 days"
    if o.per then
        job.mode, job.items = "periods", windows.periods(from, to, o.per)
        for _, p in ipairs(job.items) do
            if p.to - p.from > limit then
                refuse(e, "a " .. o.per .. " is longer than the " .. what .. " this endpoint allows per call")
            end
        end
    elseif e.kind == "detail" and not e.no_split then
        job.mode = "windows"
        job.items = windows.split(from, to, limit, job.step)
    else
        if to - from > limit then
            if e.kind == "aggregate" then
                refuse(e, e.api .. " gives totals over the whole range, which cannot be added up across "
                    .. "windows: ask for at most " .. what .. ", or pass per = \"day\" | \"week\" | \"month\"")
            end
            refuse(e, e.api .. " cannot be split safely; ask for at most " .. what)
        end
        job.mode, job.items = "window", { { from = from, to = to } }
    end
end

--- Check a call of endpoint `e` and make its job; raises params errors.
-- @tparam table ctx the client: `utc_offset`, `max_concurrent`, `max_rows`
-- @tparam table e the endpoint
-- @tparam table params API parameters plus the `OPTIONS`
-- @tparam[opt] table opts `unchecked`
function M.prepare(ctx, e, params, opts)
    if params == nil then
        params = {}
    elseif type(params) ~= "table" then
        refuse(e, "parameters must be a table (got " .. type(params) .. ")")
    end
    local api, o = {}, {}
    for k, v in pairs(params) do
        if M.OPTIONS[k] and not request.takes(e, k) then
            o[k] = v
        else
            api[k] = v
        end
    end
    local job = {
        e = e, api = api, unchecked = opts and opts.unchecked,
        -- The call's own cap, else the lower of the endpoint's and the client's.
        max_rows = o.max_rows or min(e.max_rows or math.huge, ctx.max_rows or M.DEFAULT_MAX_ROWS),
        step = windows.BOUNDARY[e.split],
    }
    job.limit = check_options(e, o, ctx)
    job.write = e.kind == "action"
    if job.write then
        job.limit = 1 -- writes one at a time: a failure stops what follows
    end
    job.policy = {
        retries = o.retries or ctx.policy.retries,
        retry_base = o.retry_base or ctx.policy.retry_base,
        retry_cap = o.retry_cap or ctx.policy.retry_cap,
        deadline = o.deadline or ctx.policy.deadline,
    }
    job.min_span = o.min_span or (job.step or M.DEFAULT_MIN_SPAN)
    job.max_calls = o.max_calls or ctx.max_calls
    if e.dates then
        prepare_range(job, e, api, o, ctx)
    else
        if o.from ~= nil or o.to ~= nil or o.per ~= nil then
            refuse(e, e.api .. " takes no date range")
        end
        if request.chunked(e) then
            job.mode = "chunks"
            job.items = request.build_chunks(e, ctx.base_url, api,
                { unchecked = job.unchecked, utc_offset = ctx.utc_offset })
        else
            job.mode, job.items = "single", { {} }
        end
    end
    -- Build the first request now, so a bad parameter fails before any call.
    M.request(ctx, job, job.items[1])
    return job
end

--- The request of one item of `job` (its body is built once).
function M.request(ctx, job, item)
    if not item.req then
        item.req = M.build(ctx, job, item)
    end
    return item.req
end

-- The request of an attempt: the item's, with the time the deadline leaves.
local function attempt_request(ctx, job, item)
    local req = M.request(ctx, job, item)
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
        local copy = {}
        for k, v in pairs(req) do
            copy[k] = v
        end
        copy.timeout = left < ctx.timeout and left or nil
        req = copy
    end
    item.attempts = (item.attempts or 0) + 1
    job.attempts = job.attempts + 1
    ctx:emit("on_request", { endpoint = job.e.name, method = req.method, url = req.url,
        attempt = item.attempts, window = item.from and span_text(item) or nil })
    return req
end

--- Build the request of one item (see `request`).
function M.build(ctx, job, item)
    local params = job.api
    if item.from then
        params = {}
        for k, v in pairs(job.api) do
            params[k] = v
        end
        params.date_ini, params.date_end = dates.format(item.from), dates.format(item.to)
    end
    return request.build(job.e, ctx.base_url, params, { unchecked = job.unchecked, utc_offset = ctx.utc_offset })
end

-- The ceiling on the first pass of `job`: its max_calls when the caller set
-- one, else MAX_CALLS while the ledger knows no daily limit; nil when the
-- day's remaining quota is the only bound.
local function ceiling(ctx, job)
    if job.max_calls then
        return job.max_calls
    end
    if ctx.ledger:status().limit == nil then
        return M.MAX_CALLS
    end
    return nil
end

-- Why `job` may not start: a `params` error when its plan passes the
-- ceiling (`quota` would say the day's budget is spent; here the call must
-- change instead: a narrower range, or a higher max_calls), or the ledger's
-- `quota` error when it passes the day's remaining quota.  Nil when it may.
local function refusal(ctx, job)
    local n, cap = #job.items, nil
    -- The common case (a small plan, no max_calls) reads no ledger.
    if job.max_calls or n > M.MAX_CALLS then
        cap = ceiling(ctx, job)
    end
    if cap and n > cap then
        return errors.new("params", { endpoint = job.e.name, calls = 0, planned = n, message = format(
            "%d calls planned, more than the ceiling of %d (%s): refused before sending; ask for a "
                .. "narrower range, or allow it with max_calls = %d (in the call's parameters or in wolkvox.new)",
            n, cap, job.max_calls and "max_calls" or "the default while the day's quota limit is unknown", n) })
    end
    if not job.e.free then
        local ok, err = pcall(ctx.ledger.check, ctx.ledger, n, job.e.name)
        if not ok then
            if errors.is(err) then
                return err
            end
            error(err, 0)
        end
    end
    return nil
end

--- What `job` will cost before any call is spent.
-- @tparam table job from `prepare`
-- @tparam[opt] table ctx the client: with it the plan also says
--   `max_calls` (the ceiling in effect, nil when only the day's remaining
--   quota bounds it) and `refused` (why the job would be refused, or nil)
-- @treturn table `calls` (the first pass: bisecting a truncated window adds
--   calls), `mode`, `endpoint`, `windows` (`from`, `to`, `label`)
function M.plan(job, ctx)
    local out = { endpoint = job.e.name, mode = job.mode, calls = #job.items, windows = {} }
    if ctx then
        out.max_calls = ceiling(ctx, job)
        local err = refusal(ctx, job)
        out.refused = err and err.message or nil
    end
    for i, item in ipairs(job.items) do
        if item.from then
            out.windows[i] = { from = dates.iso(item.from), to = dates.iso(item.to), label = item.label }
        elseif item.first then
            out.windows[i] = { first = item.first, last = item.last }
        end
    end
    return out
end

-- ---- running -------------------------------------------------------------------

-- A failed attempt: "retry", wait[, "serial"] when the policy allows another,
-- else the error is raised, with its attempts and its window or chunk named.
local function failed(ctx, job, item, err)
    item.history = item.history or {}
    item.history[#item.history + 1] = retry.label(err)
    item.last_error = err
    local p = job.policy
    if retry.retryable(err, job.write) and item.attempts <= p.retries then
        local wait = retry.wait(err, item.attempts, p, nil, ctx.clock.time())
        if not job.deadline or ctx.clock.now() + wait < job.deadline then
            job.retries, job.waited = job.retries + 1, job.waited + wait
            ctx.retries = ctx.retries + 1
            ctx:emit("on_retry", { endpoint = job.e.name, attempt = item.attempts, wait = wait,
                error = err, window = item.from and span_text(item) or nil })
            return "retry", wait, err.kind == "concurrency" and "serial" or nil
        end
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

-- A window that answered the row cap: the windows to ask instead, or a
-- `truncated` error when it cannot be split further.
local function split_truncated(job, sched, item, rows)
    local a, b
    if job.mode == "windows" then
        a, b = windows.bisect(item, job.min_span, job.step)
    end
    if not a then
        errors.throw("truncated", { endpoint = job.e.name, calls = job.calls,
            window = { from = dates.iso(item.from), to = dates.iso(item.to) },
            message = format("window %s answered %d rows, the cap of %d: rows may be missing, "
                .. "and it cannot be split further", span_text(item), rows, job.max_rows) })
    end
    job.truncated = job.truncated + 1
    -- Windows not started yet are cut to the span that now has to fit;
    -- a window that was already in flight is cut to it too, not halved.
    local span = a.to - a.from
    if span < job.span_cap then
        job.span_cap = span
        for _, p in ipairs(sched:pending()) do
            if p.to - p.from > span then
                sched:replace(p, windows.split(p.from, p.to, span, job.step))
            end
        end
    elseif span > job.span_cap then
        return windows.split(item.from, item.to, job.span_cap, job.step)
    end
    return { a, b }
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
    ctx:emit("on_response", { endpoint = job.e.name, status = res.status, bytes = res.bytes,
        time = res.time, calls = sends, attempt = item.attempts,
        error = not ok and errors.is(data) and data or nil })
    if not ok then
        if errors.is(data) then
            return failed(ctx, job, item, data)
        end
        error(data, 0)
    end
    if item.from and is_list(data) and #data >= job.max_rows then
        return split_truncated(job, sched, item, #data)
    end
    item.data, item.meta = data, meta
end

local function start(ctx, job)
    job.calls, job.bytes, job.truncated, job.span_cap = 0, 0, 0, math.huge
    job.attempts, job.retries, job.waited = 0, 0, 0
    if job.policy.deadline then
        job.deadline = ctx.clock.now() + job.policy.deadline
    end
    -- A plan beyond the ceiling or the day's quota is refused before sending.
    local err = refusal(ctx, job)
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

local function window_meta(item)
    return { from = dates.iso(item.from), to = dates.iso(item.to), label = item.label,
        rows = is_list(item.data) and #item.data or nil, calls = item.calls }
end

--- Run `job` to the end.
-- @return the data and meta: for one call the endpoint's own answer; for a
--   range the rows of every window in time order; for `per` a list of
--   `{ period, from, to, rows }`; for a chunked upload a list of
--   `{ first, last, data, meta }`
function M.run(ctx, job)
    local sched = start(ctx, job)
    local meta = { endpoint = job.e.name, windows = {} }
    local out, merged = {}, nil
    local last
    while true do
        local item = sched:next()
        if not item then
            break
        end
        last = item
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
    meta.calls, meta.bytes, meta.truncated = job.calls, job.bytes, job.truncated
    meta.attempts, meta.retries, meta.waited = job.attempts, job.retries, job.waited
    if job.mode == "windows" or job.mode == "window" then
        meta.rows = #out
    end
    return out, meta
end

--- Iterate the rows of `job` window by window: memory holds at most the
-- windows in flight.  Each step returns the row and its window
-- (`from`, `to`, `label`).  Failures raise the structured error.
function M.each(ctx, job)
    local sched = start(ctx, job)
    local cur, rows, i = nil, nil, 0
    local function iter()
        while true do
            if rows and i < #rows then
                i = i + 1
                return rows[i], cur
            end
            if rows then
                rows = nil
            end
            local item = sched:next()
            if not item then
                ctx:track(nil)
                return nil
            end
            cur = window_meta(item)
            rows, i = item.data, 0
            item.data = nil
            if not is_list(rows) then
                rows = { rows }
            end
        end
    end
    -- Lua 5.4 calls the closing value when a loop breaks early.
    local closer = setmetatable({}, { __close = function() ctx:settle() end })
    return iter, nil, nil, closer
end

return M
