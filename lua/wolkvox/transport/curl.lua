--- The libcurl transport: a `wolkvox.core` session.
-- A transport is any object with `request(req)`, `start(req)`, `wait()`,
-- `inflight()`, `capacity()`, `stats()` and `close()`, where `req` is
-- `{ method, url, body, content_type, parts, headers }` and a result is
-- `{ status, value, bytes, time, connects, retry_after, decode_error,
-- snippet, error = { kind, reason, message, sent } }`.  The session is
-- exactly that object, so this module only builds it.
-- @module wolkvox.transport.curl

local core = require "wolkvox.core"

local M = {}

M.USER_AGENT = "lua-wolkvox/" .. core._VERSION:match("[%d%.]+$") .. " " .. core.curl_version:match("^%S+")

--- The clock this transport waits with: `now()` (monotonic), `time()`
-- (epoch, with fractions), `sleep(seconds)` (blocks the thread).
M.clock = { now = core.now, time = core.time, sleep = core.sleep }

--- Open a session for `opts` (checked by wolkvox.options) and `token`.
function M.new(opts, token)
    return core.session {
        token = token,
        timeout = opts.timeout,
        connect_timeout = opts.connect_timeout,
        max_bytes = opts.max_bytes,
        max_conns = opts.max_concurrent,
        user_agent = opts.user_agent or M.USER_AGENT,
        cainfo = opts.cainfo,
        capath = opts.capath,
        proxy = opts.proxy,
        verify = opts.verify,
    }
end

return M
