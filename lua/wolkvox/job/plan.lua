--- Plans: several syncs ("streams") caught up under one share of the day's
-- quota.  A plan names its streams (endpoint, parameters, `since`, `per`,
-- where the rows go: a database `into`, or a file `output` with its sync
-- `state`), a `priority` each, and the `share` of the day's limit it may
-- use; what is left (1 - share of the limit, or the client's `reserve`
-- when larger) is kept for everything else that runs on the token.
--
-- A run takes the streams in turns: highest priority first, and among
-- equals one turn each in order (a turn is at most `slice` windows of one
-- stream, sized to what the budget still allows), so a year's backfill of
-- one stream never starves another of its rank.  Before each turn the
-- quota ledger says what is left (the fleet's count in Redis mode); when
-- the plan's share is spent, the run stops with everything finished
-- committed (`stopped = "budget"`), and the next run (the next day) goes on
-- where each stream stopped: the streams' own states (in their databases
-- or state files) say where.  A stream that fails is noted and left for
-- this run; the others go on.
--
-- A plan is data: a table, or a file of sections (`[plan]`, `[stream
-- NAME]`) read without running any code (`read`).  What each stream did
-- last (rows, calls, last success, last error) is kept in a small status
-- file beside the quota ledger (`<state_dir>/plans/`): a report for
-- `wolkvox status`, never where the rows' progress lives.
-- @module wolkvox.job.plan

local dates = require "wolkvox.dates"
local errors = require "wolkvox.errors"
local json = require "wolkvox.json"
local registry = require "wolkvox.api.registry"

local type, pairs, ipairs, tostring, tonumber, pcall, error, format, floor, max, min, sort =
    type, pairs, ipairs, tostring, tonumber, pcall, error, string.format, math.floor, math.max, math.min,
    table.sort

local M = {}

--- Keys of `[plan]`.
M.PLAN_KEYS = { name = "string", share = "share", slice = "number" }

--- Keys of `[stream NAME]`; other keys are the endpoint's own parameters
-- (`param.NAME = value` names one whose name is a stream key).
M.STREAM_KEYS = { endpoint = "string", since = "string", ["until"] = "string", per = "string",
    into = "string", table = "string", output = "string", state = "string", format = "string",
    append = "boolean", priority = "number", lag = "number", overlap = "number" }

--- Windows a turn takes at most, by default.
M.SLICE = 1

local function bad(msg)
    errors.throw("params", { message = "plan: " .. msg })
end

-- "50%", "0.5" or 0.5 -> 0.5.
local function share_of(v)
    local n
    if type(v) == "number" then
        n = v
    elseif type(v) == "string" then
        local pct = v:match("^%s*([%d.]+)%s*%%%s*$")
        n = pct and tonumber(pct) and tonumber(pct) / 100 or tonumber(v)
    end
    if not n or n ~= n or n <= 0 or n > 1 then
        bad("share must be a part of the day's limit: between 0 and 1, or a percentage (50%)")
    end
    return n
end

local function convert(kind, v, where)
    if kind == "number" then
        local n = tonumber(v)
        if not n then
            bad(where .. " must be a number (got '" .. tostring(v) .. "')")
        end
        return n
    elseif kind == "boolean" then
        if v == "true" or v == true then
            return true
        elseif v == "false" or v == false then
            return false
        end
        bad(where .. " must be true or false")
    end
    return v
end

--- Read a plan file: `[plan]` (name, share, slice), then `[stream NAME]`
-- sections; `#` and `;` start comments; values may be quoted.  No code
-- runs.  Raises `params` naming the line of a mistake.
function M.parse(text, name)
    name = name or "plan"
    local plan, cur, n = { streams = {} }, nil, 0
    local seen = {}
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        line = line:gsub("\r$", ""):match("^%s*(.-)%s*$")
        local where = format("%s:%d", name, n)
        if line == "" or line:find("^[#;]") then -- luacheck: ignore 542
        elseif line:find("^%[") then
            local sect = line:match("^%[%s*(.-)%s*%]$") or ""
            local stream = sect:match("^stream%s+([%w_.-]+)$")
            if sect == "plan" then
                cur = plan
            elseif stream then
                if seen[stream] then
                    bad(where .. ": a second [stream " .. stream .. "]")
                end
                seen[stream] = true
                cur = { name = stream, params = {} }
                plan.streams[#plan.streams + 1] = cur
            else
                bad(where .. ": a section is [plan] or [stream NAME]")
            end
        else
            local k, v = line:match("^([%w_.]+)%s*=%s*(.-)$")
            if not k then
                bad(where .. ": expected key = value")
            end
            v = v:match('^"(.*)"$') or v:match("^'(.*)'$") or v
            if not cur then
                bad(where .. ": " .. k .. " is outside a section")
            elseif cur == plan then
                if not M.PLAN_KEYS[k] then
                    bad(where .. ": unknown key '" .. k .. "' in [plan] (name, share, slice)")
                end
                plan[k] = M.PLAN_KEYS[k] == "share" and v or convert(M.PLAN_KEYS[k], v, where .. ": " .. k)
            elseif M.STREAM_KEYS[k] then
                cur[k] = convert(M.STREAM_KEYS[k], v, where .. ": " .. k)
            else
                cur.params[k:match("^param%.(.+)$") or k] = v
            end
        end
    end
    return plan
end

--- Read the plan file at `path` (see `parse`).
function M.read(path)
    local f, err = io.open(path, "rb")
    if not f then
        bad("cannot read " .. tostring(path) .. ": " .. tostring(err))
    end
    local text = f:read("*a")
    f:close()
    if #text > 1024 * 1024 then
        bad(path .. " is larger than 1 MiB: not a plan")
    end
    local plan = M.parse(text, path)
    plan.name = plan.name or path:match("([^/]+)$"):gsub("%.[^.]*$", "")
    return plan
end

-- The registry entry a stream names.
local function endpoint_of(name)
    if type(name) ~= "string" then
        return nil
    end
    return registry.lookup(name)
end

--- Check `plan` (a table as `parse` gives) before any call: a copy with
-- every stream's endpoint found, its sync options and destination checked
-- as far as can be here, `share` as a number; raises `params`.
function M.check(plan)
    if type(plan) ~= "table" then
        bad("a plan is a table (name, share, streams) or a plan file")
    end
    local out = { name = plan.name or "plan", share = share_of(plan.share), slice = plan.slice or M.SLICE,
        streams = {} }
    if type(out.name) ~= "string" or not out.name:find("^[%w_.-]+$") or #out.name > 100 then
        bad("name must be letters, digits and _ . - (at most 100)")
    end
    if type(out.slice) ~= "number" or out.slice ~= floor(out.slice) or out.slice < 1 or out.slice > 1000 then
        bad("slice must be a whole number of windows between 1 and 1000")
    end
    if type(plan.streams) ~= "table" or #plan.streams == 0 then
        bad("a plan needs at least one stream")
    end
    local names = {}
    for i, s in ipairs(plan.streams) do
        local label = "stream " .. tostring(s.name or i)
        if type(s) ~= "table" then
            bad(label .. " is not a table")
        end
        local name = s.name or ("stream" .. i)
        if type(name) ~= "string" or not name:find("^[%w_.-]+$") then
            bad(label .. ": its name must be letters, digits and _ . -")
        end
        if names[name] then
            bad("two streams are named " .. name)
        end
        names[name] = true
        local e = endpoint_of(s.endpoint)
        if not e then
            bad(label .. ": unknown endpoint '" .. tostring(s.endpoint) .. "'"
                .. (type(s.endpoint) == "string" and registry.suggest(s.endpoint, registry.method_names()) or ""))
        end
        for _, q in ipairs(e.query or {}) do
            if q.required and not q.date and (s.params or {})[q.name] == nil then
                bad(label .. ": " .. e.name .. " needs the parameter " .. q.name .. " (" .. q.name .. " = ...)")
            end
        end
        if (s.into ~= nil) == (s.output ~= nil) then
            bad(label .. ": give into (a database) or output (a file, with its state)")
        end
        if s.output ~= nil and s.state == nil then
            bad(label .. ": a file stream needs state = PATH (where its sync remembers how far it got)")
        end
        if s.priority ~= nil and (type(s.priority) ~= "number" or s.priority ~= s.priority) then
            bad(label .. ": priority must be a number")
        end
        local params = {}
        for k, v in pairs(s.params or {}) do
            params[k] = v
        end
        params.since, params["until"], params.per, params.lag, params.overlap, params.state =
            s.since, s["until"], s.per, s.lag, s.overlap, s.state
        local sink
        if s.into then
            sink = { into = s.into, table = s.table, stream = "plan:" .. out.name .. ":" .. name }
        else
            sink = { output = s.output, format = s.format, append = s.append ~= false }
        end
        out.streams[#out.streams + 1] = { name = name, endpoint = e.name, e = e, priority = s.priority or 0,
            params = params, sink = sink, order = i }
    end
    return out
end

--- The plan's budget now: `limit` (the day's), `share`, `keep` (the calls
-- kept for everything else), `used` (today, by everything on the token),
-- `left` (what the plan may still spend today).  Nil and why when the
-- day's limit is unknown.
function M.budget(c, plan)
    local s, err = c:quota { measure = false }
    if not s then
        return nil, err
    end
    if not s.limit then
        return nil, "the day's limit is unknown: set licenses or daily_limit (wolkvox.new, the profile), or "
            .. "measure it once today (wolkvox quota --measure)"
    end
    local keep = max(s.reserve or 0, s.limit - floor(plan.share * s.limit))
    return { limit = s.limit, share = plan.share, keep = keep, used = s.used, left = max(0, s.limit - keep - s.used),
        day = s.day }
end

-- In fleet mode (Redis) the plan's calls of the day are also counted in
-- the fleet: a turn reserves its calls there first (atomically), so hosts
-- running the same plan at once never spend more than its share together.
-- `n` calls added to the plan's count of `day`; the new count, or nil
-- without a fleet (or while it cannot be reached in "local" mode).
local function fleet_count(ctx, plan, day, n)
    local g = ctx.ledger.shared
    if not g then
        return nil
    end
    local ok, v = g:call("add", "plan:" .. ctx.ledger.shared_key .. ":" .. plan.name .. ":" .. day, n, 3 * 86400)
    return ok and tonumber(v) or nil
end

-- The order of the turns: by priority (highest first), then as written.
local function ranks(plan)
    local list = {}
    for _, s in ipairs(plan.streams) do
        list[#list + 1] = s
    end
    sort(list, function(a, b)
        if a.priority ~= b.priority then
            return a.priority > b.priority
        end
        return a.order < b.order
    end)
    local out, last = {}, nil
    for _, s in ipairs(list) do
        if not last or last[1].priority ~= s.priority then
            last = {}
            out[#out + 1] = last
        end
        last[#last + 1] = s
    end
    return out
end

-- The fields of a stream's status, and their types.
local STATUS_FIELDS = { rows = "number", calls = "number", calls_today = "number", day = "string",
    last_success = "number", last_error = "table", watermark = "string", up_to_date = "boolean" }

-- The status file of `plan` (nil without a state directory).
local function status_path(c, plan)
    local dir = c._ctx.state_dir
    if not dir then
        return nil
    end
    return dir .. "/plans/" .. plan.name .. ".json", dir .. "/plans"
end

--- What each stream of `plan` did last (`wolkvox status`): a table by
-- stream name (`rows`, `calls`, `calls_today`, `day`, `last_success`,
-- `last_error`, `watermark`, `up_to_date`), empty when never run.
function M.status(c, plan)
    local path = status_path(c, plan)
    if not path then
        return {}
    end
    local core = require "wolkvox.core"
    local text = core.read_file(path, 1024 * 1024)
    -- A report, not where the rows' progress lives: one that cannot be
    -- read (damaged, edited) starts again empty, and of one that can only
    -- the fields of the right type are kept (a planted or hand-edited file
    -- must not stop the plan).
    local ok, t = pcall(core.decode, text or "")
    local out = {}
    if not ok or type(t) ~= "table" then
        return out
    end
    for name, st in pairs(t) do
        if type(name) == "string" and type(st) == "table" then
            local keep = {}
            for field, ty in pairs(STATUS_FIELDS) do
                if type(st[field]) == ty then
                    keep[field] = st[field]
                end
            end
            local e = keep.last_error
            if e and not (type(e.kind) == "string" and type(e.message) == "string"
                    and (e.at == nil or type(e.at) == "number")) then
                keep.last_error = nil
            elseif e then
                keep.last_error = { kind = e.kind, message = e.message, at = e.at }
            end
            local w = keep.watermark
            if w and not (w:match("^%d%d%d%d%-%d%d%-%d%d[%d :T]*$") and dates.parse(w)) then
                keep.watermark = nil
            end
            out[name] = keep
        end
    end
    return out
end

local function save_status(c, plan, st)
    local path, dir = status_path(c, plan)
    if not path then
        return
    end
    local core = require "wolkvox.core"
    core.mkdir(dir)
    local ok, err = core.write_file(path, json.encode(st) .. "\n")
    if not ok then
        c._ctx:log("warn", "plan " .. plan.name .. ": cannot write its status: " .. tostring(err))
    end
end

--- Run `plan` with client `c` (see the module's description).
-- @tparam table c the client
-- @tparam table plan a plan (as `check` takes it)
-- @tparam[opt] table opts `on_turn(info)` (after each turn: `stream`, `rows`,
--   `calls`, `more`, `error`), `now` (epoch seconds, for the status)
-- @return a summary: `stopped` ("budget" when the share is spent, else
--   nil), `budget` (as `budget`, at the end), `streams` (by name: `rows`,
--   `calls`, `turns`, `done`, `error`, `watermark`)
function M.run(c, plan, opts)
    opts = opts or {}
    plan = M.check(plan)
    local budget, why = M.budget(c, plan)
    if not budget then
        bad(why)
    end
    local ctx = c._ctx
    local lock
    local path = status_path(c, plan)
    if path then
        local core = require "wolkvox.core"
        core.mkdir(path:match("^(.*)/"))
        local l, lwhy = core.lock(path .. ".lock")
        if not l then
            errors.throw(lwhy == "busy" and "busy" or "output", { message = "plan " .. plan.name .. ": "
                .. (lwhy == "busy" and "another run of this plan is going on now; let it finish" or tostring(lwhy)) })
        end
        lock = { release = function() l:remove(path .. ".lock") end }
    end
    local status = M.status(c, plan)
    local today = budget.day
    local summary = { streams = {}, plan = plan.name }
    -- The plan's share is the ledger's reserve while it runs.
    local reserve = ctx.ledger.reserve
    ctx.ledger.reserve = budget.keep
    local ok, err = pcall(function()
        for _, group in ipairs(ranks(plan)) do
            local active = {}
            for _, s in ipairs(group) do
                active[#active + 1] = s
                summary.streams[s.name] = { rows = 0, calls = 0, turns = 0 }
            end
            while #active > 0 do
                local still = {}
                for _, s in ipairs(active) do
                    local b = M.budget(c, plan)
                    if b.left < 1 then
                        summary.stopped = "budget"
                        return
                    end
                    local params = {}
                    for k, v in pairs(s.params) do
                        params[k] = v
                    end
                    local want = min(plan.slice, b.left)
                    local share = floor(plan.share * b.limit)
                    local counted = fleet_count(ctx, plan, b.day, want)
                    if counted and counted > share then
                        -- Another host has taken the rest: give back what
                        -- does not fit, and take a smaller turn or stop.
                        local over = min(want, counted - share)
                        fleet_count(ctx, plan, b.day, -over)
                        want = want - over
                        if want < 1 then
                            summary.stopped = "budget"
                            return
                        end
                    end
                    params.windows = want
                    local n, meta = c:sync(s.endpoint, params, s.sink)
                    if counted then
                        -- What the turn spent, not what it reserved.
                        local spent = n and meta.calls or (errors.is(meta) and meta.calls or 0)
                        if spent ~= want then
                            fleet_count(ctx, plan, b.day, spent - want)
                        end
                    end
                    local sum = summary.streams[s.name]
                    local st = status[s.name] or {}
                    status[s.name] = st
                    if st.day ~= today then
                        st.day, st.calls_today = today, 0
                    end
                    sum.turns = sum.turns + 1
                    if n then
                        sum.rows, sum.calls = sum.rows + n, sum.calls + (meta.calls or 0)
                        sum.watermark = meta.watermark or sum.watermark
                        st.rows = (st.rows or 0) + n
                        st.calls = (st.calls or 0) + (meta.calls or 0)
                        st.calls_today = st.calls_today + (meta.calls or 0)
                        st.watermark = meta.watermark or st.watermark
                        st.last_success = opts.now or os.time()
                        st.up_to_date = not meta.more
                        st.last_error = nil
                        if meta.more then
                            still[#still + 1] = s
                        else
                            sum.done = true
                        end
                    else
                        local e = meta
                        sum.calls = sum.calls + (errors.is(e) and e.calls or 0)
                        st.last_error = { kind = e.kind, message = tostring(e.message), at = opts.now or os.time() }
                        if e.partial and e.partial.windows and #e.partial.windows > 0 then
                            st.last_success = opts.now or os.time()
                        end
                        if e.kind == "quota" then
                            -- The share (or the day's quota) is spent.
                            summary.stopped = "budget"
                            sum.error = e
                            return
                        end
                        sum.error = e
                    end
                    if opts.on_turn then
                        opts.on_turn { stream = s.name, rows = n or 0, calls = n and meta.calls or 0,
                            more = n and meta.more or false, error = not n and meta or nil }
                    end
                end
                active = still
            end
        end
    end)
    ctx.ledger.reserve = reserve
    save_status(c, plan, status)
    if lock then
        lock.release()
    end
    if not ok then
        error(err, 0)
    end
    summary.budget = M.budget(c, plan)
    return summary
end

--- What `plan` would cost, spending nothing: per stream the calls of its
-- backlog (from where it stands to now) and of a steady day, and how many
-- days the backlog takes at the plan's share.
function M.cost(c, plan, now)
    plan = M.check(plan)
    local budget = M.budget(c, plan)
    local status = M.status(c, plan)
    local out, backlog, steady = { streams = {}, budget = budget }, 0, 0
    now = now or dates.now(c._ctx.utc_offset)
    for _, s in ipairs(plan.streams) do
        local st = status[s.name] or {}
        local from = st.watermark or s.params.since
        local to = s.params["until"] and dates.parse(s.params["until"], true, c._ctx.utc_offset)
            or (now - (s.params.lag or 600))
        local row = { stream = s.name, endpoint = s.endpoint, from = from, priority = s.priority }
        local p = { from = from, to = dates.iso(to), per = s.params.per }
        for k, v in pairs(s.params) do
            if p[k] == nil and k ~= "since" and k ~= "until" and k ~= "lag" and k ~= "overlap" and k ~= "state" then
                p[k] = v
            end
        end
        local pl = from and c:plan(s.endpoint, p)
        row.backlog = pl and pl.calls or 0
        local day = c:plan(s.endpoint, { from = dates.iso(to - 86399), to = dates.iso(to), per = s.params.per })
        row.steady = day and day.calls or 1
        backlog, steady = backlog + row.backlog, steady + row.steady
        out.streams[#out.streams + 1] = row
    end
    out.backlog, out.steady = backlog, steady
    if budget then
        local daily = floor(budget.share * budget.limit) - steady
        out.days = daily > 0 and math.ceil(backlog / daily) or nil
    end
    return out
end

return M
