--- Incremental sync: each run fetches a report from the state file's
-- watermark to `until` (default: now minus `lag`), hands over only rows not
-- handed over before, then moves the watermark.  Rows the server records
-- late, for a time already past the watermark, are caught by reading a
-- short `overlap` again and dropping the rows already delivered, known by
-- the endpoint's row key (the registry's `row_key`, else the row's whole
-- content); the state keeps the keys of the overlap only, so it stays
-- small.  Aggregate reports sync per closed period (`per = "day"`), never
-- a half day.  The state is replaced atomically after every window, so a
-- run that fails or is killed loses nothing and delivers nothing twice:
-- with an appended output, the file is cut back to what the state vouches
-- for.
-- @module wolkvox.job.sync

local checkpoint = require "wolkvox.out.state"
local dates = require "wolkvox.dates"
local errors = require "wolkvox.errors"
local file_out = require "wolkvox.out.file"
local prepare = require "wolkvox.call.prepare"
local run = require "wolkvox.call.run"
local sinks = require "wolkvox.out.sinks"
local into = require "wolkvox.job.into"
local schema = require "wolkvox.api.schema"

local type, pairs, ipairs, tostring, pcall, error, format, io_type, floor, concat =
    type, pairs, ipairs, tostring, pcall, error, string.format, io.type, math.floor, table.concat

local M = {}

--- The sync's own options, beside the endpoint's parameters.
M.OPTIONS = { state = true, since = true, ["until"] = true, lag = true, overlap = true, force = true, per = true,
    windows = true }

--- The options of where rows go (the third argument), as for export.
M.SINK = { format = true, output = true, file = true, columns = true, bom = true, on_rows = true, append = true,
    map = true, into = true, table = true, stream = true, delimiter = true }

--- Seconds behind now that a sync stops by default: the server records
-- the last minutes late.
M.LAG = 600
--- Seconds before the watermark read again for late rows.
M.OVERLAP = 3600
--- The polling interval the vendor documents (5 minutes): a sync run more
-- often warns and, unless forced, spends nothing.
M.INTERVAL = 300
--- The state format's version.
M.VERSION = 1

local DAY = 86400

--- The field that identifies a row of `e` (nil: the whole row does):
-- `wolkvox.api.schema.row_key`.
M.row_key = schema.row_key

--- The field that holds a row's time: `wolkvox.api.schema.time_field`.
M.time_field = schema.time_field

-- A row's identity: its key field, else its content (sorted fields).
local function identity(row, key)
    local v = key and row[key]
    if v ~= nil and v ~= "" then
        return "k:" .. tostring(v)
    end
    local names = {}
    for k in pairs(row) do
        names[#names + 1] = tostring(k)
    end
    table.sort(names)
    local parts = {}
    for i, k in ipairs(names) do
        parts[i] = k .. "=" .. tostring(row[k])
    end
    return "h:" .. require("wolkvox.transport").fingerprint(concat(parts, "\0"))
end

local function refuse(e, msg)
    errors.refuse(e, "sync: " .. msg)
end

local function check(e, params, sink)
    if type(params) ~= "table" then
        refuse(e, "the second argument must be a table (state = PATH, since = DATE, ...)")
    end
    local into_db = type(sink) == "table" and sink.into ~= nil
    if into_db then
        if params.state ~= nil then
            refuse(e, "state goes with files: a sync into a database keeps its state there, with the rows")
        end
        if sink.stream ~= nil and (type(sink.stream) ~= "string" or not sink.stream:find("^[%w_.:-]+$")
                or #sink.stream > 200) then
            refuse(e, "stream must be a name of letters, digits and _ . : - (at most 200)")
        end
    elseif type(params.state) ~= "string" or params.state == "" then
        refuse(e, "state = PATH is needed: the file that remembers how far the sync got")
    end
    for _, k in ipairs { "lag", "overlap" } do
        local v = params[k]
        if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0 or v > 31 * DAY) then
            refuse(e, k .. " must be a number of seconds between 0 and 31 days")
        end
    end
    if params.per ~= nil and params.per ~= "day" then
        refuse(e, "per must be \"day\" (aggregates sync one closed day at a time)")
    end
    local nw = params.windows
    if nw ~= nil and (type(nw) ~= "number" or nw ~= math.floor(nw) or nw < 1 or nw > 100000) then
        refuse(e, "windows must be a whole number of windows, at least 1")
    end
    if params.from ~= nil or params.to ~= nil then
        refuse(e, "give since (the first sync's start) and until, not from/to")
    end
    if sink ~= nil then
        if type(sink) ~= "table" then
            refuse(e, "the third argument must be a table (output, format, ...)")
        end
        for k in pairs(sink) do
            if not M.SINK[k] then
                refuse(e, "unknown option '" .. tostring(k) .. "'")
            end
        end
        if sink.append and type(sink.output) ~= "string" then
            refuse(e, "append needs output = PATH")
        end
        if sink.append and not (sink.format == nil or sink.format == "csv" or sink.format == "ndjson") then
            refuse(e, "append works with csv and ndjson (a JSON array cannot grow)")
        end
        if sink.output ~= nil and (type(sink.output) ~= "string" or sink.output == "") then
            refuse(e, "output must be a path")
        end
        if sink.delimiter ~= nil and not (require("wolkvox.out.formats").DELIMITERS[sink.delimiter]
                and (sink.format or "csv") == "csv") then
            refuse(e, "delimiter goes with csv and is one of , ; | or a tab (\"\\t\")")
        end
        if sink.output ~= nil and sink.output == params.state then
            refuse(e, "the state and the output must be different files")
        end
    end
    if e.kind ~= "detail" and params.per == nil then
        refuse(e, e.api .. " gives totals: sync it per closed day (per = \"day\")")
    end
    if into_db then
        into.check(e, sink, "sync")
        return
    end
    -- What can be checked here is, before any call is spent.
    file_out.check(params.state, "the sync state")
    if sink and sink.output then
        file_out.check(sink.output, "the output")
    end
end

-- The fingerprint of what a state belongs to: the endpoint and its own
-- parameters (not the range, which moves).
local function identity_of(e, params, sink)
    local p = {}
    for k, v in pairs(params) do
        if not M.OPTIONS[k] and not prepare.OPTIONS[k] then
            p[k] = v
        end
    end
    return checkpoint.fingerprint { endpoint = e.name, params = p, per = params.per,
        format = sink and sink.format or nil, append = sink and sink.append and sink.output or nil,
        delimiter = sink and sink.delimiter ~= "," and sink.delimiter or nil,
        table = sink and sink.into and (sink.table or "") or nil }
end

local function is_wall(v)
    return type(v) == "string" and dates.parse(v) ~= nil
end

-- Every field of a state read back is checked before use: an edited or
-- damaged state is refused (kind params, nothing spent), never half used.
local function invalid(t)
    if type(t.since) ~= "string" and t.since ~= nil or (t.since and not is_wall(t.since)) then
        return "since"
    elseif t.watermark ~= nil and not is_wall(t.watermark) then
        return "watermark"
    elseif t.last_run ~= nil and (type(t.last_run) ~= "number" or t.last_run ~= t.last_run) then
        return "last_run"
    elseif t.bytes ~= nil and (type(t.bytes) ~= "number" or t.bytes < 0 or t.bytes ~= floor(t.bytes)) then
        return "bytes"
    elseif t.writer ~= nil and not checkpoint.valid_writer(t.writer) then
        return "writer"
    elseif t.digest ~= nil and not (type(t.digest) == "string" and #t.digest == 64) then
        return "digest"
    elseif t.pending ~= nil and t.pending ~= true then
        return "pending"
    end
    for k, v in pairs(t.keys) do
        if type(k) ~= "string" or type(v) ~= "number" or v ~= v then
            return "keys"
        end
    end
    return nil
end

-- A Singer state given as the state (as Meltano passes a tap its last
-- one): the state value `{"bookmarks": {...}}` or a STATE message holding
-- it.  The bookmark of this endpoint's stream (the schema's table name)
-- gives since and watermark; nil when `t` is not a Singer state.  A
-- bookmark without `since` sets no floor the overlap could hit (31 days,
-- the longest overlap, before the watermark).  The file is this sync's
-- own state from then on.
local function singer_state(e, path, t, fingerprint)
    if t.version ~= nil or (t.type == nil and t.bookmarks == nil) then
        return nil
    end
    local value = t
    if t.type ~= nil then
        if t.type ~= "STATE" or type(t.value) ~= "table" then
            refuse(e, format("%s is a Singer %s message, not a STATE: give the last STATE (or its value)",
                path, tostring(t.type)))
        end
        value = t.value
    end
    local stream = schema.table_name(e)
    local b = type(value.bookmarks) == "table" and value.bookmarks[stream]
    if type(b) ~= "table" or b.watermark == nil then
        local names = {}
        for k in pairs(type(value.bookmarks) == "table" and value.bookmarks or {}) do
            names[#names + 1] = tostring(k)
        end
        table.sort(names)
        refuse(e, format("the Singer state %s holds no %s for stream %s (its bookmarks: %s); remove it to "
            .. "start over (the first sync then needs since)", path, type(b) == "table" and "watermark" or "bookmark",
            stream, #names > 0 and concat(names, ", ") or "none"))
    end
    -- Bound to this sync from now on, as a state of its own would be.
    local st = { sync = fingerprint, endpoint = e.name, since = b.since, watermark = b.watermark,
        keys = b.keys == nil and {} or b.keys }
    if type(st.keys) ~= "table" then
        return st, "keys"
    end
    local bad = invalid(st)
    if not bad and st.since == nil then
        st.since = dates.iso(dates.parse(st.watermark) - 31 * DAY)
    end
    return st, bad
end

local function read_state(e, path, fingerprint)
    local t = checkpoint.load(path, function(why)
        refuse(e, "cannot read the state " .. path .. ": " .. tostring(why))
    end, "sync state")
    if t == nil then
        return nil
    end
    local st, wrong = singer_state(e, path, t, fingerprint)
    if wrong then
        refuse(e, format("the Singer state %s: the bookmark of stream %s has a field '%s' that is not as "
            .. "lua-wolkvox writes it (since and watermark are \"YYYY-MM-DD HH:MM:SS\")", path,
            schema.table_name(e), wrong))
    elseif st then
        return st
    end
    if t.version ~= M.VERSION or type(t.sync) ~= "string" or type(t.keys) ~= "table" then
        refuse(e, path .. " is not a lua-wolkvox sync state (remove it to start over)")
    end
    if t.sync ~= fingerprint then
        refuse(e, format("the state %s was made for another sync (%s); give this one its own state file",
            path, tostring(t.endpoint)))
    end
    local bad = invalid(t)
    if bad then
        refuse(e, format("the state %s: its field '%s' is not as lua-wolkvox writes it (the file was edited "
            .. "or damaged); remove it to start over", path, bad))
    end
    return t
end

local function write_state(path, t)
    checkpoint.write(path, t, "sync state", M.VERSION)
end

-- The end of the last whole day at or before `wall`.
local function closed_day_end(wall)
    return floor((wall + 1) / DAY) * DAY - 1
end

--- Where a run of sync starts and ends, given its state `st` (`since`,
-- `watermark`, `last_run`: a state file's or a database's): the first and
-- last wall times to fetch, where the first run began, and now; nil when
-- there is nothing to fetch (`meta` says why: up to date, or polled too
-- soon).  Raises `params` for a first run without `since` or a bad date.
function M.span(ctx, e, params, st, meta)
    local now = dates.now(ctx.utc_offset)
    local overlap = params.overlap or M.OVERLAP
    local per_day = params.per == "day"
    local from, since
    if st and st.watermark then
        local w = dates.parse(st.watermark)
        since = dates.parse(st.since)
        from = per_day and w + 1 or w - overlap + 1
        -- Never before where the first run began.
        if since and from < since then
            from = since
        end
    else
        if params.since == nil then
            refuse(e, "the first sync needs since = DATE (where to start)")
        end
        local v, why = dates.parse(params.since, false, ctx.utc_offset)
        if not v then
            refuse(e, "since: " .. why)
        end
        from, since = v, v
    end
    local to
    if params["until"] ~= nil then
        local v, why = dates.parse(params["until"], true, ctx.utc_offset)
        if not v then
            refuse(e, "until: " .. why)
        end
        to = v
        meta.open = prepare.open_range(ctx, to)
    else
        to = now - (params.lag or M.LAG)
    end
    if per_day then
        to = closed_day_end(to)
    end
    meta.from, meta.to = dates.iso(from), dates.iso(to)

    -- Polling guidance: the vendor asks for 5 minutes between polls of the
    -- same live data.  A run that catches up on time long past (the last
    -- run stopped early, or `until` lies in the past) is not polling.
    local behind = st and st.watermark and to - dates.parse(st.watermark) or math.huge
    if st and st.last_run and not params.force and now - st.last_run < M.INTERVAL and behind < M.INTERVAL then
        local why = format("sync of %s ran %d s ago; the documented polling interval is %d s: nothing "
            .. "fetched (force to sync anyway)", e.name, now - st.last_run, M.INTERVAL)
        ctx:log("warn", why)
        meta.skipped, meta.warning = "interval", why
        return nil
    end
    if st and st.watermark and to <= dates.parse(st.watermark) then
        meta.watermark, meta.up_to_date = st.watermark, true
        return nil
    end
    if to < from then
        meta.up_to_date = true
        return nil
    end
    return from, since, to, now
end

--- The job of one run over [from, to]: the endpoint's parameters (those
-- of `params` that are not the sync's own).
function M.job(ctx, e, params, from, to)
    local p = {}
    for k, v in pairs(params) do
        if not M.OPTIONS[k] then
            p[k] = v
        end
    end
    p.from, p.to, p.per = dates.iso(from), dates.iso(to), params.per
    local job = run.spool(ctx, prepare.prepare(ctx, e, p))
    if params["until"] == nil then
        job.open = nil -- the live edge, minus `lag`, by design
    end
    -- At most `windows` windows this run (a plan's turn): the watermark
    -- moves to the last one's end, the next run goes on from there.
    if params.windows and #job.items > params.windows then
        for i = #job.items, params.windows + 1, -1 do
            job.items[i] = nil
        end
        job.more = true
    end
    return job
end

local function sync(ctx, e, params, sink)
    local fingerprint = identity_of(e, params, sink)
    local st = read_state(e, params.state, fingerprint)
    local state -- the state after the last window handed over
    -- What a writer may know of this sync: the Singer format's STATE holds
    -- its since and watermark.
    local about = { endpoint = e, utc_offset = ctx.utc_offset, delimiter = sink and sink.delimiter,
        bookmark = function()
        local s = state or st
        return s and s.watermark and { since = s.since, watermark = s.watermark } or nil
    end }
    local meta = { endpoint = e.name, calls = 0, rows = 0, dropped = 0 }
    sink = sink or {}
    if sink.append then
        sinks.check_append(e, sink.output, st, params.state)
    end
    local overlap = params.overlap or M.OVERLAP
    local per_day = params.per == "day"

    -- An output a script expects exists even when nothing is fetched: a new
    -- file holds no rows (a CSV its header); an appended one is unchanged.
    local function nothing()
        if sink.output and not sink.append then
            local w, _, handle = sinks.for_sync(e, sink, st, about)
            local closed, why = w:close()
            local ok, cerr = handle:commit()
            if not (closed and ok) then
                errors.throw("output", { endpoint = e.name, message = tostring(why or cerr) })
            end
        end
        return sink.output and 0 or {}, meta
    end
    local from, since, to, now = M.span(ctx, e, params, st, meta)
    if not from then
        return nothing()
    end
    -- The fetch: the endpoint's parameters over [from, to].
    local job = M.job(ctx, e, params, from, to)

    local key, tfield = M.row_key(e), M.time_field(e)
    local seen = {}
    for k, t in pairs(st and st.keys or {}) do
        seen[k] = t
    end
    local out = {}
    local w, file, handle, appending = sinks.for_sync(e, sink, st, about)
    meta.appending = appending
    -- For an appended file: the bytes a state vouches for; `pending` says a
    -- run is writing after them (a kill then leaves bytes that are ours).
    local whole, vouched = st and st.bytes or 0, w and sinks.writer_state(w)

    local function flush()
        if file then
            local ok, err = file:flush()
            if not ok then
                errors.throw("output", { endpoint = e.name, message = "cannot write: " .. tostring(err) })
            end
            return file:seek("cur")
        end
    end
    local function store(pending)
        if meta.appending then
            state.bytes, state.writer = whole, vouched
            state.digest = file_out.digest(sink.output, whole)
            state.pending = pending or nil
        end
        write_state(params.state, state)
    end

    -- The state after the rows up to `upto` (a wall time) were handed over.
    local function advance(upto)
        local keep = {}
        local floor_t = upto - overlap
        for k, t in pairs(seen) do
            if t > floor_t then
                keep[k] = t
            end
        end
        seen = keep
        state = { sync = fingerprint, endpoint = e.name, since = dates.iso(since), watermark = dates.iso(upto),
            keys = keep, last_run = now }
        meta.watermark = state.watermark
    end
    if meta.appending then
        -- Before the first byte: the state says a run is appending.
        state = st or { sync = fingerprint, endpoint = e.name, since = dates.iso(since), keys = {}, last_run = now }
        store(true)
    end

    local ok, n, dmeta = pcall(run.deliver, ctx, job, {
        rows = function(list, win)
            local fresh = {}
            for _, row in ipairs(list) do
                -- Closed days are read once: no overlap, nothing to drop.
                local id = not per_day and identity(row, key)
                if id and seen[id] then
                    meta.dropped = meta.dropped + 1
                else
                    if id then
                        local t = tfield and dates.parse(tostring(row[tfield] or "")) or nil
                        seen[id] = t or dates.parse(win.to)
                    end
                    -- What `map` gives: a row, none (nil) or a list of rows.
                    local got = row
                    if sink.map then
                        got = sink.map(row, win)
                    end
                    sinks.gather(fresh, got)
                end
            end
            if #fresh == 0 then
                return true
            end
            meta.rows = meta.rows + #fresh
            if w then
                for _, row in ipairs(fresh) do
                    local written, why = w:write(row)
                    if not written then
                        return nil, why
                    end
                end
            elseif sink.on_rows then
                local r, why = sink.on_rows(fresh, win)
                if r == false then
                    return nil, why or "on_rows returned false"
                end
            else
                for _, row in ipairs(fresh) do
                    out[#out + 1] = row
                end
            end
            return true
        end,
        window = function(win)
            local bytes = flush()
            advance(dates.parse(win.to))
            if meta.appending then
                whole, vouched = bytes, sinks.writer_state(w)
                store(true)
            elseif not handle then
                -- Rows handed to the caller (a function, stdout, a list):
                -- the state moves with them.
                write_state(params.state, state)
            end
        end,
    })
    if ok then
        ok, n = pcall(function()
            if w then
                local closed, cerr = w:close()
                if not closed then
                    errors.throw("output", { endpoint = e.name, message = tostring(cerr) })
                end
            end
            if meta.appending then
                whole, vouched = flush(), sinks.writer_state(w)
                store(false)
            elseif handle then
                -- The new file takes its name, then the state moves: a kill
                -- between the two fetches these rows again, never loses them.
                local committed, why = handle:commit()
                if not committed then
                    errors.throw("output", { endpoint = e.name, message = why })
                end
                handle = nil
                if state then
                    write_state(params.state, state)
                end
            end
            return n
        end)
    end
    if file and io_type(file) == "file" then
        file:close()
    end
    if not ok then
        if meta.appending then
            -- Back to what the state vouches for (a full disk gets its
            -- space back), then the state says no run is writing.
            if require("wolkvox.core").truncate(sink.output, whole) then
                pcall(store, false)
            end
        elseif handle then
            -- A new file cut short is kept as OUTPUT.part; the state did not
            -- move, so the next run fetches these windows again.
            local kept = errors.is(n) and n.partial and #n.partial.windows > 0 and handle:keep()
            if kept then
                n.partial.file = kept
                n.partial.refetch = true
            else
                handle:abort()
            end
        end
        error(n, 0)
    end
    meta.calls, meta.windows, meta.truncated = dmeta.calls, #dmeta.windows, dmeta.truncated
    meta.more = job.more
    if sink.output or sink.file or sink.on_rows then
        return meta.rows, meta
    end
    return out, meta
end

--- Run one sync of endpoint `e`; see `wolkvox.client`'s `sync`.  Its
-- state is held by one process at a time: a second sync of the same state
-- running at once is refused before it spends a call.
-- @return rows handed over (a list when no sink was given, else their
--   count) and meta (`from`, `to`, `watermark`, `dropped`, `calls`, ...)
function M.run(ctx, e, params, sink)
    check(e, params, sink)
    if sink and sink.into then
        return into.sync(ctx, e, params, sink, { identity = identity_of(e, params, sink), span = M.span, job = M.job })
    end
    local lock = checkpoint.hold(params.state, "sync")
    local ok, rows, meta = pcall(sync, ctx, e, params, sink)
    lock:release()
    if not ok then
        error(rows, 0)
    end
    return rows, meta
end

return M
