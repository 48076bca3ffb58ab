--- The OpenResty transport: HTTP/1.1 over nginx cosockets, so a call never
-- blocks the worker (a libcurl call would freeze every request of it).
-- Chosen by `wolkvox.new` inside nginx.  It gives the results the C session
-- gives (see `wolkvox.transport.curl`): keep-alive pool per server, TLS with
-- verification (`lua_ssl_trusted_certificate`), gzip, chunked bodies, the
-- size cap, timeouts, the same error reasons.  Calls in flight run as light
-- threads (`ngx.thread`) of the request that makes them.
-- See `wolkvox.transport` for the contract.
-- @module wolkvox.transport.ngx

local transport = require "wolkvox.transport"


local pcall, type, tostring, tonumber, pairs, setmetatable, concat, format, lower, rep, min, unpack =
    pcall, type, tostring, tonumber, pairs, setmetatable, table.concat, string.format, string.lower,
    string.rep, math.min, unpack or table.unpack

local M = {}

--- Phases where cosockets work (lua-nginx-module's list).
M.PHASES = { rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
    ssl_session_fetch = true, ssl_client_hello = true }

local KEEPALIVE_MS, POOL_SIZE = 60000, 8

--- True when running inside nginx with the Lua module.
function M.available()
    return type(ngx) == "table" and type(ngx.get_phase) == "function" and ngx.socket ~= nil
end

-- Every occurrence of `secret` in `s` replaced by as many '*' (plain find,
-- not a pattern).
local function mask(s, secret)
    if secret == nil or secret == "" or not s:find(secret, 1, true) then
        return s
    end
    local out, i, stars = {}, 1, rep("*", #secret)
    while true do
        local a, b = s:find(secret, i, true)
        if not a then
            break
        end
        out[#out + 1] = s:sub(i, a - 1)
        out[#out + 1] = stars
        i = b + 1
    end
    out[#out + 1] = s:sub(i)
    return concat(out)
end
M.mask = mask

-- JSON: the C decoder when its 5.1-ABI build is installed, else lua-cjson
-- (then null members are dropped, as the C decoder does).  decode(text,
-- secret) masks `secret` in every decoded string, keys and values alike:
-- the C decoder does it itself, the lua-cjson one by walking the result.
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
        local function clean(v, secret)
            if type(v) ~= "table" then
                return v
            end
            local renamed
            for k, x in pairs(v) do
                if x == null and type(k) == "string" then
                    v[k] = nil
                else
                    if type(x) == "string" then
                        v[k] = mask(x, secret)
                    else
                        clean(x, secret)
                    end
                    if type(k) == "string" and secret and k:find(secret, 1, true) then
                        renamed = renamed or {}
                        renamed[k] = true
                    end
                end
            end
            for k in pairs(renamed or {}) do
                local x = v[k]
                v[k] = nil
                v[mask(k, secret)] = x
            end
            return v
        end
        decode = function(s, secret)
            local v, err = cjson.decode(s)
            if v == nil then
                return nil, err
            end
            if secret == "" then
                secret = nil
            end
            if type(v) == "string" then
                return mask(v, secret)
            end
            return clean(v, secret)
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

-- Parts reach the wire inside quoted header values: no quote and no
-- control character may end the value early or start a header of its own.
local function bad_text(v)
    return type(v) == "string" and v:find('[%c"\127]') ~= nil
end

-- Raise (a programming error, as the C session does) for a request that
-- cannot be sent as given.
local function check_request(req)
    if req.content_type ~= nil and (type(req.content_type) ~= "string" or req.content_type:find("[%c\127]")) then
        error("bad field 'content_type' (control characters are not allowed)", 0)
    end
    for i, line in ipairs(req.headers or {}) do
        if type(line) ~= "string" or line:find("[\r\n%z]") then
            error(format("bad header #%d (control characters are not allowed)", i), 0)
        end
    end
    if req.parts ~= nil then
        if type(req.parts) ~= "table" or req.parts[1] == nil then
            error("bad field 'parts' (non-empty list expected)", 0)
        end
        for i, p in ipairs(req.parts) do
            if type(p) ~= "table" or type(p.name) ~= "string" or bad_text(p.name) or bad_text(p.filename)
                or bad_text(p.content_type) then
                error(format("bad part #%d (control characters or quotes in name, filename or content_type)", i),
                    0)
            end
        end
    end
end
M.check_request = check_request

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

-- Limits on what the server may send before the body (libcurl's: 100 KiB a
-- header line, 300 KiB in all), and on a chunk-size line.
local MAX_LINE, MAX_HEAD, MAX_CHUNK_LINE = 100 * 1024, 300 * 1024, 1024

-- One line (ended by LF, a CR before it dropped) of at most `limit` bytes,
-- read in pieces so a longer one never sits in memory: the line; or nil,
-- "too long"; or nil, the socket's error and the bytes read before it.
local function read_line(sock, limit)
    local it = sock:receiveuntil("\n")
    local parts, n = {}, 0
    while true do
        local data, err, partial = it(4096)
        if not data then
            if err then
                return nil, err, n + #(partial or "")
            end
            break
        end
        n = n + #data
        if n > limit then
            return nil, "too long"
        end
        parts[#parts + 1] = data
    end
    local line = concat(parts)
    if line:sub(-1) == "\r" then
        line = line:sub(1, -2)
    end
    return line
end

local function cut_reason(err)
    if err == "too long" then
        return "protocol"
    end
    return err == "timeout" and "timeout" or "partial"
end

-- The body, sent chunked: the size cap checked before each chunk is read.
local function read_chunked(sock, cap)
    local parts, total = {}, 0
    while true do
        local line, err = read_line(sock, MAX_CHUNK_LINE)
        if not line then
            return nil, cut_reason(err), err == "too long" and "chunk-size line too long" or err
        end
        local hex = line:match("^(%x+)[ \t]*$") or line:match("^(%x+)[ \t]*;")
        if not hex or #hex > 15 then
            return nil, "protocol", "bad chunk size"
        end
        local size = tonumber(hex, 16)
        if size == 0 then
            local seen = 0
            repeat -- trailers, up to the empty line
                line, err = read_line(sock, MAX_LINE)
                if not line then
                    if err == "too long" then
                        return nil, "protocol", "trailer line too long"
                    end
                    break -- the body itself is whole
                end
                seen = seen + #line
                if seen > MAX_HEAD then
                    return nil, "protocol", "trailers too long"
                end
            until line == ""
            return concat(parts)
        end
        total = total + size
        if total > cap then
            return nil, "too_large"
        end
        local piece
        piece, err = sock:receive(size)
        if not piece then
            return nil, cut_reason(err), err
        end
        parts[#parts + 1] = piece
        local crlf
        crlf, err = sock:receive(2)
        if not crlf then
            return nil, cut_reason(err), err
        end
        if crlf ~= "\r\n" then
            return nil, "protocol", "chunk data not followed by CRLF"
        end
    end
end

-- The body up to the end of the connection, the cap checked as it grows.
local function read_to_close(sock, cap)
    local parts, total = {}, 0
    while true do
        local data, err = sock:receiveany(65536)
        if not data then
            if err == "closed" then
                return concat(parts)
            end
            return nil, cut_reason(err), err
        end
        total = total + #data
        if total > cap then
            return nil, "too_large"
        end
        parts[#parts + 1] = data
    end
end

-- Read the body: Content-Length, chunked, or to the end; nil, reason on
-- failure.  The second result says whether the connection may be reused.
local function read_body(sock, h, cap, status, method)
    if method == "HEAD" or status == 204 or status == 304 or (status >= 100 and status < 200) then
        return "", true
    end
    local te = h["transfer-encoding"]
    if te and lower(te):find("chunked", 1, true) then
        local body, why, detail = read_chunked(sock, cap)
        if not body then
            return nil, why, detail
        end
        return body, true
    end
    local cl = h["content-length"]
    if cl and not te then
        local n = cl:match("^%d+$") and tonumber(cl)
        if not n then
            return nil, "protocol", "bad Content-Length"
        end
        if n > cap then
            return nil, "too_large"
        end
        if n == 0 then
            return "", true
        end
        local body, err, partial = sock:receive(n)
        if not body then
            return nil, cut_reason(err), err, partial
        end
        return body, true
    end
    local body, why, detail = read_to_close(sock, cap)
    if not body then
        return nil, why, detail
    end
    return body, false
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
        check_request(req)
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
    local status_line, got
    sock:settimeout(remaining())
    status_line, err, got = read_line(sock, MAX_LINE)
    if not status_line and err ~= "too long" and got == 0 then
        sock:close()
        res.error = { kind = "transport", reason = err == "timeout" and "timeout" or "reset",
            message = "no answer: " .. tostring(err), sent = true }
        return res, reused and err ~= "timeout"
    end
    local version, status = (status_line or ""):match("^HTTP/(%d%.%d) (%d%d%d)")
    if not status then
        sock:close()
        local reason = (status_line or err == "too long") and "protocol" or cut_reason(err)
        res.error = { kind = "transport", reason = reason, sent = true,
            message = status_line and "not an HTTP answer" or ("status line: " .. tostring(err)) }
        return res
    end
    res.status = tonumber(status)
    local h, head_bytes = {}, #status_line
    while true do
        local line
        line, err = read_line(sock, MAX_LINE)
        if line then
            head_bytes = head_bytes + #line + 2
        end
        if not line or head_bytes > MAX_HEAD then
            sock:close()
            if err == "too long" or line then
                res.error = { kind = "transport", reason = "protocol", sent = true,
                    message = format("header %s longer than %d bytes", line and "block" or "line",
                        line and MAX_HEAD or MAX_LINE) }
            else
                res.error = { kind = "transport", reason = err == "timeout" and "timeout" or "partial",
                    message = "headers cut short: " .. tostring(err), sent = true }
            end
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
    res.content_type, res.retry_after = self.mask(h["content-type"]), self.mask(h["retry-after"])
    sock:settimeout(remaining())
    -- On success `why` says whether the connection may be reused.
    local raw, why, detail = read_body(sock, h, self.max_bytes, res.status, req.method)
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
    local keep = why and version == "1.1" and lower(h.connection or "") ~= "close" and not req.fresh
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
        local v, derr = self.decode(raw)
        if v == nil then
            -- Masked whole before it is cut: a token across the edge leaves nothing.
            res.decode_error, res.snippet = self.mask(tostring(derr)), printable(self.mask(raw))
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
    check_request(req)
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

--- Where the pacer and the ledger keep what the workers share: the
-- `lua_shared_dict` named by `shared_dict` (default "wolkvox"), or nothing
-- when it is not declared (this worker only).
function M.state(o, t)
    local dict = ngx.shared[o.shared_dict or "wolkvox"]
    if not dict then
        return {}, {}
    end
    return { dict = dict, key = t:token_id(), ttl = o.timeout + 15 },
        { dict = dict, key = transport.fingerprint(o.base_url):sub(1, 16) }
end

--- The current request's own store for `owner` (in `ngx.ctx`): the
-- requests of a worker share a client, and one must never abort another's
-- calls.
function M.store(owner)
    local t = ngx.ctx.wolkvox_running
    if not t then
        t = setmetatable({}, { __mode = "k" })
        ngx.ctx.wolkvox_running = t
    end
    local r = t[owner]
    if not r then
        r = {}
        t[owner] = r
    end
    return r
end

local NGX_LEVEL = { debug = "DEBUG", info = "INFO", warn = "WARN" }

--- nginx's error log (`logger = "ngx"`, the default inside nginx).
function M.log(level, line)
    ngx.log(ngx[NGX_LEVEL[level] or "NOTICE"], "wolkvox: ", line)
end

--- A transport for `opts` and `token`.  The token stays in closures: no
-- table field, log, hook or tostring reaches it, and it is masked out of
-- whatever the server sends back (an error page that echoes it, a decoded
-- string, a snippet of a body that is not JSON).
function M.new(opts, token)
    local line = "wolkvox-token: " .. token
    local id = transport.fingerprint("wolkvox-token:" .. token)
    return setmetatable({
        head_of = function() return line end,
        mask = function(s)
            return s and mask(s, token)
        end,
        decode = function(text)
            return decode(text, token)
        end,
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
