--- Structured errors.
-- Every expected failure reaches the caller as `nil, err`, where `err` is a
-- table made here: `kind` (one of `errors.kinds`), `message`, `endpoint`
-- ("family/api"), `status` (HTTP), `code` (wolkvox envelope code),
-- `retryable`, and for transport failures `reason`.  It prints well through
-- `tostring`, and never holds the token: nothing that builds one is given it.
-- @module wolkvox.errors

local setmetatable, getmetatable, tostring, type, pairs, ipairs, pcall, error =
    setmetatable, getmetatable, tostring, type, pairs, ipairs, pcall, error
local concat = table.concat

local M = {}

--- The kinds, with whether a later attempt may succeed (`wolkvox.call.retry`
-- decides when to try again; this is what each failure is).
M.kinds = {
    transport   = true,   -- connect, dns, timeout, reset, partial... (see `classify`)
    http        = true,   -- an unexpected HTTP status (see `classify`)
    decode      = true,   -- a 2xx answer that is not JSON
    too_large   = false,  -- the answer passed the size cap
    auth        = false,  -- missing, malformed or rejected token
    quota       = false,  -- daily call budget used up (403 TOKEN LIMIT EXCEEDED)
    concurrency = true,   -- more than 2 calls in flight (403 SIMULTANEOUS REQUESTS)
    maintenance = true,   -- any other 403: maintenance or backup window
    params      = false,  -- a request that a rule forbids; nothing was sent
    not_found   = false,  -- unknown endpoint, or not enabled on this server
    truncated   = false,  -- a window still at the row cap at its minimum span
    closed      = false,  -- the client was closed
    output      = false,  -- writing the rows out failed (a full disk, a closed pipe)
    busy        = false,  -- another run holds this checkpoint or sync state now; nothing was sent
    state       = true,   -- the fleet's shared state (Redis) cannot be reached; nothing was sent
}

--- Why a transfer failed (`result.error.reason` of a transport), and
-- whether another attempt may pass (`true`) or never will (`false`).
M.reasons = {
    connect = true,   -- the connection could not be made
    dns = true,       -- the host name did not resolve
    timeout = true,   -- no answer in time
    reset = true,     -- the connection broke
    partial = true,   -- the answer ended early
    protocol = true,  -- the server broke HTTP (a huge header, a bad chunk, bad gzip)
    other = true,     -- anything else the transport saw
    tls = false,      -- the certificate or the handshake failed
    url = false,      -- the URL cannot be used
    memory = false,   -- the answer does not fit in memory
    size = false,     -- the answer is larger than max_bytes (kind too_large)
    phase = false,    -- inside nginx, a phase without cosockets
    closed = false,   -- the client was closed during the call (kind closed)
    spool = false,    -- the answer could not be written to the spool directory (a full disk)
}

--- What a failed HTTP status (or an error code inside a 200 envelope) is:
-- by status, the kind, or a list of `{ text, kind }` tried in order against
-- the message in upper case, then `[0]` when none matches.  wolkvox sends
-- every 403 with one code: only its message tells them apart.  Any status
-- not here is `http`; "empty" is not an error (a 404 "Validate dates
-- entered" is a window without rows).
M.statuses = {
    [400] = { { "DOES NOT EXIST", "not_found" }, [0] = "params" },
    [401] = "auth",
    [403] = { { "TOKEN LIMIT", "quota" }, { "SIMULTANEOUS", "concurrency" }, { "TOKEN", "auth" },
        [0] = "maintenance" },
    [404] = { { "VALIDATE DATES", "empty" }, [0] = "not_found" },
    [406] = "params",
    [409] = "params",
    [422] = "params",
}

--- How long the waits of a kind are, beside the common backoff
-- (`wolkvox.call.retry.wait` reads them): a concurrency 403 backs off by
-- whole seconds from `min` (the calls that hold the token's two places must
-- end first); a maintenance window starts `factor` times higher and may wait
-- `cap_factor` times the cap.
M.waits = {
    concurrency = { min = 1 },
    maintenance = { factor = 10, cap_factor = 2 },
}

--- The kind of a failed `status` whose message (upper case) is `text`
-- (`statuses`): "empty" for a window without rows.
function M.kind_of(status, text)
    local rule = M.statuses[status]
    if type(rule) ~= "table" then
        return rule or "http"
    end
    for _, pair in ipairs(rule) do
        if text:find(pair[1], 1, true) then
            return pair[2]
        end
    end
    return rule[0]
end

--- Whether an error of `kind` with these `fields` (`reason`, `status`) may
-- pass on a later attempt: transport failures but those of `tls`, `url`,
-- `memory`, `phase`, ... (`reasons`); HTTP 5xx, 408 and 429.
function M.classify(kind, fields)
    if kind == "transport" and fields.reason then
        return M.reasons[fields.reason] ~= false
    end
    if kind == "http" and fields.status then
        local s = fields.status
        return s >= 500 or s == 408 or s == 429
    end
    return M.kinds[kind]
end

local Error = {}
Error.__index = Error

local function describe(e)
    local head = "wolkvox " .. e.kind
    if e.reason then
        head = head .. " (" .. e.reason .. ")"
    end
    head = head .. " error"
    if e.endpoint then
        head = head .. " on " .. e.endpoint
    end
    local tail = {}
    if e.status and e.status ~= 0 then
        tail[#tail + 1] = "HTTP " .. e.status
    end
    if e.code and e.code ~= e.status then
        tail[#tail + 1] = "code " .. tostring(e.code)
    end
    if e.attempts and e.attempts > 1 then
        tail[#tail + 1] = e.attempts .. " attempts"
    end
    local s = head .. ": " .. tostring(e.message or "no message")
    if #tail > 0 then
        s = s .. " (" .. concat(tail, ", ") .. ")"
    end
    return s
end

Error.__tostring = describe

--- Server text in a message is cut at this many bytes.
M.SNIPPET = 300
--- No message is longer than this (a last defence; our own messages that
-- list accepted names stay well below it).
M.MAX_MESSAGE = 1000

--- `s` cut to at most `cap` bytes (default `SNIPPET`), never inside a UTF-8
-- character, with "... (N more bytes)" when it was cut.
function M.snippet(s, cap)
    cap = cap or M.SNIPPET
    if type(s) ~= "string" or #s <= cap then
        return s
    end
    local cut = cap
    -- Back off over continuation bytes (10xxxxxx) so the cut falls between characters.
    while cut > 0 and s:byte(cut + 1) >= 128 and s:byte(cut + 1) < 192 do
        cut = cut - 1
    end
    return s:sub(1, cut) .. "... (" .. (#s - cut) .. " more bytes)"
end

--- Make an error.
-- @tparam string kind one of `kinds`
-- @tparam table fields `message`, `endpoint`, `status`, `code`, `reason`, ...
-- @treturn table the error
function M.new(kind, fields)
    if M.kinds[kind] == nil then
        error("unknown error kind '" .. tostring(kind) .. "'", 2)
    end
    local e = {}
    if fields then
        for k, v in pairs(fields) do
            e[k] = v
        end
    end
    e.kind = kind
    if type(e.message) == "string" and #e.message > M.MAX_MESSAGE then
        e.message = M.snippet(e.message, M.MAX_MESSAGE)
    end
    if e.retryable == nil then
        e.retryable = M.classify(kind, e)
    end
    return setmetatable(e, Error)
end

--- True when `v` is an error made by this module.
function M.is(v)
    return type(v) == "table" and getmetatable(v) == Error
end

-- Internal code may raise an error table; the public boundary turns it back
-- into `nil, err` with `protect`, and lets real bugs through (LuaSocket's idea).

--- Raise `err` again when it is the standalone interpreter's answer to
-- Ctrl-C ("interrupted!", raised by a hook at whatever call comes next, a
-- driver's C function inside a pcall included): code that turns a failed
-- call into its own error must let that one through, or the command would
-- exit 1 instead of 130 and, worse, the interrupt would be taken for a
-- failure of the call.
function M.pass_interrupt(err)
    if type(err) == "string" and err:find("interrupted!", 1, true) then
        error(err, 0)
    end
end

local function passed(ok, ...)
    if not ok then
        M.pass_interrupt((...))
    end
    return ok, ...
end

--- `pcall(f, ...)` that lets the interpreter's interrupt through (see
-- `pass_interrupt`): for failures a caller turns into its own error or
-- ignores.
function M.try(f, ...)
    return passed(pcall(f, ...))
end

--- Raise an error of `kind` (for internal use; see `protect`).
function M.throw(kind, fields)
    error(M.new(kind, fields), 0)
end

--- Raise a `params` error about endpoint `e` (before anything is sent).
function M.refuse(e, message)
    M.throw("params", { endpoint = e.name, message = message })
end

--- Wrap `f` so that a raised wolkvox error comes back as `nil, err`.
-- Any other error (a bug) is re-raised unchanged.
function M.protect(f)
    local function finish(ok, ...)
        if ok then
            return ...
        end
        local err = ...
        if M.is(err) then
            return nil, err
        end
        error(err, 0)
    end
    return function(...)
        return finish(pcall(f, ...))
    end
end

return M
