--- A minimal HTTP/1.1 server for the fake: keep-alive, Content-Length and
-- chunked request bodies, and the misbehaviours a test needs to provoke
-- (a reset, a connection closed without an answer, a body cut short).
-- @module wolkvox.fake.http

local concat, tonumber, lower, format = table.concat, tonumber, string.lower, string.format

local M = {}

M.REASONS = {
    [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
    [207] = "Multi-Status", [302] = "Found", [400] = "Bad Request", [401] = "Unauthorized",
    [403] = "Forbidden", [404] = "Not Found", [406] = "Not Acceptable",
    [422] = "Unprocessable Entity", [500] = "Internal Server Error", [502] = "Bad Gateway",
    [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

local MAX_HEAD = 64 * 1024
local MAX_BODY = 64 * 1024 * 1024

-- Buffered reads on a non-blocking socket inside a loop task.
local Reader = {}
Reader.__index = Reader

local function reader(loop, sock)
    return setmetatable({ loop = loop, sock = sock, buf = "", eof = false }, Reader)
end

function Reader:fill()
    if self.eof then
        return false
    end
    while true do
        local data, err, partial = self.sock:receive(65536)
        local got = data or partial
        if got and #got > 0 then
            self.buf = self.buf .. got
            return true
        end
        if err == "closed" then
            self.eof = true
            return false
        end
        if err ~= "timeout" then
            self.eof = true
            return false
        end
        self.loop:readable(self.sock)
    end
end

-- Up to and without the next CRLF; nil at end of input.
function Reader:line(limit)
    while true do
        local i = self.buf:find("\r\n", 1, true)
        if i then
            local line = self.buf:sub(1, i - 1)
            self.buf = self.buf:sub(i + 2)
            return line
        end
        if #self.buf > limit or not self:fill() then
            return nil
        end
    end
end

function Reader:bytes(n)
    while #self.buf < n do
        if not self:fill() then
            return nil
        end
    end
    local out = self.buf:sub(1, n)
    self.buf = self.buf:sub(n + 1)
    return out
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

local function read_request(r)
    if r.buf == "" and not r:fill() then
        return nil
    end
    if not r.buf:match("^[%u\r\n]") then
        return nil, "not HTTP" -- e.g. a TLS hello sent to this plain port
    end
    local line = r:line(MAX_HEAD)
    while line == "" do -- tolerate stray CRLF between requests
        line = r:line(MAX_HEAD)
    end
    if not line then
        return nil
    end
    local method, target, version = line:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
    if not method then
        return nil, "bad request line"
    end
    local headers, names = {}, {}
    while true do
        local h = r:line(MAX_HEAD)
        if h == nil then
            return nil
        end
        if h == "" then
            break
        end
        local name, value = h:match("^([^:]+):%s*(.-)%s*$")
        if not name then
            return nil, "bad header line"
        end
        name = lower(name)
        names[#names + 1] = name
        headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
    local body = ""
    if headers["transfer-encoding"] and lower(headers["transfer-encoding"]):find("chunked", 1, true) then
        local parts = {}
        while true do
            local size = tonumber((r:line(MAX_HEAD) or ""):match("^%x+"), 16)
            if size == nil then
                return nil
            end
            if size == 0 then
                r:line(MAX_HEAD)
                break
            end
            parts[#parts + 1] = r:bytes(size)
            r:line(MAX_HEAD)
        end
        body = concat(parts)
    elseif headers["content-length"] then
        local n = tonumber(headers["content-length"])
        if not n or n < 0 or n > MAX_BODY then
            return nil, "bad content-length"
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

-- Write all of `data`, waiting for the socket as needed; false if it closed.
local function write_all(loop, sock, data)
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
            if i <= #data then
                loop:writable(sock)
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
local function send_response(loop, sock, res, keep)
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
        write_all(loop, sock, h .. body:sub(1, res.cut))
        return false
    end
    if res.chunked then
        local parts, size = { h }, 16384
        for i = 1, #body, size do
            local piece = body:sub(i, i + size - 1)
            parts[#parts + 1] = format("%x\r\n%s\r\n", #piece, piece)
        end
        parts[#parts + 1] = "0\r\n\r\n"
        return write_all(loop, sock, concat(parts)) and keep
    end
    return write_all(loop, sock, h .. body) and keep
end

--- Serve connections accepted on `server` (a bound, listening TCP socket).
-- `handler(req, conn)` runs inside the connection's task (it may sleep) and
-- returns a response table: `status`, `headers` (list of "Name: value"),
-- `body`, and optionally `chunked`, `cut` (bytes to send before closing),
-- `reset`, `close`, `no_keepalive`, and `after` (called once it is sent).  `conn` has `id`, `peer` and `port`.
function M.serve(loop, server, handler)
    server:settimeout(0)
    local next_id = 0
    loop:spawn(function()
        while not loop.stopped do
            local sock = server:accept()
            if sock then
                next_id = next_id + 1
                local conn = { id = next_id }
                conn.peer, conn.port = sock:getpeername()
                sock:settimeout(0)
                sock:setoption("tcp-nodelay", true)
                loop:spawn(function()
                    local r = reader(loop, sock)
                    while true do
                        local req, why = read_request(r)
                        if not req then
                            if why then
                                write_all(loop, sock, "HTTP/1.1 400 Bad Request\r\n"
                                    .. "Content-Length: 0\r\nConnection: close\r\n\r\n")
                            end
                            break
                        end
                        local res = handler(req, conn)
                        local keep = lower(req.headers.connection or "") ~= "close"
                        keep = send_response(loop, sock, res, keep)
                        if res.after then
                            res.after()
                        end
                        if not keep then
                            break
                        end
                    end
                    loop:forget(sock)
                    sock:close()
                end)
            else
                loop:readable(server)
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
