--- The in-process transport: the fake wolkvox server's answers without a
-- socket, for unit tests of code that must not open ports.
--
--     local c = wolkvox.new { transport = "fake", server = "0031", token = "test-token",
--         fake = { rows_per_day = 10, faults = { { match = "cdr_1", status = 502 } } } }
--
-- `fake` is a table of the fake server's settings (see `wolkvox.fake.api`),
-- or a server made by `server(settings)`, which several clients may share
-- and a test may steer (`srv:control("faults", {...})`, `srv:log()`).
-- Every request goes to the fake's request handler as the HTTP server would
-- hand it over (method, path, query, headers with the token, body, a
-- multipart body built from `parts`), and its answer comes back as the
-- result the contract describes (`wolkvox.transport`): decoded with the C
-- core's decoder when it is there (the token masked), else lua-cjson.
--
-- A request is served when it starts, so two in flight hold two of the
-- token's slots until `wait()` hands them back.  A fault's `delay` (and the
-- `latency` setting) is waited with the clock when the answer is handed
-- back; past the request's timeout it is a `timeout` error.  `reset` and
-- `close` faults are `reset` errors, `cut` a `partial` one, an answer larger
-- than `max_bytes` `too_large`; a `gzip` fault serves the plain body (there
-- is no wire to compress).  With the setting `url` (a base URL), a request
-- for any other host fails as a refused connection; without it, every host
-- is the fake.
-- @module wolkvox.transport.fake

local api = require "wolkvox.fake.api"
local http = require "wolkvox.fake.http"
local errors = require "wolkvox.errors"
local transport = require "wolkvox.transport"
local ngx_http = require "wolkvox.transport.ngx_http"

local type, pairs, ipairs, tostring, setmetatable, getmetatable, format, lower, pcall =
    type, pairs, ipairs, tostring, setmetatable, getmetatable, string.format, string.lower, pcall

local M = {}

-- ---- clock and JSON -----------------------------------------------------------

local core
do
    local ok, mod = pcall(require, "wolkvox.core")
    core = ok and mod or nil
end

-- The clock (`M.clock`: now, time, sleep): the C core's when it is there,
-- else the fake's own (LuaSocket's).
if core then
    M.clock = { now = core.now, time = core.time, sleep = core.sleep }
else
    M.clock = { now = http.gettime, time = http.gettime, sleep = http.sleep }
end


-- JSON: the C core's decoder (it masks the token itself), else the fake's
-- lua-cjson one, whose strings (keys and values) are masked here.
local decode
if core then
    M.decoder = "wolkvox.core"
    decode = core.decode
else
    M.decoder = "cjson"
    decode = function(s, secret)
        local v, err = api.decode(s)
        if v == nil then
            return nil, err
        end
        return transport.mask_value(v, secret)
    end
end

local printable = transport.snippet

-- ---- the in-process server ----------------------------------------------------

-- The fake's loop, without sockets: a sleep is added to the answer's delay.
local Loop = {}
Loop.__index = Loop

function Loop:sleep(seconds)
    self.delay = self.delay + seconds
end

function Loop:stop() -- luacheck: ignore 212 (nothing runs: nothing to stop)
end

local Server = {}
Server.__index = Server

--- A fake server in this process: `settings` as the HTTP fake takes them
-- (`tokens`, `max_rows`, `rows_per_day`, `licenses`, `disabled`, `faults`,
-- ...; see docs/fake.md), plus `scenario` (a JSON file of settings, which
-- the others override) and `url` (serve only this base URL).  Raises on an
-- unknown setting or a scenario that cannot be read.
-- @return a server: `control(what, body)`, `log()`, `handle(req)`
function M.server(settings)
    settings = settings or {}
    local config = {}
    if settings.scenario then
        local sc, why = api.read_scenario(settings.scenario)
        if not sc then
            error(why, 2)
        end
        config = sc
    end
    for k, v in pairs(settings) do
        if k ~= "url" and k ~= "scenario" then
            config[k] = v
        end
    end
    local ok, why = api.check_scenario(config)
    if not ok then
        error("wolkvox.transport.fake: " .. why, 2)
    end
    local loop = setmetatable({ delay = 0 }, Loop)
    local state = api.new(config, loop)
    state.in_process = true
    return setmetatable({ state = state, loop = loop, url = settings.url, conns = 0, abandoned = {} }, Server)
end

--- Call a control endpoint as `/__fake/<what>` would: the decoded answer.
function Server:control(what, body)
    return self.state:call(what, body)
end

--- The request log since the last reset.
function Server:log()
    return self:control("log")
end

--- Serve a request table as the HTTP fake's handler gets it; the answer and
-- the delay the fake asked for.
function Server:handle(req)
    self:settle()
    self.conns = self.conns + 1
    self.loop.delay = 0
    local res = self.state:handler()(req, { id = self.conns, port = 0, peer = "127.0.0.1" })
    return res, self.loop.delay
end

-- Hand back the slots of abandoned calls whose answers are due.
function Server:settle()
    local now, keep = M.clock.now(), {}
    for _, item in ipairs(self.abandoned) do
        if item.ready <= now then
            item.after()
        else
            keep[#keep + 1] = item
        end
    end
    self.abandoned = keep
end

local function is_server(v)
    return type(v) == "table" and getmetatable(v) == Server
end
M.is_server = is_server

-- ---- the transport --------------------------------------------------------------

--- No state is shared with other processes: the pacer and the ledger keep
-- theirs in this process; with the `redis` option, Redis is shared as by
-- the curl transport.
function M.state(o, t)
    local p, q = {}, {}
    if o and o.redis then
        require("wolkvox.limits.redis").attach(o, t:token_id(), transport.fingerprint(o.base_url):sub(1, 16), p, q)
    end
    return p, q
end

--- The cache of lookup answers (`cache` option): the fake server's own,
-- shared by the clients of one server as a process's clients share theirs.
function M.cache(_, t)
    local srv = t.server
    srv.cache_store = srv.cache_store or transport.memory_cache(M.clock.now)
    return srv.cache_store
end

--- One call of a client at a time per process: the client is the store.
function M.store(owner)
    return owner
end

local Transport = {}
Transport.__index = Transport

local function header_value(headers, name)
    for _, h in ipairs(headers or {}) do
        local n, v = h:match("^([^:]+):%s*(.-)%s*$")
        if n and lower(n) == name then
            return v
        end
    end
end

-- The request as the HTTP fake's parser gives it.
local function server_request(self, req, head_line)
    local url = req.url
    if type(url) ~= "string" then
        error("bad field 'url' (string expected)", 0)
    end
    local method = req.method or "GET"
    local target = url:match("^https?://[^/]+(.*)$")
    local body, ctype = req.body, req.content_type
    if req.parts then
        body, ctype = ngx_http.multipart(req.parts)
        if not body then
            error(ctype, 0) -- a file that cannot be read
        end
    end
    local headers, names = {}, {}
    local function add(line)
        local n, v = line:match("^([^:]+):%s*(.-)%s*$")
        if n then
            n = lower(n)
            names[#names + 1] = n
            headers[n] = headers[n] and (headers[n] .. ", " .. v) or v
        end
    end
    add("Host: " .. (url:match("^https?://([^/]+)") or ""))
    add("User-Agent: " .. self.user_agent)
    add(head_line)
    for _, h in ipairs(req.headers or {}) do
        add(h)
    end
    if ctype and not headers["content-type"] then
        add("Content-Type: " .. ctype)
    end
    if body then
        add("Content-Length: " .. #body)
    end
    target = (target == nil or target == "") and "/" or target
    local path, query = target:match("^([^?]*)%??(.*)$")
    return {
        method = method, target = target, line = method .. " " .. target .. " HTTP/1.1", version = "1.1",
        path = path, query = query, params = http.parse_query(query),
        headers = headers, header_names = names, body = body or "",
    }
end

local function failure(reason, message, sent)
    return { kind = "transport", reason = reason, message = message, sent = sent }
end

-- The contract's result for the fake's answer `res`.
function Transport:result(req, res, delay)
    local out = { status = 0, bytes = 0, wire_bytes = 0, time = delay, connects = self.requests == 1 and 1 or 0,
        sends = 1 }
    local timeout = req.timeout or self.timeout
    if delay > timeout then
        out.time = timeout
        out.error = failure("timeout", format("no answer in %g seconds", timeout), true)
        return out
    end
    if res.reset or res.close then
        out.error = failure("reset", res.reset and "the connection was reset" or "the server closed the connection",
            true)
        return out
    end
    out.status = res.status or 200
    out.content_type = header_value(res.headers, "content-type")
    out.retry_after = header_value(res.headers, "retry-after")
    local body = res.body or ""
    if res.cut then
        out.error = failure("partial", "the answer ended early", true)
        out.wire_bytes = math.min(#body, res.cut)
        return out
    end
    if #body > self.max_bytes then
        out.error = transport.too_large(self.max_bytes)
        return out
    end
    out.bytes, out.wire_bytes = #body, #body
    self.bytes = self.bytes + #body
    if #body == 0 then
        return out
    end
    if req.decode == false then
        out.body = body
        return out
    end
    local v, err = self.decode(body)
    if v == nil then
        out.decode_error, out.snippet = self.mask(tostring(err)), printable(self.mask(body))
    else
        out.value = v
    end
    return out
end

--- Serve `req` now (it holds a slot of the token until `wait` hands it
-- back); its id.
function Transport:start(req)
    if self.closed_flag then
        errors.throw("closed", { message = "the client is closed" })
    end
    ngx_http.check_request(req)
    local id = self.seq + 1
    self.seq = id
    self.requests = self.requests + 1
    local srv = self.server
    local url = type(req.url) == "string" and req.url or ""
    local item = { id = id, req = req, ready = M.clock.now() }
    if srv.url and url:sub(1, #srv.url) ~= srv.url then
        item.result = { status = 0, bytes = 0, wire_bytes = 0, time = 0, connects = 0, sends = 0,
            error = failure("connect", "the in-process fake serves " .. srv.url .. " only", false) }
    elseif not url:match("^https?://[^/]+") then
        item.result = { status = 0, bytes = 0, wire_bytes = 0, time = 0, connects = 0, sends = 0,
            error = { kind = "transport", reason = "url", message = "the URL cannot be used", sent = false } }
    else
        local res, delay = srv:handle(server_request(self, req, self.head_line()))
        item.res, item.delay = res, delay
        item.ready = item.ready + math.min(delay, req.timeout or self.timeout)
    end
    self.pending[#self.pending + 1] = item
    return id
end

-- Hand a served answer's slot back to the fake.
local function release(item)
    local after = item.res and item.res.after
    if after then
        item.res.after = nil
        after()
    end
end

--- The next request that ended (the earliest due, after waiting for it):
-- its id and result; nil when none is in flight.
function Transport:wait()
    local pending = self.pending
    if #pending == 0 then
        return nil
    end
    local first = 1
    for i, item in ipairs(pending) do
        if item.ready < pending[first].ready then
            first = i
        end
    end
    local item = table.remove(pending, first)
    local left = item.ready - M.clock.now()
    if left > 0 then
        M.clock.sleep(left)
    end
    release(item)
    return item.id, item.result or self:result(item.req, item.res, item.delay)
end

--- Abort what is in flight: the count, and how often they went out.  As
-- at a real server, a call given up on keeps its slot of the token until
-- its answer would have been ready.
function Transport:cancel()
    local n, sends = #self.pending, 0
    local now, abandoned = M.clock.now(), self.server.abandoned
    for _, item in ipairs(self.pending) do
        if item.res then
            sends = sends + 1
            if item.ready > now and item.res.after then
                abandoned[#abandoned + 1] = { ready = item.ready, after = item.res.after }
                item.res.after = nil
            end
        end
        release(item)
    end
    self.pending = {}
    return n, sends
end

function Transport:inflight()
    return #self.pending
end

function Transport:capacity()
    return self.closed_flag and 0 or 2
end

function Transport:stats()
    return { requests = self.requests, connects = self.requests > 0 and 1 or 0, bytes = self.bytes,
        inflight = #self.pending }
end

function Transport:token_id()
    return self.id
end

function Transport:close()
    if not self.closed_flag then
        self:cancel()
        self.closed_flag = true
    end
end

function Transport:closed()
    return self.closed_flag == true
end

Transport.__tostring = function(self)
    return "wolkvox.transport.fake (" .. (self.closed_flag and "closed" or "open") .. ")"
end

M.USER_AGENT = "lua-wolkvox/" .. require("wolkvox.version") .. " in-process"

--- A transport for `opts` (`opts.fake`: the fake's settings or a server
-- from `server()`) and `token`, which stays in closures.
function M.new(opts, token)
    local srv = opts.fake
    if not is_server(srv) then
        srv = M.server(srv)
    end
    local line = "wolkvox-token: " .. token
    return setmetatable({
        server = srv,
        head_line = function() return line end,
        mask = function(s) return s and transport.mask(s, token) end,
        decode = function(text) return decode(text, token) end,
        id = transport.fingerprint("wolkvox-token:" .. token),
        timeout = opts.timeout or 60,
        max_bytes = opts.max_bytes or 256 * 1024 * 1024,
        user_agent = opts.user_agent or M.USER_AGENT,
        requests = 0, bytes = 0, seq = 0, pending = {},
    }, Transport)
end

return M
