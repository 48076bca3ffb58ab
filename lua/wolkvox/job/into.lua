--- Exports and syncs into a database (`into`): the policy of the jobs
-- when their state lives in the database with the rows.  Where a run
-- starts comes from the stream's row in `_wolkvox_state` (written in the
-- same transaction as each window's rows, `wolkvox.out.load`); a finished
-- export is not fetched again (`refresh` to fetch it anew); a range not yet
-- over never counts as finished.
-- @module wolkvox.job.into

local dates = require "wolkvox.dates"
local db = require "wolkvox.out.db"
local errors = require "wolkvox.errors"
local load = require "wolkvox.out.load"
local run = require "wolkvox.call.run"
local schema = require "wolkvox.api.schema"
local sinks = require "wolkvox.out.sinks"

local type, pairs, ipairs, tonumber, pcall, error, select, os_time =
    type, pairs, ipairs, tonumber, pcall, error, select, os.time

local M = {}

--- Check the options of a job into a database before any call: `into`
-- (a database it can name), `table`, `refresh`, and no file option beside.
function M.check(e, opts, what)
    local refuse = function(msg) errors.refuse(e, what .. ": " .. msg) end
    local target, why = db.parse(opts.into)
    if not target then
        refuse(why)
    end
    for _, k in ipairs { "output", "file", "on_rows", "format", "columns", "bom", "checkpoint", "append" } do
        if opts[k] ~= nil then
            refuse(k .. " does not go with into: the database keeps the rows, their types and the state")
        end
    end
    if opts.table ~= nil and not schema.valid_name(opts.table) then
        refuse("table must be a name of letters, digits and _ (at most 63), not starting with a digit")
    end
    local low = type(opts.table) == "string" and opts.table:lower() or ""
    if low:find("^_wolkvox") or low:find("^sqlite_") or low:find("^pg_") then
        refuse("table " .. opts.table .. ": names starting with _wolkvox, sqlite_ or pg_ belong to lua-wolkvox "
            .. "or the database")
    end
    if opts.refresh ~= nil and type(opts.refresh) ~= "boolean" then
        refuse("refresh must be true or false")
    end
    local s, serr = schema.of(e, { table = opts.table })
    if not s then
        refuse(serr)
    end
    if target.dialect == "sqlite" then
        require("wolkvox.out.file").check(target.path, "the database")
        -- SQLite follows links and writes any database file it can: one
        -- planted by another user (a link in a shared directory, a file of
        -- theirs) would take the rows where they choose.
        local core = require "wolkvox.core"
        for _, st in ipairs { core.stat(target.path) or false, core.stat(target.path, true) or false } do
            if st and not (st.mine or st.uid == 0) then
                refuse(target.path .. (st.type == "link" and " is a link" or "") .. " of uid " .. st.uid
                    .. ", not this user's or root's: refused (load into a database of your own)")
            end
        end
    end
end

-- What a job whose options `check` passed loads into: the target and the
-- schema; raises `params` (before any call) when the driver is missing.
local function ready(e, opts)
    local target = db.parse(opts.into)
    local missing = select(2, db.driver(target.dialect))
    if missing then
        errors.throw("params", { endpoint = e.name, message = missing })
    end
    return target, schema.of(e, { table = opts.table })
end

-- What `map` gave as a list of rows.
local function mapped(map, list, w)
    local out = {}
    for _, row in ipairs(list) do
        sinks.gather(out, map(row, w))
    end
    return out
end

-- Inside nginx a database driver would block the worker: refused.
local function not_in_nginx(ctx, e, what)
    if ctx.transport_name == "ngx" then
        errors.refuse(e, what .. ": into is not available inside nginx: the database drivers (LuaDBI, libpq) "
            .. "block the worker; run the job from a separate process (cron, a worker of your own)")
    end
end

-- Run `body(conn)` with a connection to `target` held for `stream`;
-- rolls back and closes whatever happens.
local function with_stream(target, stream, what, body)
    local conn = db.connect(target)
    local ok, a, b = pcall(function()
        local hold = load.hold(conn, stream, what)
        local ok2, x, y = pcall(body, conn)
        hold.release()
        if not ok2 then
            error(x, 0)
        end
        return x, y
    end)
    conn:close()
    if not ok then
        error(a, 0)
    end
    return a, b
end

--- Run export `job` into `opts.into`.  `how`: `identity` (the job's
-- fingerprint), `after(job, wall)` (drops what is at or before `wall`).
function M.export(ctx, job, opts, how)
    local e = job.e
    not_in_nginx(ctx, e, "export")
    local target, s = ready(e, opts)
    local stream = "export:" .. how.identity:sub(1, 32)
    return with_stream(target, stream, "export", function(conn)
        local loader = load.new(conn, s, stream, { utc_offset = ctx.utc_offset,
            log = function(level, msg) ctx:log(level, msg) end })
        local st = not opts.refresh and load.state(conn, stream) or nil
        local meta0 = { endpoint = e.name, into = target.display, table = s.table, stream = stream }
        if st and tonumber(st.complete) == 1 then
            meta0.windows, meta0.rows, meta0.calls, meta0.resumed, meta0.complete = {}, 0, 0, true, true
            return 0, meta0
        end
        local dated = job.from ~= nil
        if st and st.watermark and dated then
            how.after(job, dates.parse(st.watermark))
        end
        local now = dates.now(ctx.utc_offset)
        local done, spent = st and tonumber(st.windows) or 0, st and tonumber(st.calls) or 0
        local watermark = st and st.watermark or nil
        local since = dated and dates.iso(job.from) or nil
        local ok, n, meta = pcall(run.deliver, ctx, job, {
            rows = function(list, w)
                return loader:rows(opts.map and mapped(opts.map, list, w) or list, w)
            end,
            window = function(w)
                done, spent = done + 1, spent + (w.calls or 0)
                -- Only time that is over moves the watermark: a window
                -- that ends later is fetched again next run.
                if dated and w.to and dates.parse(w.to) <= now then
                    watermark = w.to
                end
                loader:commit(w, { since = since, watermark = watermark, windows = done, calls = spent,
                    last_run = os_time() })
            end,
        })
        if not ok then
            loader:abort()
            error(n, 0)
        end
        if dated and job.to <= now then
            conn:begin()
            load.save_state(conn, stream, s, { since = since, watermark = dates.iso(job.to), complete = true,
                windows = done, calls = spent, last_run = os_time() })
            conn:commit()
        end
        for k, v in pairs(meta0) do
            meta[k] = v
        end
        meta.resumed, meta.written = st ~= nil, loader.loaded
        return n, meta
    end)
end

--- Run one sync of `e` into `sink.into`.  `how`: `identity` (the sync's
-- fingerprint), `span(ctx, e, params, st, meta)` and `job(ctx, e, params,
-- from, to)` (`wolkvox.job.sync`'s: where a run starts and ends, its job).
-- The stream is `sink.stream`, else named by the fingerprint.
function M.sync(ctx, e, params, sink, how)
    not_in_nginx(ctx, e, "sync")
    local target, s = ready(e, sink)
    local stream = sink.stream or ("sync:" .. how.identity:sub(1, 32))
    return with_stream(target, stream, "sync", function(conn)
        local loader = load.new(conn, s, stream, { utc_offset = ctx.utc_offset,
            log = function(level, msg) ctx:log(level, msg) end })
        local st = load.state(conn, stream)
        local meta = { endpoint = e.name, calls = 0, rows = 0, dropped = 0, into = target.display, table = s.table,
            stream = stream }
        local from, since, to, now = how.span(ctx, e, params, st and { since = st.since, watermark = st.watermark,
            last_run = tonumber(st.last_run) }, meta)
        if not from then
            return 0, meta
        end
        local job = how.job(ctx, e, params, from, to)
        local done, spent = st and tonumber(st.windows) or 0, st and tonumber(st.calls) or 0
        local ok, err, dmeta = pcall(run.deliver, ctx, job, {
            rows = function(list, w)
                list = sink.map and mapped(sink.map, list, w) or list
                meta.rows = meta.rows + #list
                return loader:rows(list, w)
            end,
            window = function(w)
                done, spent = done + 1, spent + (w.calls or 0)
                loader:commit(w, { since = dates.iso(since), watermark = w.to, windows = done, calls = spent,
                    last_run = now })
                meta.watermark = w.to
            end,
        })
        if not ok then
            loader:abort()
            error(err, 0)
        end
        meta.calls, meta.windows, meta.truncated = dmeta.calls, #dmeta.windows, dmeta.truncated
        meta.more = job.more
        return meta.rows, meta
    end)
end

return M
