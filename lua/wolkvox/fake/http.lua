--- A minimal HTTP/1.1 server for the fake: keep-alive, Content-Length and
-- chunked request bodies, and the misbehaviours a test needs to provoke
-- (a reset, a connection closed without an answer, a body cut short).
-- @module wolkvox.fake.http

local concat, tonumber, lower, format = table.concat, tonumber, string.lower, string.format

local M = {}

M.REASONS = {
    [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
    [207] = "Multi-Status", [302] = "Found", [400] = "Bad Request", [401] = "Unauthorized",
    [403] = "Forbidden", [404] = "Not Found", [406] = "Not Acceptable", [413] = "Content Too Large",
    [422] = "Unprocessable Entity", [431] = "Request Header Fields Too Large", [500] = "Internal Server Error",
    [502] = "Bad Gateway", [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

local MAX_HEAD = 64 * 1024
local MAX_BODY = 64 * 1024 * 1024
-- How long a connection may wait for the next bytes of a request (or for
-- the peer to read an answer) before it is closed (`serve`'s `idle`).
M.IDLE_TIMEOUT = 60
-- Work a task does between two turns of the other tasks (seconds).
local FAIR = 0.02
-- After an error answer, how long (and how much) the rest of the request is
-- read and dropped before closing, so the peer can read the answer.
local LINGER, LINGER_BYTES = 2, 4 * 1024 * 1024

-- Buffered reads on a non-blocking socket inside a loop task: every wait
-- for bytes goes through the loop (other connections are served
-- meanwhile) and ends after `idle` seconds; a task that keeps finding bytes
-- ready gives the others a turn every FAIR seconds.  The buffer is read from
-- `pos` on, so taking a line never copies the rest.
local Reader = {}
Reader.__index = Reader

local function reader(loop, sock, idle)
    return setmetatable({ loop = loop, sock = sock, buf = "", pos = 1, eof = false, idle = idle or M.IDLE_TIMEOUT,
        ran = M.gettime() }, Reader)
end

-- True when nothing is buffered.
function Reader:empty()
    return self.pos > #self.buf
end

-- The next bytes from the socket (at most 64 KiB), or nil at the end of
-- input, after an error, or when `idle` seconds passed without any.
function Reader:receive()
    if self.eof then
        return nil
    end
    while true do
        local data, err, partial = self.sock:receive(65536)
        local got = data or partial
        if got and #got > 0 then
            local now = M.gettime()
            if now - self.ran >= FAIR then
                self.loop:pause()
                self.ran = M.gettime()
            end
            return got
        end
        if err ~= "timeout" or not self.loop:readable(self.sock, self.idle) then
            self.eof = true -- closed, failed, timed out or woken
            return nil
        end
        self.ran = M.gettime()
    end
end

-- Read more into the buffer; false at the end of input.
function Reader:fill()
    local got = self:receive()
    if not got then
        return false
    end
    if self.pos > #self.buf then
        self.buf, self.pos = got, 1
    else
        self.buf, self.pos = self.buf:sub(self.pos) .. got, 1
    end
    return true
end

-- Up to and without the next CRLF; nil at end of input, or nil and "too
-- long" past `limit` bytes.
function Reader:line(limit)
    local from = self.pos
    while true do
        local i = self.buf:find("\r\n", from, true)
        if i then
            local line = self.buf:sub(self.pos, i - 1)
            self.pos = i + 2
            return line
        end
        local unread = #self.buf - self.pos + 1
        if unread > limit then
            return nil, "too long"
        end
        if not self:fill() then
            return nil
        end
        from = math.max(1, unread) -- (fill keeps the unread bytes from 1 on)
    end
end

-- Exactly `n` bytes (or nil at end of input), gathered in pieces.
function Reader:bytes(n)
    local parts, got = {}, 0
    if not self:empty() then
        local have = #self.buf - self.pos + 1
        local take = math.min(have, n)
        parts[1] = self.buf:sub(self.pos, self.pos + take - 1)
        self.pos = self.pos + take
        got = take
    end
    while got < n do
        local data = self:receive()
        if not data then
            return nil
        end
        if got + #data > n then
            local keep = n - got
            self.buf, self.pos = data, keep + 1
            data = data:sub(1, keep)
        end
        parts[#parts + 1] = data
        got = got + #data
    end
    return concat(parts)
end

-- Read and drop what the peer still sends, for up to `seconds` and `limit`
-- bytes (after an error answer, before closing).
function Reader:drain(seconds, limit)
    local stop, n = M.gettime() + seconds, 0
    self.buf, self.pos = "", 1
    while n < limit do
        local left = stop - M.gettime()
        if left <= 0 then
            return
        end
        self.idle = left
        local got = self:receive()
        if not got then
            return
        end
        n = n + #got
    end
end

local function unescape(s)
    s = s:gsub("+", " ")
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Parse "a=1&b=2" into a table (the first value wins for repeated names).
function M.parse_query(q)
    local t = {}
    for pair in (q or ""):gmatch("[^&]+") do
        local k, v = pair:match("^([^=]*)=?(.*)$")
        k = unescape(k)
        if t[k] == nil then
            t[k] = unescape(v)
        end
    end
    return t
end

-- Read one request.  Returns the request; or nil at the end of input (or
-- after `idle` seconds without bytes); or nil, what is wrong and the
-- status to answer it with (400, 413, 431).
local function read_request(r)
    if r:empty() and not r:fill() then
        return nil
    end
    if not r.buf:match("^[%u\r\n]", r.pos) then
        return nil, "not HTTP", 400 -- e.g. a TLS hello sent to this plain port
    end
    local line, err = r:line(MAX_HEAD)
    while line == "" do -- tolerate stray CRLF between requests
        line, err = r:line(MAX_HEAD)
    end
    if not line then
        if err then
            return nil, "request line too long", 431
        end
        return nil
    end
    local method, target, version = line:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
    if not method then
        return nil, "bad request line", 400
    end
    local headers, names, head_bytes = {}, {}, #line
    while true do
        local h
        h, err = r:line(MAX_HEAD)
        if h == nil then
            if err then
                return nil, "header line too long", 431
            end
            return nil
        end
        head_bytes = head_bytes + #h + 2
        if head_bytes > MAX_HEAD then
            return nil, "header block too long", 431
        end
        if h == "" then
            break
        end
        local name, value = h:match("^([^:]+):%s*(.-)%s*$")
        if not name then
            return nil, "bad header line", 400
        end
        name = lower(name)
        names[#names + 1] = name
        headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
    local body = ""
    if headers["transfer-encoding"] and lower(headers["transfer-encoding"]):find("chunked", 1, true) then
        -- The cap holds for the sum of the chunks, checked before each is read.
        local parts, total = {}, 0
        while true do
            local size_line
            size_line, err = r:line(1024)
            local hex = (size_line or ""):match("^(%x+)")
            if size_line == nil and not err then
                return nil
            elseif hex == nil then
                return nil, "bad chunk size", 400
            end
            local size = #hex <= 15 and tonumber(hex, 16) or math.huge
            if size == 0 then
                repeat -- trailers, up to the empty line
                    local t = r:line(MAX_HEAD)
                    if t == nil then
                        return nil
                    end
                until t == ""
                break
            end
            total = total + size
            if total > MAX_BODY then
                return nil, "body too large", 413
            end
            local piece = r:bytes(size)
            if piece == nil or r:bytes(2) ~= "\r\n" then
                return nil
            end
            parts[#parts + 1] = piece
        end
        body = concat(parts)
    elseif headers["content-length"] then
        local n = tonumber(headers["content-length"]:match("^%d+$"))
        if not n then
            return nil, "bad content-length", 400
        elseif n > MAX_BODY then
            return nil, "body too large", 413
        end
        body = r:bytes(n)
        if body == nil then
            return nil
        end
    end
    local path, query = target:match("^([^?]*)%??(.*)$")
    return {
        method = method, target = target, line = line, version = version,
        path = path, query = query, params = M.parse_query(query),
        headers = headers, header_names = names, body = body,
    }
end

-- Write all of `data`, waiting for the socket as needed (at most `idle`
-- seconds at a time); false if it closed or the peer stopped reading.
local function write_all(loop, sock, data, idle)
    local i = 1
    while i <= #data do
        local last, err, partial = sock:send(data, i)
        if last then
            i = last + 1
        else
            if err ~= "timeout" then
                return false
            end
            i = partial + 1
            if i <= #data and not loop:writable(sock, idle) then
                return false
            end
        end
    end
    return true
end

local function head(status, headers, body_len, chunked, keep)
    local out = { format("HTTP/1.1 %d %s", status, M.REASONS[status] or "Status") }
    for _, h in ipairs(headers or {}) do
        out[#out + 1] = h
    end
    if chunked then
        out[#out + 1] = "Transfer-Encoding: chunked"
    else
        out[#out + 1] = "Content-Length: " .. body_len
    end
    out[#out + 1] = keep and "Connection: keep-alive" or "Connection: close"
    out[#out + 1] = ""
    out[#out + 1] = ""
    return concat(out, "\r\n")
end

-- Send `res`; returns true when the connection may serve another request.
local function send_response(loop, sock, res, keep, idle)
    if res.reset then
        -- An RST instead of an answer: linger 0 then close.
        sock:setoption("linger", { on = true, timeout = 0 })
        return false
    end
    if res.close then
        return false
    end
    local body = res.body or ""
    keep = keep and not res.cut and not res.no_keepalive
    local declared = res.declared_length or #body
    local h = head(res.status or 200, res.headers, declared, res.chunked, keep)
    if res.cut then
        -- Promise more than is sent, then hang up.
        write_all(loop, sock, h .. body:sub(1, res.cut), idle)
        return false
    end
    if res.chunked then
        local parts, size = { h }, 16384
        for i = 1, #body, size do
            local piece = body:sub(i, i + size - 1)
            parts[#parts + 1] = format("%x\r\n%s\r\n", #piece, piece)
        end
        parts[#parts + 1] = "0\r\n\r\n"
        return write_all(loop, sock, concat(parts), idle) and keep
    end
    return write_all(loop, sock, h .. body, idle) and keep
end

--- Serve connections accepted on `server` (a bound, listening TCP socket).
-- `handler(req, conn)` runs inside the connection's task (it may sleep) and
-- returns a response table: `status`, `headers` (list of "Name: value"),
-- `body`, and optionally `chunked`, `cut` (bytes to send before closing),
-- `reset`, `close`, `no_keepalive`, and `after` (called once it is sent).  `conn` has `id`, `peer` and `port`.
-- `opts.idle`: seconds a connection may wait for a request's next bytes (or
-- for the peer to read) before it is closed (default `M.IDLE_TIMEOUT`).
-- A request over the size caps is answered 413 (or 431) and its connection
-- closed.  When no descriptor is left for a new connection, the oldest one
-- waiting for a request is closed to make room; with none, the listener
-- rests a moment (up to 1 s) instead of being polled at once again.
function M.serve(loop, server, handler, opts)
    opts = opts or {}
    local idle_timeout = opts.idle or M.IDLE_TIMEOUT
    server:settimeout(0)
    local next_id = 0
    -- The connections waiting for the first byte of a request, and since when.
    local waiting = {}
    local function evict_oldest()
        local oldest, since
        for sock, t in pairs(waiting) do
            if not since or t < since then
                oldest, since = sock, t
            end
        end
        return oldest ~= nil and loop:wake(oldest, "evicted")
    end
    loop:spawn(function()
        local rest = 0.05
        while not loop.stopped do
            local sock, err = server:accept()
            if sock then
                rest = 0.05
                next_id = next_id + 1
                local conn = { id = next_id }
                conn.peer, conn.port = sock:getpeername()
                sock:settimeout(0)
                sock:setoption("tcp-nodelay", true)
                loop:spawn(function()
                    local r = reader(loop, sock, idle_timeout)
                    while true do
                        if r:empty() then
                            waiting[sock] = M.gettime()
                            local got = r:fill()
                            waiting[sock] = nil
                            if not got then
                                break
                            end
                        end
                        local req, why, status = read_request(r)
                        if not req then
                            if why then
                                write_all(loop, sock, format("HTTP/1.1 %d %s\r\n", status, M.REASONS[status])
                                    .. "Content-Length: 0\r\nConnection: close\r\n\r\n", idle_timeout)
                                -- (the rest of the request is dropped for a moment first: closed
                                -- with unread bytes, the connection would be reset, the answer lost)
                                sock:shutdown("send")
                                r:drain(LINGER, LINGER_BYTES)
                            end
                            break
                        end
                        local res = handler(req, conn)
                        local keep = lower(req.headers.connection or "") ~= "close"
                        keep = send_response(loop, sock, res, keep, idle_timeout)
                        if res.after then
                            res.after()
                        end
                        if not keep then
                            break
                        end
                    end
                    waiting[sock] = nil
                    loop:forget(sock)
                    sock:close()
                end)
            elseif err == "timeout" then
                loop:readable(server)
            elseif not evict_oldest() then
                -- Out of descriptors (EMFILE) or another failure: the listener
                -- stays readable, and polling it at once again would spin.
                loop:sleep(rest)
                rest = math.min(rest * 2, 1)
            end
        end
    end)
end

-- The time (seconds, with fractions) of the request log, `M.gettime`, and
-- `M.sleep`: LuaSocket's, else the C core's, so the in-process transport
-- needs no socket library.
do
    local ok, socket = pcall(require, "socket")
    if ok then
        M.gettime, M.sleep = socket.gettime, socket.sleep
    else
        local has_core, core = pcall(require, "wolkvox.core")
        M.gettime = has_core and core.time or os.time
        M.sleep = has_core and core.sleep or function(s)
            local stop = os.time() + s
            repeat until os.time() >= stop
        end
    end
end

return M
