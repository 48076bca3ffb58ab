--- Checkpoints of an export: a small JSON file, replaced atomically after
-- each window whose rows reached the output, that says how far the job got
-- (`done_to`: the end of the last window written), how many bytes of the
-- output that is (`bytes`), and what the writer needs to go on (CSV
-- columns, rows written).  It names the job by a fingerprint of everything
-- that shapes the output, so a checkpoint is never used for another job.
-- It holds no token.
-- @module wolkvox.job.checkpoint

local errors = require "wolkvox.errors"
local json = require "wolkvox.json"

local type, pairs, ipairs, tostring, sort, concat, format =
    type, pairs, ipairs, tostring, table.sort, table.concat, string.format

local M = {}

-- The C core writes and reads the files (atomic, never through a link);
-- loaded when a checkpoint is used, so the module loads without it.
local function core()
    return require "wolkvox.core"
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

--- Read the checkpoint at `path` for the job `fingerprint`: its table, or
-- nil when there is none yet.  One made for another job, or unreadable, is
-- refused (kind `params`) rather than reused.
function M.read(path, fingerprint)
    local text, err, why = core().read_file(path)
    if not text then
        if why == "missing" then
            return nil
        end
        refuse(path, tostring(err))
    end
    local t = core().decode(text)
    if type(t) ~= "table" or t.version ~= M.VERSION or type(t.job) ~= "string"
        or type(t.bytes) ~= "number" or type(t.writer) ~= "table" then
        refuse(path, "not a lua-wolkvox checkpoint (remove it to start over)")
    end
    if t.job ~= fingerprint then
        refuse(path, format("made for another job (%s %s .. %s, %s); give this job its own checkpoint, "
            .. "or remove the file to start over", tostring(t.endpoint), tostring(t.from), tostring(t.to),
            tostring(t.format)))
    end
    return t
end

--- Hold `path` for this job alone: a lock beside it (`PATH.lock`, flock,
-- never through a link) that a second process running the same job at
-- once (two cron runs overlapping) cannot take; it is refused (kind
-- `params`) before spending a call, instead of both writing one output.
-- @return the lock (release it; the kernel drops it if the process dies)
function M.hold(path, what)
    local lock, why = core().lock(path .. ".lock")
    if not lock then
        if why == "busy" then
            refuse(path, "another process is running this " .. (what or "export") .. " now (" .. path
                .. ".lock is held); let it finish")
        end
        refuse(path, "cannot lock it: " .. tostring(why))
    end
    return lock
end

--- Replace the checkpoint at `path` with `t` (atomically).
function M.write(path, t)
    t.version = M.VERSION
    local ok, err = core().write_file(path, json.encode(t) .. "\n")
    if not ok then
        errors.throw("output", { message = "cannot write the checkpoint: " .. tostring(err) })
    end
end

return M
