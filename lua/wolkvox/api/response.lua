--- Reading a transport result: the envelope, its codes, and the error kinds.
-- wolkvox answers `{"code","error","msg","data"}`; `code` may be a number, a
-- numeric string, "" or null, and errors may come as an HTTP status or as an
-- error code inside a 200 envelope.  All 403s share one code and differ only
-- by message.  A 404 "Validate dates entered" means an empty window.
-- @module wolkvox.api.response

local errors = require "wolkvox.errors"

local type, tonumber, ipairs, floor, upper, concat, next =
    type, tonumber, ipairs, math.floor, string.upper, table.concat, next
local tointeger = math.tointeger

local M = {}

--- The envelope `code` as an integer, or nil when it is empty or absent.
function M.code(v)
    if type(v) == "string" then
        v = tonumber(v)
    end
    if type(v) == "number" and v == floor(v) then
        return tointeger and tointeger(v) or v
    end
    return nil
end

local kind_of = errors.kind_of -- which 403 is which: `wolkvox.errors.statuses`

local function text_of(env)
    if type(env) ~= "table" then
        return ""
    end
    local parts = {}
    if type(env.msg) == "string" then parts[#parts + 1] = env.msg end
    if type(env.error) == "string" and env.error ~= env.msg then parts[#parts + 1] = env.error end
    if type(env.message) == "string" then parts[#parts + 1] = env.message end
    return concat(parts, ": ")
end

--- True when `t` is a list of rows (an array, or empty), not an object.
function M.is_list(t)
    return type(t) == "table" and (t[1] ~= nil or next(t) == nil)
end
local is_list = M.is_list

-- `failed` is the status or envelope code that failed; whether another
-- attempt may pass is `wolkvox.errors.classify`.
local function fail(kind, e, res, fields, failed)
    fields.endpoint = e.name
    fields.status = res.status ~= 0 and res.status or nil
    fields.retry_after = res.retry_after
    fields.calls = res.sends
    if kind == "http" then
        -- An error code inside a 200 envelope counts as that status.
        fields.retryable = errors.classify(kind, { status = failed or res.status })
    end
    errors.throw(kind, fields)
end

local function meta_of(res, e)
    return {
        endpoint = e.name,
        status = res.status,
        bytes = res.bytes,
        time = res.time,
        connects = res.connects,
        calls = res.sends or 1,
    }
end

--- Interpret one transport result for endpoint `e`.
-- @return data (rows, an object, or a string, as the endpoint sends it) and meta
-- Throws a structured error (see `errors.protect`) for every failure.
function M.interpret(res, e)
    local terr = res.error
    if terr then
        fail(terr.kind, e, res, {
            reason = terr.reason, message = errors.snippet(terr.message), sent = terr.sent,
            curl_code = terr.curl_code,
        })
    end
    if res.lines_error then
        -- A row its output cannot hold (NDJSON lines made as it arrived):
        -- the same answer would fail the same way again.
        fail("output", e, res, { message = res.lines_error })
    end
    local status, env = res.status, res.value
    if res.decode_error or (env == nil and status ~= 204) then
        local snippet = errors.snippet(res.snippet or "")
        local why = res.decode_error and ("answer is not JSON (" .. res.decode_error .. ")")
            or "empty answer"
        if snippet ~= "" then
            why = why .. "; it begins: " .. snippet
        end
        if status >= 200 and status < 300 then
            fail("decode", e, res, { message = why })
        end
        if status >= 300 and status < 400 then
            why = "redirect not followed (the token goes only to the configured server)"
        end
        local kind = kind_of(status, upper(res.snippet or ""))
        if kind == "empty" then
            return {}, meta_of(res, e)
        end
        fail(kind, e, res, { message = why })
    end

    local code = type(env) == "table" and M.code(env.code) or nil
    local failed = status
    if status >= 200 and status < 300 and code and code >= 400 then
        failed = code          -- an error code inside a 200 envelope
    end
    if failed < 200 or failed >= 300 then
        local text = text_of(env)
        local kind = kind_of(failed, upper(text))
        if kind == "empty" then
            local meta = meta_of(res, e)
            meta.code, meta.msg, meta.empty = code, text, true
            return {}, meta
        end
        if text == "" then
            text = "HTTP status " .. failed
        end
        fail(kind, e, res, { code = code, message = errors.snippet(text) }, failed)
    end

    local meta = meta_of(res, e)
    meta.code = code
    meta.msg = type(env) == "table" and type(env.msg) == "string" and env.msg or nil
    local data
    if is_list(env) and env.data == nil then
        data = env                       -- a bare array without envelope
    elseif type(env) == "string" or type(env) == "number" then
        data = env                       -- a bare string or number
    elseif type(env) ~= "table" then
        data = {}                        -- JSON null
    elseif e.data_key and env[e.data_key] ~= nil then
        data = env[e.data_key]           -- rows elsewhere than data (campaign_15: records[])
        if e.total_key then
            meta[e.total_key] = tonumber(env[e.total_key]) or env[e.total_key]
        end
    elseif env.data ~= nil then
        data = env.data
    else
        data = {}
    end
    if status == 207 and type(data) == "table" and type(data.files) == "table" then
        M.multi_status(data.files, meta)
    end
    return data, meta
end

--- A multi-status answer (storage delete_files): one result per item in
-- `meta.items` (`name`, `code`, `ok`, `message`), and `meta.failed`.
function M.multi_status(files, meta)
    local items, failed = {}, 0
    for i, f in ipairs(files) do
        local code = type(f) == "table" and M.code(f.code) or nil
        local ok = code ~= nil and code >= 200 and code < 300
        if not ok then
            failed = failed + 1
        end
        items[i] = { name = type(f) == "table" and f.name or nil, code = code, ok = ok,
            message = type(f) == "table" and (f.message or f.msg) or nil }
    end
    meta.items, meta.failed = items, failed
end

return M
