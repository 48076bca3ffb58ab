--- The OpenResty transport: HTTP/1.1 over nginx cosockets, so a call never
-- blocks the worker (a libcurl call would freeze every request of it).
-- Chosen by `wolkvox.new` inside nginx.  It gives the results the C session
-- gives (see `wolkvox.transport.curl`): keep-alive pool per server, TLS with
-- verification (`lua_ssl_trusted_certificate`), gzip, chunked bodies, the
-- size cap, timeouts, the same error reasons.  Calls in flight run as light
-- threads (`ngx.thread`) of the request that makes them.
-- @module wolkvox.transport.ngx


local pcall, type, tostring, tonumber, pairs, setmetatable, concat, format, lower, min, unpack =
    pcall, type, tostring, tonumber, pairs, setmetatable, table.concat, string.format, string.lower,
    math.min, unpack or table.unpack

local M = {}

--- Phases where cosockets work (lua-nginx-module's list).
M.PHASES = { rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
    ssl_session_fetch = true, ssl_client_hello = true }

local KEEPALIVE_MS, POOL_SIZE = 60000, 8

--- True when running inside nginx with the Lua module.
function M.available()
    return type(ngx) == "table" and type(ngx.get_phase) == "function" and ngx.socket ~= nil
end

-- JSON: the C decoder when its 5.1-ABI build is installed, else lua-cjson
-- (then null members are dropped, as the C decoder does).
local decode
do
    local ok, core = pcall(require, "wolkvox.core")
    if ok then
        decode = core.decode
        M.decoder = "wolkvox.core"
    else
        M.decoder = "cjson"
        local cjson = require("cjson.safe").new()
        local null = cjson.null
        local function strip(v)
            if type(v) == "table" then
                for k, x in pairs(v) do
                    if x == null and type(k) == "string" then
                        v[k] = nil
                    else
                        strip(x)
                    end
                end
            end
            return v
        end
        decode = function(s)
            local v, err = cjson.decode(s)
            if v == nil then
                return nil, err
            end
            return strip(v)
        end
    end
end

--- The clock: `now` and `time` (seconds, refreshed), `sleep` (yields).
M.clock = {
    now = function()
        ngx.update_time()
        return ngx.now()
    end,
    sleep = function(s)
        ngx.sleep(s)
    end,
}
M.clock.time = M.clock.now

local function printable(s)
    return (s:sub(1, 200):gsub("[^\32-\126]", " "))
end

local function parse_url(url)
    local scheme, authority, path = url:match("^(https?)://([^/]+)(.*)$")
    if not scheme then
        return nil
    end
    local host, port = authority:match("^%[(.+)%]:?(%d*)$")
    if not host then
        host, port = authority:match("^([^:]+):?(%d*)$")
    end
    port = tonumber(port) or (scheme == "https" and 443 or 80)
    return scheme, host, port, path ~= "" and path or "/", authority
end

local function reason_of(err)
    local e = lower(tostring(err))
    if e:find("timeout", 1, true) then
        return "timeout"
    elseif e:find("resolve", 1, true) or e:find("resolver", 1, true) then
        return "dns"
    elseif e:find("refused", 1, true) or e:find("unreachable", 1, true) then
        return "connect"
    elseif e:find("closed", 1, true) or e:find("reset", 1, true) or e:find("broken pipe", 1, true) then
        return "reset"
    end
    return "other"
end

local function multipart(parts)
    local boundary = format("wolkvox-%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
    local out = {}
    for _, p in ipairs(parts) do
        local data = p.data
        if p.path then
            local f = io.open(p.path, "rb")
            if not f then
                return nil, "cannot read file " .. p.path
            end
            data = f:read("*a")
            f:close()
        end
        out[#out + 1] = "--" .. boundary .. "\r\n"
        local disp = 'Content-Disposition: form-data; name="' .. p.name .. '"'
        if p.filename then
            disp = disp .. '; filename="' .. p.filename .. '"'
        end
        out[#out + 1] = disp .. "\r\n"
        if p.content_type or p.filename then
            out[#out + 1] = "Content-Type: " .. (p.content_type or "application/octet-stream") .. "\r\n"
        end
        out[#out + 1] = "\r\n" .. data .. "\r\n"
    end
    out[#out + 1] = "--" .. boundary .. "--\r\n"
    return concat(out), "multipart/form-data; boundary=" .. boundary
end

-- ---- one exchange ------------------------------------------------------------

local Transport = {}
Transport.__index = Transport

-- Read the body: Content-Length, chunked, or to the end; nil, reason on failure.
local function read_body(sock, h, cap)
    local te = h["transfer-encoding"]
    if te and lower(te):find("chunked", 1, true) then
        local parts, total = {}, 0
        while true do
            local line, err = sock:receive("*l")
            if not line then
                return nil, err == "timeout" and "timeout" or "partial", err
            end
            local size = tonumber(line:match("^%x+"), 16)
            if not size then
                return nil, "protocol", "bad chunk size"
            end
            if size == 0 then
                repeat
                    line = sock:receive("*l") -- trailers up to the empty line
                until not line or line == ""
                return concat(parts)
            end
            total = total + size
            if total > cap then
                return nil, "too_large"
            end
            local piece
            piece, err = sock:receive(size)
            if not piece then
                return nil, err == "timeout" and "timeout" or "partial", err
            end
            parts[#parts + 1] = piece
            sock:receive("*l")
        end
    end
    local n = tonumber(h["content-length"])
    if n then
        if n > cap then
            return nil, "too_large"
        end
        if n == 0 then
            return ""
        end
        local body, err, partial = sock:receive(n)
        if not body then
            return nil, err == "timeout" and "timeout" or "partial", err, partial
        end
        return body
    end
    local body, err = sock:receive("*a")
    if not body then
        return nil, err == "timeout" and "timeout" or "partial", err
    end
    if #body > cap then
        return nil, "too_large"
    end
    return body
end

-- One request on one connection: returns the result table, and whether it
-- may be sent again on a new connection (a reused one died before answering).
function Transport:exchange(req, head_of, res, t0)
    local scheme, host, port, path, authority = parse_url(req.url)
    if not scheme then
        res.error = { kind = "transport", reason = "url", message = "bad URL", sent = false }
        return res
    end
    local limit_ms = req.timeout and min(self.timeout_ms, req.timeout * 1000) or self.timeout_ms
    local remaining = function()
        return math.max(1, limit_ms - (M.clock.now() - t0) * 1000)
    end
    local sock = ngx.socket.tcp()
    sock:settimeouts(min(self.connect_ms, remaining()), remaining(), remaining())
    local pool = format("wolkvox:%s:%d:%s", host, port, scheme)
    if req.fresh then
        self.fresh_seq = self.fresh_seq + 1
        pool = pool .. ":fresh" .. self.fresh_seq -- never shared, never reused
    end
    local ok, err = sock:connect(host, port, { pool = pool })
    if not ok then
        res.error = { kind = "transport", reason = reason_of(err), message = "connect: " .. tostring(err),
            sent = false }
        return res
    end
    local reused = (sock:getreusedtimes() or 0) > 0
    if not reused then
        res.connects = res.connects + 1
        self.connects = self.connects + 1
        if scheme == "https" then
            local sess
            sess, err = sock:sslhandshake(nil, host, self.verify)
            if not sess then
                sock:close()
                res.error = { kind = "transport", reason = reason_of(err) == "timeout" and "timeout" or "tls",
                    message = "TLS: " .. tostring(err), sent = false }
                return res
            end
        end
    end
    local body, ctype = req.body, req.content_type
    if req.parts then
        body, ctype = multipart(req.parts)
        if not body then
            res.error = { kind = "transport", reason = "other", message = ctype, sent = false }
            return res
        end
    end
    local lines = { (req.method or "GET") .. " " .. path .. " HTTP/1.1", "Host: " .. authority,
        head_of(), "Accept: application/json", "Accept-Encoding: gzip, deflate",
        "User-Agent: " .. self.user_agent }
    for _, hline in ipairs(req.headers or {}) do
        lines[#lines + 1] = hline
    end
    if body or req.method ~= "GET" then
        body = body or ""
        lines[#lines + 1] = "Content-Type: " .. (ctype or "application/json")
        lines[#lines + 1] = "Content-Length: " .. #body
    end
    if req.fresh then
        lines[#lines + 1] = "Connection: close"
    end
    local bytes
    bytes, err = sock:send(concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
    res.sends = res.sends + 1
    if not bytes then
        sock:close()
        res.error = { kind = "transport", reason = reason_of(err), message = "send: " .. tostring(err),
            sent = true }
        return res, reused
    end
    local status_line
    sock:settimeout(remaining())
    status_line, err = sock:receive("*l")
    if not status_line then
        sock:close()
        res.error = { kind = "transport", reason = err == "timeout" and "timeout" or "reset",
            message = "no answer: " .. tostring(err), sent = true }
        return res, reused and err ~= "timeout"
    end
    local version, status = status_line:match("^HTTP/(%d%.%d) (%d%d%d)")
    if not status then
        sock:close()
        res.error = { kind = "transport", reason = "protocol", message = "not an HTTP answer", sent = true }
        return res
    end
    res.status = tonumber(status)
    local h = {}
    while true do
        local line
        line, err = sock:receive("*l")
        if not line then
            sock:close()
            res.error = { kind = "transport", reason = err == "timeout" and "timeout" or "partial",
                message = "headers cut short: " .. tostring(err), sent = true }
            return res
        end
        if line == "" then
            break
        end
        local name, value = line:match("^([^:]+):%s*(.-)%s*$")
        if name then
            h[lower(name)] = value
        end
    end
    res.content_type, res.retry_after = h["content-type"], h["retry-after"]
    sock:settimeout(remaining())
    local raw, why, detail = read_body(sock, h, self.max_bytes)
    if not raw then
        sock:close()
        if why == "too_large" then
            res.error = { kind = "too_large", reason = "size", sent = true,
                message = format("answer larger than the %d-byte limit", self.max_bytes) }
        else
            res.error = { kind = "transport", reason = why, sent = true,
                message = "body: " .. tostring(detail or why) }
        end
        return res
    end
    res.wire_bytes = #raw
    local keep = version == "1.1" and lower(h.connection or "") ~= "close" and not req.fresh
    if keep then
        sock:setkeepalive(KEEPALIVE_MS, POOL_SIZE)
    else
        sock:close()
    end
    local enc = lower(h["content-encoding"] or "")
    if enc == "gzip" or enc == "deflate" then
        local text, zerr = require("wolkvox.inflate").inflate(raw, self.max_bytes)
        if not text then
            if zerr == "too_large" then
                res.error = { kind = "too_large", reason = "size", sent = true,
                    message = format("answer larger than the %d-byte limit", self.max_bytes) }
            else
                res.error = { kind = "transport", reason = "protocol", sent = true, message = zerr }
            end
            return res
        end
        raw = text
    end
    res.bytes = #raw
    self.bytes = self.bytes + #raw
    if req.decode == false then
        res.body = raw
    elseif #raw > 0 then
        local v, derr = decode(raw)
        if v == nil then
            res.decode_error, res.snippet = tostring(derr), printable(raw)
        else
            res.value = v
        end
    end
    return res
end

-- A whole request: an exchange, and one more on a new connection when a
-- kept-alive one turned out dead before any answer (as libcurl does).
function Transport:perform(req, head_of)
    local t0 = M.clock.now()
    local res = { status = 0, bytes = 0, wire_bytes = 0, connects = 0, sends = 0 }
    local _, again = self:exchange(req, head_of, res, t0)
    if again then
        res.error = nil
        self:exchange(req, head_of, res, t0)
    end
    res.time = M.clock.now() - t0
    self.requests = self.requests + 1
    return res
end

-- ---- batches: the calls of one operation ----------------------------------------

local Batch = {}
Batch.__index = Batch

--- Start `req` as a light thread of the current request.
function Batch:start(req)
    local t = self.transport
    if t.closed_flag then
        error("session is closed", 0)
    end
    self.seq = self.seq + 1
    local id = self.seq
    local th, err = ngx.thread.spawn(function()
        local ok, res = pcall(t.perform, t, req, t.head_of)
        if not ok then
            res = { status = 0, bytes = 0, connects = 0, sends = 1,
                error = { kind = "transport", reason = "other", message = tostring(res), sent = true } }
        end
        return id, res
    end)
    if not th then
        error("cannot start a light thread: " .. tostring(err), 0)
    end
    self.threads[id] = th
    self.n = self.n + 1
    return id
end

--- Wait for one started request; its id and result (nil when none).
function Batch:wait()
    if self.n == 0 then
        return nil
    end
    local list = {}
    for _, th in pairs(self.threads) do
        list[#list + 1] = th
    end
    local ok, id, res = ngx.thread.wait(unpack(list))
    if not ok then
        error("a light thread failed: " .. tostring(id), 0)
    end
    self.threads[id] = nil
    self.n = self.n - 1
    return id, res
end

--- Abort what is in flight; returns the count and the sends it may have cost.
function Batch:cancel()
    local n = 0
    for id, th in pairs(self.threads) do
        ngx.thread.kill(th)
        self.threads[id] = nil
        n = n + 1
    end
    self.n = 0
    return n, n
end

function Batch:inflight()
    return self.n
end

-- ---- the transport -------------------------------------------------------------

--- A batch for one operation (calls in flight belong to the request that
-- runs them, so two requests of a worker never mix their answers).
function Transport:batch()
    return setmetatable({ transport = self, threads = {}, n = 0, seq = 0 }, Batch)
end

function Transport:stats()
    return { requests = self.requests, connects = self.connects, bytes = self.bytes, inflight = 0 }
end

function Transport:capacity()
    return self.closed_flag and 0 or 2
end

function Transport:close()
    self.closed_flag = true
end

function Transport:closed()
    return self.closed_flag == true
end

function Transport:token_id()
    return self.id
end

--- Why a call cannot be made here and now, or nil: cosockets exist only in
-- some phases of nginx.
function Transport:unusable() -- luacheck: ignore 212 (a method like the others)
    local phase = ngx.get_phase()
    if not M.PHASES[phase] then
        return "calls need nginx cosockets, which the " .. phase .. " phase does not have; "
            .. "make the call from a rewrite, access or content handler, or from a timer: "
            .. "ngx.timer.at(0, function() ... end)"
    end
end

Transport.__tostring = function(self)
    return "wolkvox.transport.ngx (" .. (self.closed_flag and "closed" or "open") .. ")"
end

--- 32 hex digits of SHA-1 of `s` (names that do not reveal what they name).
function M.fingerprint(s)
    return (ngx.sha1_bin(s):gsub(".", function(c) return format("%02x", c:byte()) end)):sub(1, 32)
end

--- A transport for `opts` and `token`.  The token stays in a closure: no
-- table field, log, hook or tostring reaches it.
function M.new(opts, token)
    local line = "wolkvox-token: " .. token
    local id = M.fingerprint("wolkvox-token:" .. token)
    token = nil -- luacheck: ignore 311
    return setmetatable({
        head_of = function() return line end,
        id = id,
        timeout_ms = (opts.timeout or 60) * 1000,
        connect_ms = (opts.connect_timeout or 10) * 1000,
        max_bytes = opts.max_bytes or 256 * 1024 * 1024,
        verify = opts.verify ~= false,
        user_agent = opts.user_agent or "lua-wolkvox/0.1.0 ngx_lua",
        requests = 0, connects = 0, bytes = 0, fresh_seq = 0,
    }, Transport)
end

return M
