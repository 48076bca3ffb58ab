--- Where a job's rows go, the place a new destination plugs into: a writer
-- of a format (`wolkvox.out.formats`) to an open file, to a new file
-- (`wolkvox.out.file`: renamed when whole), to a file a checkpoint or a sync
-- state vouches for (resumed), or to an appended file (a sync's); with
-- what a state keeps of a writer to go on with it.  The jobs
-- (`wolkvox.job.export`, `wolkvox.job.sync`) decide when; this module says
-- where and how.
-- @module wolkvox.out.sinks

local errors = require "wolkvox.errors"
local file_out = require "wolkvox.out.file"
local formats = require "wolkvox.out.formats"

local type, tostring, format, io_type = type, tostring, string.format, io.type

local M = {}

--- A writer of `fmt` (a name or a format table) to the open `file`;
-- `about` (optional) is what a writer may know of the job: `endpoint`,
-- `utc_offset`, `bookmark` (the Singer format's), and for a report's
-- header `from`, `to`, `per` and `totals` (see `wolkvox.out.formats.writer`).
function M.writer(fmt, file, columns, bom, about)
    about = about or {}
    local opts = { columns = columns, bom = bom, endpoint = about.endpoint, utc_offset = about.utc_offset,
        bookmark = about.bookmark, delimiter = about.delimiter, about = about }
    return type(fmt) == "table" and formats.custom(fmt, file, opts) or formats.writer(fmt, file, opts)
end

--- Write what a `map` gave: one row, none (nil), or a list of rows (a table
-- whose [1] is set: an answer keyed by bucket becomes one row per bucket).
function M.put(w, got)
    if got == nil then
        return true
    end
    if type(got) == "table" and got[1] ~= nil then
        for i = 1, #got do
            local written, why = w:write(got[i])
            if not written then
                return nil, why
            end
        end
        return true
    end
    return w:write(got)
end

--- Add to the list `out` the rows that what a `map` gave stands for: one
-- row, none (nil), or a list of rows (a table whose [1] is set).
function M.gather(out, got)
    if type(got) == "table" and got[1] ~= nil then
        for i = 1, #got do
            out[#out + 1] = got[i]
        end
    elseif got ~= nil then
        out[#out + 1] = got
    end
    return out
end

--- A writer of `opts.format` to `path` (default `opts.output`): a new
-- file (`wolkvox.out.file.new`: renamed to `path` by `handle:commit()`),
-- or, given `saved` (a checkpoint or a sync state: `bytes`, `digest`,
-- `writer`), the file it vouches for, cut back to those bytes, with the
-- writer's state as it was (`what` names the file that vouches).
-- @return the writer, the open file, and for a new file its handle
function M.open(e, opts, columns, saved, what, path, about)
    path = path or opts.output
    local file, handle
    if saved then
        file = file_out.resume(e, path, saved, what)
    else
        handle = file_out.new(path)
        file = handle.file
    end
    local w = M.writer(opts.format or "csv", file, columns, opts.bom, about or { endpoint = e })
    if saved then
        local s = saved.writer
        w.started, w.cols, w.rows, w.bracket = s.started, s.cols, s.rows or 0, s.bracket
    end
    return w, file, handle
end

--- What a checkpoint or a sync state keeps of writer `w` to go on with it.
function M.writer_state(w)
    return { started = w.started or false, cols = w.cols, rows = w.rows, bracket = w.bracket }
end

--- Before any call: an appended output holds only what states of this sync
-- wrote; bytes that `st` (the state, or nil) does not vouch for are refused
-- (`params`), never cut.
function M.check_append(e, path, st, state_path)
    local info = file_out.core().stat(path)
    if not info or (st and st.bytes) then
        return -- a new file, or one the state vouches for (checked when opened)
    end
    if info.type ~= "file" then
        errors.refuse(e, "sync: " .. path .. " is not a regular file: append writes only regular files")
    end
    if info.size > 0 then
        errors.refuse(e, format("sync: %s holds %d bytes that no state of this sync vouches for (%s %s): append "
            .. "never removes or mixes with what it did not write; move the file aside (or give another output) "
            .. "and run again", path, info.size, state_path, st and "says nothing of it" or "does not exist"))
    end
end

--- Where the rows of a sync go (`sink`: `format`, `columns`, `bom`, and
-- `file` (open), or `output` with `append`), given its state `st`:
-- the writer, the open file, the handle of a new file (renamed when the
-- run is whole), and whether the file is appended to (the state then
-- vouches for it after every window).  Nil when the rows go to a function
-- or a list.
function M.for_sync(e, sink, st, about)
    if not (sink.output or sink.file) then
        return nil
    end
    local fmt = sink.format or "csv"
    if not formats.FORMATS[fmt] then
        errors.refuse(e, "sync: unknown format '" .. tostring(fmt) .. "'")
    end
    local columns = sink.columns
    if columns == nil and fmt == "csv" then
        columns = formats.columns(e.name)
    end
    local opts = { output = sink.output, format = fmt, bom = sink.bom }
    if sink.file then
        if io_type(sink.file) ~= "file" then
            errors.refuse(e, "sync: file must be an open file")
        end
        return M.writer(fmt, sink.file, columns, sink.bom, about or { endpoint = e })
    end
    if not sink.append then
        -- A new file each run, renamed into place when the run is whole.
        return M.open(e, opts, columns, nil, nil, nil, about)
    end
    if st and st.bytes then
        local w, file = M.open(e, opts, columns, st, "sync state", nil, about)
        return w, file, nil, true
    end
    -- The first run: the file is new (or empty), created as ours.
    local w, file, handle = M.open(e, opts, columns, nil, nil, nil, about)
    local ok, why = handle:move(sink.output)
    if not ok then
        errors.throw("output", { endpoint = e.name, message = why })
    end
    return w, file, nil, true
end

return M
