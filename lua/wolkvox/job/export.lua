--- Exports: the rows of a report written out as they come, window by
-- window, in flat memory (the rows of a window wait on disk until the
-- window is known whole, see `wolkvox.call.spooled`), to a file in one of
-- `wolkvox.export`'s formats or to a function of yours.  With a checkpoint
-- an export that stopped (an error, Ctrl-C, a killed process) is finished
-- by running it again: the windows already written are not fetched again,
-- and the output is the same, byte for byte, as an uninterrupted run.
-- @module wolkvox.job.export

local checkpoint = require "wolkvox.out.state"
local dates = require "wolkvox.dates"
local errors = require "wolkvox.errors"
local export = require "wolkvox.out.formats"
local file_out = require "wolkvox.out.file"
local sinks = require "wolkvox.out.sinks"
local prepare = require "wolkvox.call.prepare"
local run = require "wolkvox.call.run"
local windows = require "wolkvox.call.windows"
local into = require "wolkvox.job.into"
local json = require "wolkvox.json"

local type, pairs, ipairs, tostring, pcall, error, io_type, os_rename =
    type, pairs, ipairs, tostring, pcall, error, io.type, os.rename

local M = {}

--- The options of an export (its third argument).
M.OPTIONS = { format = true, output = true, file = true, columns = true, bom = true, checkpoint = true,
    on_rows = true, map = true, into = true, table = true, refresh = true, delimiter = true }

-- Options of a call that change how it runs, not what it writes: left out
-- of a checkpoint's fingerprint.
local RUNNING = { on_progress = true, max_calls = true, retries = true, retry_base = true, retry_cap = true,
    deadline = true, max_concurrent = true, max_rows = true, min_span = true }

-- Formats whose writer state a checkpoint can carry.
local RESUMABLE = { csv = true, ndjson = true, json = true }

local function check(e, opts)
    local refuse = function(msg) errors.refuse(e, "export: " .. msg) end
    if type(opts) ~= "table" then
        refuse("the third argument must be a table of options (format, output or file, ...)")
    end
    for k in pairs(opts) do
        if not M.OPTIONS[k] then
            refuse("unknown option '" .. tostring(k) .. "'")
        end
    end
    local given = (opts.output ~= nil and 1 or 0) + (opts.file ~= nil and 1 or 0) + (opts.on_rows ~= nil and 1 or 0)
        + (opts.into ~= nil and 1 or 0)
    if given ~= 1 then
        refuse("give exactly one of output (a path), file (an open file), on_rows (a function) or into (a database)")
    end
    if opts.into ~= nil then
        into.check(e, opts, "export")
    elseif opts.table ~= nil or opts.refresh ~= nil then
        refuse("table and refresh go with into (a database)")
    end
    if opts.output ~= nil and (type(opts.output) ~= "string" or opts.output == "") then
        refuse("output must be a path")
    end
    if opts.file ~= nil and io_type(opts.file) ~= "file" then
        refuse("file must be an open file")
    end
    if opts.on_rows ~= nil and type(opts.on_rows) ~= "function" then
        refuse("on_rows must be a function")
    end
    if opts.map ~= nil and type(opts.map) ~= "function" then
        refuse("map must be a function")
    end
    if opts.delimiter ~= nil and not (export.DELIMITERS[opts.delimiter] and (opts.format or "csv") == "csv") then
        refuse("delimiter goes with csv and is one of , ; | or a tab (\"\\t\")")
    end
    local f = opts.format
    if f ~= nil and type(f) ~= "table" then
        local ready, why = export.ready(f)
        if not ready then
            refuse(why)
        end
    end
    if opts.checkpoint ~= nil then
        if type(opts.checkpoint) ~= "string" or opts.checkpoint == "" then
            refuse("checkpoint must be a path")
        end
        if opts.output == nil then
            refuse("a checkpoint needs output = PATH: a resumed export cuts its file back to the last "
                .. "window the checkpoint vouches for")
        end
        if not RESUMABLE[f or "csv"] then
            refuse("a checkpoint can carry the state of the csv, ndjson and json formats only")
        end
        if opts.checkpoint == opts.output or opts.checkpoint == opts.output .. ".part" then
            refuse("the checkpoint and the output must be different files")
        end
    end
    -- What can be checked here is, before any call is spent.
    if opts.output then
        file_out.check(opts.output, "the output")
    end
    if opts.checkpoint then
        file_out.check(opts.checkpoint, "the checkpoint")
    end
end

-- What shapes the output: the fingerprint a checkpoint is bound to.
local function job_identity(job, params, opts, columns)
    local p = {}
    for k, v in pairs(params or {}) do
        if not RUNNING[k] and k ~= "from" and k ~= "to" then
            p[k] = v
        end
    end
    return { endpoint = job.e.name, from = job.from, to = job.to, params = p,
        format = opts.format or "csv", columns = columns, bom = opts.bom == true, output = opts.output,
        table = opts.table, delimiter = opts.delimiter ~= "," and opts.delimiter or nil }
end

-- Keep only what is after `done_to` (a wall time): windows that end later,
-- the one it falls in cut to start just after it.
local function after(job, done_to)
    local keep = {}
    for _, item in ipairs(job.items) do
        if item.to > done_to then
            if item.from <= done_to then
                item.from = done_to + 1
            end
            keep[#keep + 1] = item
        end
    end
    job.items = keep
end

-- Cut every window longer than `span` (the span a truncated window had to
-- be cut to last time).
local function presplit(job, span)
    local items = {}
    for _, item in ipairs(job.items) do
        if item.to - item.from > span and not item.label then
            for _, part in ipairs(windows.split(item.from, item.to, span, job.step)) do
                items[#items + 1] = part
            end
        else
            items[#items + 1] = item
        end
    end
    job.items = items
end

local function fail_output(e, msg)
    errors.throw("output", { endpoint = e.name, message = msg })
end

local function run_export(ctx, e, params, opts)
    local job = run.spool(ctx, prepare.prepare(ctx, e, params))
    if job.write or job.mode == "chunks" then
        errors.refuse(e, "export: " .. e.api .. " is not a report")
    end
    local format = opts.format or "csv"
    local columns = opts.columns
    if columns == nil and (format == "csv" or format == "table") then
        columns = export.columns(e.name)
    end

    -- A database: its own state, merged by the endpoint's rules.
    if opts.into then
        return into.export(ctx, job, opts, { identity = checkpoint.fingerprint(job_identity(job, params, opts)),
            after = after })
    end

    -- A function of the caller's: no file, no checkpoint.
    if opts.on_rows then
        return run.deliver(ctx, job, { rows = function(list, w)
            local ok, why = opts.on_rows(list, w)
            if ok == false then
                return nil, why or "on_rows returned false"
            end
            return true
        end })
    end

    local cp_path, cp, fingerprint = opts.checkpoint, nil, nil
    -- With a checkpoint the rows go to OUTPUT.part (the file it vouches
    -- for, resumable), renamed to OUTPUT when the last window is in.
    local part = cp_path and opts.output .. ".part"
    if cp_path then
        if not job.from then
            errors.refuse(e, "export: a checkpoint needs a date range")
        end
        fingerprint = checkpoint.fingerprint(job_identity(job, params, opts, columns))
        cp = checkpoint.read(cp_path, fingerprint)
        if cp and cp.complete then
            local core = require "wolkvox.core"
            local there = core.stat(opts.output) ~= nil
            -- Killed between the checkpoint's last write and the rename.
            if not there and cp.digest and core.digest(part, cp.bytes) == cp.digest then
                there = os_rename(part, opts.output) ~= nil
            end
            if not there then
                errors.refuse(e, "export: the checkpoint " .. cp_path .. " says this export was finished, but "
                    .. opts.output .. " is not there: remove the checkpoint to export again")
            end
            return cp.writer.rows or 0, { endpoint = e.name, windows = {}, rows = 0, calls = 0, resumed = true,
                complete = true }
        end
        if cp and cp.done_to then
            after(job, dates.parse(cp.done_to))
        end
        -- Windows the last run learnt were too full are not asked again whole.
        if cp and type(cp.span_cap) == "number" then
            presplit(job, cp.span_cap)
        end
    end

    local w, file, handle
    -- (A report's header says the range, the periods and what the run took.)
    local about = { endpoint = e, utc_offset = ctx.utc_offset, delimiter = opts.delimiter,
        from = job.from and dates.iso(job.from), to = job.to and dates.iso(job.to), per = params and params.per }
    if opts.file then
        w = sinks.writer(format, opts.file, columns, opts.bom, about)
    elseif cp then
        w, file = sinks.open(e, opts, columns, cp, "checkpoint", part, about)
    else
        w, file, handle = sinks.open(e, opts, columns, nil, nil, opts.output, about)
        if cp_path then
            -- The checkpoint's file exists under its own name from the start.
            local ok, why = handle:move(part)
            if not ok then
                fail_output(e, why)
            end
            handle = nil
        end
    end
    -- Windows written so far and the calls they took, all runs together;
    -- the bytes of the output at the end of the last whole window.
    local done, spent, saved_to = cp and cp.windows or 0, cp and cp.calls or 0, cp and cp.done_to
    about.totals = function()
        return { calls = spent, windows = done }
    end
    local whole = cp and cp.bytes or 0
    local function mark()
        if file then
            local ok, err = file:flush()
            if not ok then
                fail_output(e, "cannot write: " .. tostring(err))
            end
            whole = file:seek("cur")
        end
    end
    local function save(done_to, complete)
        mark()
        checkpoint.save(cp_path, { fingerprint = fingerprint, job = job, format = format, output = part, writer = w },
            { done_to = done_to, bytes = whole, windows = done, calls = spent, complete = complete })
        saved_to = done_to
    end
    -- Rows waiting on disk go to a CSV file without being built as tables:
    -- the C core makes their lines as the answer arrives (`job.lines`: the
    -- columns to make them with), or from the answer's text once the first
    -- row has settled the columns through the writer.  Until a row has,
    -- the answer is kept too: a first row with other members settles more
    -- columns than the lines have.
    local lines = format == "csv" and not opts.map and not w.delimiter
    -- NDJSON lines are made by the C core too, as the answer arrives (or
    -- from the spooled answer's text, where a transport cannot): what the
    -- writer's encoder makes of each row, no row a table.
    local ndjson_lines = format == "ndjson" and not opts.map
    -- The file's columns: settled by its first row, or, before one, the
    -- given ones (what a first row without other members settles).
    local function file_columns()
        return w.started and w.cols or w.columns
    end
    -- Lines made by the C core (text given by the iterator `chunks`)
    -- written as they are, the writer started first (a CSV's header).
    local function write_chunks(chunks)
        if not w.started then
            local begun, why = w:begin()
            if not begun then
                fail_output(e, tostring(why))
            end
        end
        for text in chunks do
            local written, why = w:write_lines(text, 0)
            if not written then
                fail_output(e, tostring(why))
            end
        end
    end
    if lines then
        job.lines = function()
            local cols = file_columns()
            return cols and { columns = cols, time = e.time_field, cap = job.max_rows,
                keep_answer = not w.started } or nil
        end
    elseif ndjson_lines then
        job.lines = function()
            return { ndjson = json.encode_row, time = e.time_field, cap = job.max_rows }
        end
    end
    local ok, n, meta = pcall(run.deliver, ctx, job, {
        rows = function(list, win)
            local map = opts.map
            w.window = win  -- (a report by period charts its rows by win.label)
            for i = 1, #list do
                local written, why
                if map then
                    written, why = sinks.put(w, map(list[i], win))
                else
                    written, why = w:write(list[i])
                end
                if not written then
                    return nil, why
                end
            end
            return true
        end,
        spooled = lines and function(data)
            local skip = 0
            -- Lines made as the answer arrived, when their columns are
            -- the writer's (or will be: no row has settled them yet).
            if data:lines_for(file_columns() or {}, w.started) then
                write_chunks(data:line_chunks(e.name))
                w.rows = w.rows + data.count
                data:close()
                return true
            end
            if not w.started then
                local first = data.count > 0 and data:batches(e.name)()
                if not first then
                    return true
                end
                local written, why = w:write(first[1])
                if not written then
                    fail_output(e, tostring(why))
                end
                skip = 1
            end
            write_chunks(data:batches(e.name, w.cols, skip))
            w.rows = w.rows + data.count - skip
            data:close()
            return true
        end or ndjson_lines and function(data)
            if data:ndjson_lines() then
                write_chunks(data:line_chunks(e.name))
            else
                write_chunks(data:batches(e.name, nil, 0, json.encode_row))
            end
            w.rows = w.rows + data.count
            data:close()
            return true
        end or nil,
        window = function(win)
            done, spent = done + 1, spent + (win.calls or 0)
            if cp_path then
                save(win.to)
            else
                mark()
            end
        end,
    })
    if ok then
        -- The writer's end (a JSON array's bracket), then the checkpoint
        -- says done, then the whole file takes the final name.
        local rows = n
        ok, n = pcall(function()
            local closed, why = w:close()
            if not closed then
                fail_output(e, tostring(why))
            end
            if cp_path then
                save(dates.iso(job.to), true)
                file:close()
                file = nil
                local renamed, rerr = os_rename(part, opts.output)
                if not renamed then
                    fail_output(e, "cannot rename " .. part .. " to " .. opts.output .. ": " .. tostring(rerr))
                end
            elseif handle then
                local committed, cerr = handle:commit()
                if not committed then
                    fail_output(e, cerr)
                end
                handle = nil
            end
            return rows
        end)
    end
    if file and io_type(file) == "file" then
        file:close()
    end
    if not ok then
        if w then
            w:discard()
        end
        -- What the checkpoint vouches for, earlier runs included: a resumed
        -- run that fails before its first window still left an output that
        -- holds windows (partial.saved).
        if cp_path and done > 0 and errors.is(n) then
            n.partial = n.partial or { windows = {}, rows = 0 }
            n.partial.saved = { windows = done, to = saved_to }
            n.partial.file = part
        end
        if handle then
            -- The whole windows of a run cut short are kept as OUTPUT.part,
            -- never under the final name.
            local kept = errors.is(n) and n.partial and #n.partial.windows > 0 and handle:keep(whole)
            if kept then
                n.partial.file = kept
            else
                handle:abort()
            end
        end
        error(n, 0)
    end
    meta.resumed = cp ~= nil
    meta.written = w.rows
    return n, meta
end

--- Run the export of endpoint `e` over `params` with `opts` (see
-- `wolkvox.client`'s `export`).  A checkpoint is held by one process at a
-- time (`wolkvox.out.state.hold`).
-- @return rows written and meta (`windows`, `calls`, `resumed`, ...)
function M.run(ctx, e, params, opts)
    check(e, opts)
    local lock = opts.checkpoint and checkpoint.hold(opts.checkpoint, "export")
    local ok, n, meta = pcall(run_export, ctx, e, params, opts)
    if lock then
        lock:release()
    end
    if not ok then
        error(n, 0)
    end
    return n, meta
end

return M
