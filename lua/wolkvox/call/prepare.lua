--- Preparing a call: its parameters checked once, its range cut into the
-- windows (or periods, or upload chunks) it will be asked in, and what it
-- will cost.  Nothing is sent here: a bad parameter, a range no endpoint
-- allows or a plan beyond the ceiling fails before any call is spent.
-- `wolkvox.call.run` runs what this makes.
-- @module wolkvox.call.prepare

local dates = require "wolkvox.dates"
local errors = require "wolkvox.errors"
local request = require "wolkvox.api.request"
local windows = require "wolkvox.call.windows"

local type, pairs, ipairs, format, min, error, pcall =
    type, pairs, ipairs, string.format, math.min, error, pcall

local M = {}

--- Names in a call's parameter table that steer the range helpers rather
-- than going to the API.
M.OPTIONS = { from = true, to = true, per = true, max_rows = true, min_span = true, max_concurrent = true,
    retries = true, retry_base = true, retry_cap = true, deadline = true, max_calls = true,
    on_progress = true }

M.DEFAULT_MIN_SPAN = 60     -- seconds: the smallest window bisection makes
--- The most calls one plan may spend while the day's quota limit is
-- unknown (no `daily_limit`/`licenses`, no token_info measured today).
-- `max_calls` (per client or per call) sets the ceiling instead.
M.MAX_CALLS = require("wolkvox.defaults").MAX_CALLS_UNKNOWN_LIMIT

local refuse = errors.refuse

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
    job.open = M.open_range(ctx, to)
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

--- When a range ends at `to` (a wall value), after now on the operation's
-- clock: what to tell the user (the rows of the time not yet over are not
-- in the result), else nil.
function M.open_range(ctx, to)
    local now = dates.now(ctx.utc_offset)
    if to <= now then
        return nil
    end
    local off = ctx.utc_offset or 0
    return string.format("the range ends at %s, later than now on the operation's clock (%s, UTC%s%02d:%02d): "
        .. "rows of the time not yet over are not in this result", dates.iso(to), dates.iso(now),
        off < 0 and "-" or "+", math.floor(math.abs(off) / 3600), math.floor(math.abs(off) % 3600 / 60))
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
        max_rows = o.max_rows or min(e.max_rows or math.huge, ctx.max_rows),
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
    if o.on_progress ~= nil and type(o.on_progress) ~= "function" then
        refuse(e, "on_progress must be a function")
    end
    job.on_progress = o.on_progress
    if e.dates then
        prepare_range(job, e, api, o, ctx)
    else
        if o.from ~= nil or o.to ~= nil or o.per ~= nil then
            refuse(e, e.api .. " takes no date range: call c:" .. e.api .. "() instead")
        end
        if request.chunked(e) then
            job.mode = "chunks"
            job.items = request.build_chunks(e, ctx.base_url, api,
                { unchecked = job.unchecked, utc_offset = ctx.utc_offset })
        else
            job.mode, job.items = "single", { {} }
        end
    end
    if job.mode ~= "chunks" then
        -- Every parameter is checked here, once; windows only add their dates.
        job.template = request.build(e, ctx.base_url, api, { unchecked = job.unchecked,
            utc_offset = ctx.utc_offset, dated = job.items[1].from ~= nil })
    end
    return job
end

--- The request of one item of `job`: a chunk's own, a window's dates on
-- the job's template, or the template itself.
function M.request(job, item)
    if item.req then
        return item.req
    end
    if item.from then
        return request.dated(job.template, item.from, item.to)
    end
    return job.template
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

--- Why `job` may not start: a `params` error when its plan passes the
-- ceiling (`quota` would say the day's budget is spent; here the call must
-- change instead: a narrower range, or a higher max_calls), or the ledger's
-- `quota` error when it passes the day's remaining quota.  Nil when it may.
function M.refusal(ctx, job)
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
        local err = M.refusal(ctx, job)
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

return M
