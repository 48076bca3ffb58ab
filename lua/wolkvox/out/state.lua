--- Checkpoints of an export: a small JSON file, replaced atomically after
-- each window whose rows reached the output, that says how far the job got
-- (`done_to`: the end of the last window written), how many bytes of the
-- output that is (`bytes`), and what the writer needs to go on (CSV
-- columns, rows written).  It names the job by a fingerprint of everything
-- that shapes the output, so a checkpoint is never used for another job.
-- It holds no token.
-- @module wolkvox.out.state

local dates = require "wolkvox.dates"
local errors = require "wolkvox.errors"
local json = require "wolkvox.json"

local type, pairs, ipairs, tostring, sort, concat, format =
    type, pairs, ipairs, tostring, table.sort, table.concat, string.format

local M = {}

-- The C core writes and reads the files (atomic, never through a link);
-- loaded when a checkpoint is used, so the module loads without it.
local function core()
    return require("wolkvox.out.file").core()
end

--- The checkpoint format's version.
M.VERSION = 1

-- A canonical text of a value: tables with their keys sorted.
local function canonical(v, out)
    local t = type(v)
    if t == "table" then
        local keys = {}
        for k in pairs(v) do
            keys[#keys + 1] = k
        end
        sort(keys, function(a, b) return tostring(a) < tostring(b) end)
        out[#out + 1] = "{"
        for _, k in ipairs(keys) do
            out[#out + 1] = type(k) .. ":" .. tostring(k) .. "="
            canonical(v[k], out)
            out[#out + 1] = ";"
        end
        out[#out + 1] = "}"
    elseif t == "function" then
        out[#out + 1] = "function"
    else
        out[#out + 1] = t .. ":" .. tostring(v)
    end
    return out
end

--- The fingerprint of a job: 64 hex digits of SHA-256 over `what` (a table
-- of everything that shapes the output).
function M.fingerprint(what)
    return core().sha256(concat(canonical(what, {})))
end

local function refuse(path, why)
    errors.throw("params", { message = format("checkpoint %s: %s", path, why) })
end

--- The largest state file read back (a checkpoint with the columns of a
-- row of thousands of fields, a sync state with the keys of a busy
-- overlap): what is written is always read back, up to this.
M.MAX_BYTES = 64 * 1024 * 1024

local function is_count(v)
    return type(v) == "number" and v >= 0 and v == math.floor(v) and v < 2 ^ 53
end

local function is_hex64(v)
    return type(v) == "string" and #v == 64 and not v:find("[^0-9a-f]")
end

local function is_date(v)
    return type(v) == "string" and require("wolkvox.dates").parse(v) ~= nil
end

local function is_names(v)
    if type(v) ~= "table" then
        return false
    end
    local n = 0
    for k, c in pairs(v) do
        n = n + 1
        if type(k) ~= "number" or type(c) ~= "string" then
            return false
        end
    end
    return n == #v
end

--- Whether `s` is a writer's state as `wolkvox.out.sinks.writer_state`
-- makes it.
function M.valid_writer(s)
    return type(s) == "table" and type(s.started) == "boolean" and (s.cols == nil or is_names(s.cols))
        and (s.rows == nil or is_count(s.rows)) and (s.bracket == nil or type(s.bracket) == "boolean")
end

--- The text of state file `path`, or nil when there is none; `refuse`
-- (called with the reason) when it cannot be read.
function M.load(path, refuse_with, what)
    local text, err, why = core().read_file(path, M.MAX_BYTES)
    if not text then
        if why == "missing" then
            return nil
        end
        refuse_with(tostring(err))
    end
    local ok, t = pcall(core().decode, text)
    if not ok or type(t) ~= "table" then
        refuse_with("not a lua-wolkvox " .. (what or "checkpoint") .. ": it is not JSON (remove it to start over)")
    end
    return t
end

--- Read the checkpoint at `path` for the job `fingerprint`: its table, or
-- nil when there is none yet.  One made for another job, unreadable, or
-- with a field that is not as this module writes it (an edit, a damaged
-- disk) is refused (kind `params`) rather than used: nothing is spent.
function M.read(path, fingerprint)
    local t = M.load(path, function(why) refuse(path, why) end)
    if t == nil then
        return nil
    end
    if t.version ~= M.VERSION or type(t.job) ~= "string" then
        refuse(path, "not a lua-wolkvox checkpoint (remove it to start over)")
    end
    if t.job ~= fingerprint then
        refuse(path, format("made for another job (%s %s .. %s, %s); give this job its own checkpoint, "
            .. "or remove the file to start over", tostring(t.endpoint), tostring(t.from), tostring(t.to),
            tostring(t.format)))
    end
    local bad
    if not is_count(t.bytes) then
        bad = "bytes"
    elseif not M.valid_writer(t.writer) then
        bad = "writer"
    elseif t.done_to ~= nil and not is_date(t.done_to) then
        bad = "done_to"
    elseif t.windows ~= nil and not is_count(t.windows) then
        bad = "windows"
    elseif t.calls ~= nil and not is_count(t.calls) then
        bad = "calls"
    elseif t.complete ~= nil and t.complete ~= true then
        bad = "complete"
    elseif t.span_cap ~= nil and not (type(t.span_cap) == "number" and t.span_cap >= 1 and t.span_cap < 2 ^ 40) then
        bad = "span_cap"
    elseif t.digest ~= nil and not is_hex64(t.digest) then
        bad = "digest"
    end
    if bad then
        refuse(path, "its field '" .. bad .. "' is not as lua-wolkvox writes it (the file was edited or "
            .. "damaged): remove it to start over")
    end
    return t
end

--- Hold `path` for this job alone: a lock beside it (`PATH.lock`, flock,
-- never through a link) that a second process running the same job at
-- once (two cron runs overlapping) cannot take; it is refused (kind
-- `busy`) before spending a call, instead of both writing one output.
-- @return the lock: `release()` it (the lock file is removed; the kernel
--   drops the lock if the process dies)
function M.hold(path, what)
    local lockpath = path .. ".lock"
    local lock, why = core().lock(lockpath)
    if not lock then
        local name = (what == "sync" and "the sync state " or "the checkpoint ") .. path
        if why == "busy" then
            errors.throw("busy", { message = format("%s: another process is running this %s now "
                .. "(%s is held); let it finish", name, what or "export", lockpath) })
        end
        errors.throw("output", { message = format("%s: cannot lock it: %s", name, tostring(why)) })
    end
    return { release = function() lock:remove(lockpath) end }
end

--- Record an export's progress in the checkpoint at `path`: every field a
-- checkpoint holds is named here (and checked by `read`), taken from what
-- the export runs (`run`: `fingerprint`, `job` (the prepared job: endpoint
-- `e`, `from`, `to`, `span_cap`, a window span the last run had to cut to),
-- `format`, `output` (the file it vouches for), `writer`) and how far it got
-- (`progress`: `done_to`, the end of the last window written; `bytes` of
-- the output then; `windows`, `calls`, all runs together; `complete`).  A
-- new field from the job, its options or its writer changes this function
-- alone.
function M.save(path, run, progress)
    local job = run.job
    M.write(path, { job = run.fingerprint, endpoint = job.e.name, from = dates.iso(job.from),
        to = dates.iso(job.to), format = run.format, done_to = progress.done_to, bytes = progress.bytes,
        digest = require("wolkvox.out.file").digest(run.output, progress.bytes),
        windows = progress.windows, calls = progress.calls, complete = progress.complete or nil,
        span_cap = job.span_cap ~= math.huge and job.span_cap or nil,
        writer = require("wolkvox.out.sinks").writer_state(run.writer) })
end

--- Replace the state file at `path` with `t` (atomically), stamped with
-- `version` (default `VERSION`); `what` names it in the error ("checkpoint").
function M.write(path, t, what, version)
    t.version = version or M.VERSION
    local ok, err = core().write_file(path, json.encode(t) .. "\n")
    if not ok then
        errors.throw("output", { message = "cannot write the " .. (what or "checkpoint") .. ": " .. tostring(err) })
    end
end

return M
