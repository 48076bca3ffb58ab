--- The libcurl transport: a `wolkvox.core` session behind the transport
-- interface.  `start(req)` gives an id, `wait()` the next finished id and its
-- result, `cancel()` aborts what is in flight; `request`, `inflight`,
-- `capacity`, `stats`, `token_id`, `close` and `closed` pass through.
-- A request is `{ method, url, body, content_type, parts, headers, timeout,
-- fresh, decode }`; a result is `{ status, value, bytes, wire_bytes, time,
-- connects, sends, retry_after, decode_error, snippet, error = { kind,
-- reason, message, curl_code, sent } }`.
-- See `wolkvox.transport` for the contract.
-- @module wolkvox.transport.curl

local core = require "wolkvox.core"
local errors = require "wolkvox.errors"
local transport = require "wolkvox.transport"

local setmetatable, ipairs, tostring = setmetatable, ipairs, tostring

local M = {}

M.USER_AGENT = "lua-wolkvox/" .. require("wolkvox.version") .. " " .. core.curl_version:match("^%S+")

--- How long the C core waits before handing control back to Lua (seconds):
-- an interrupt (Ctrl-C in the standalone interpreter) or a hook runs only
-- in Lua code, so a wait is made of such slices.
M.SLICE = 0.1

--- Answers can go to disk as they arrive (a request's `spool`: a
-- directory): the result then has `rows` (their count, each row checked),
-- `streamed` and `spool` (a `wolkvox.spool` to read them back from).
M.spool = true

--- With a spool, a request's `csv` (`columns`, `time`, `cap`,
-- `keep_answer`) has the rows made into CSV lines as they arrive, checked as
-- the decoder checks them: the result's `lines` is a `wolkvox.spool` of
-- them, `lines_extra` says the first row had a member no column takes,
-- `times` lists the rows' `time` values when there are `cap` rows or more;
-- `spool` holds the answer too only with `keep_answer`.
M.spool_lines = true

--- The clock this transport waits with: `now()` (monotonic), `time()`
-- (epoch, with fractions), `sleep(seconds)` (blocks the thread).
M.clock = { now = core.now, time = core.time, sleep = core.sleep }

--- Where the pacer and the ledger keep what processes share: files under
-- `state_dir` (`tokens/<token id>/` for the slots, `operations/<server
-- id>/` for the day's count), or nothing (`state_dir = false`: this
-- process only); with the `redis` option, also Redis through the
-- `wolkvox.redis` C module (`wolkvox.limits.redis`).
function M.state(o, t)
    local p, q = {}, {}
    local op = transport.fingerprint(o.base_url):sub(1, 16)
    if o.state_dir then
        p.dir = o.state_dir .. "/tokens/" .. t:token_id()
        q.dir = o.state_dir .. "/operations/" .. op
        for _, dir in ipairs { p.dir, q.dir } do
            local ok, err = core.mkdir(dir)
            if not ok then
                errors.throw("params", { message = "cannot create the state directory " .. tostring(err)
                    .. " (set state_dir, or state_dir = false)" })
            end
        end
    end
    if o.redis then
        require("wolkvox.limits.redis").attach(o, t:token_id(), op, p, q)
    end
    return p, q
end

local memory
--- The cache of lookup answers (`cache` option): this process's memory,
-- shared by its clients (keys carry the token's fingerprint and the URL).
function M.cache()
    memory = memory or transport.memory_cache(M.clock.now)
    return memory
end

--- Outside nginx a process runs one call of a client at a time: the
-- client's own runtime is the store.
function M.store(owner)
    return owner
end

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
-- (The C core holds the collector while it waits: see session:wait.)
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
        gc_hold = opts.gc_hold,
    } }, Transport)
end

return M
