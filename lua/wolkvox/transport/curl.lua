--- The libcurl transport: a `wolkvox.core` session behind the transport
-- interface.  `start(req)` gives an id, `wait()` the next finished id and its
-- result, `cancel()` aborts what is in flight; `request`, `inflight`,
-- `capacity`, `stats`, `token_id`, `close` and `closed` pass through.
-- A request is `{ method, url, body, content_type, parts, headers, timeout,
-- fresh, decode }`; a result is `{ status, value, bytes, wire_bytes, time,
-- connects, sends, retry_after, decode_error, snippet, error = { kind,
-- reason, message, curl_code, sent } }`.
-- @module wolkvox.transport.curl

local core = require "wolkvox.core"
local errors = require "wolkvox.errors"

local setmetatable, ipairs = setmetatable, ipairs

local M = {}

M.USER_AGENT = "lua-wolkvox/" .. core._VERSION:match("[%d%.]+$") .. " " .. core.curl_version:match("^%S+")

--- How long the C core waits before handing control back to Lua (seconds):
-- an interrupt (Ctrl-C in the standalone interpreter) or a hook runs only
-- in Lua code, so a wait is made of such slices.
M.SLICE = 0.1

--- The clock this transport waits with: `now()` (monotonic), `time()`
-- (epoch, with fractions), `sleep(seconds)` (blocks the thread).
M.clock = { now = core.now, time = core.time, sleep = core.sleep }

local Transport = {}
Transport.__index = Transport

for _, name in ipairs { "request", "cancel", "inflight", "capacity", "stats", "token_id", "close", "closed" } do
    Transport[name] = function(self, ...)
        local s = self.session
        return s[name](s, ...)
    end
end

--- Start a request; raises a `closed` error when the client was closed,
-- even by a finalizer while the request was being built.
function Transport:start(req)
    local id = self.session:start(req)
    if not id then
        errors.throw("closed", { message = "the client is closed" })
    end
    return id
end

--- The next finished request: its id and result (nil when none is in flight).
function Transport:wait()
    local s, slice = self.session, M.SLICE
    while true do
        local id, res = s:wait(slice)
        if id ~= false then
            return id, res
        end
    end
end

--- Open a session for `opts` (checked by wolkvox.options) and `token`.
function M.new(opts, token)
    return setmetatable({ session = core.session {
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
    } }, Transport)
end

return M
