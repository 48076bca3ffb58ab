--- A hostile HTTP/1.1 server for the specs: it answers each connection it
-- accepts with the next entry of a scripted list, byte for byte, however
-- wrong those bytes are.  It runs in a child process (a Lua interpreter of
-- the parent's flavour, LuaSocket and `wolkvox.fake.loop`), so a blocking
-- client (the C core) and nginx alike can talk to it.
--
--     local hostile = require "hostile"
--     local h = hostile.start { responses = {
--         hostile.http(401, { ["Content-Type"] = "application/json" }, '{"code":401}'),
--         hostile.bad_chunk(),
--         function(c) c:send("HTTP/1.1 200 OK\r\n") c:sleep(1) c:reset() end,
--     } }
--     -- h.url ("http://127.0.0.1:PORT"), h.pid (the child's)
--     local texts = h:requests()   -- raw request texts received, in order of connection
--     h:stop()                     -- ends the child and removes its files
--
-- `start(opts)`:
--   `responses`  list; connection i (in accept order) gets responses[i]:
--                * a string: sent as is, then the connection is closed;
--                * a function(c): runs in the child (see below);
--   `default`    what connections past the list get (default: closed at once);
--   `read`       false: answer without reading the request first (default: the
--                request head, and a Content-Length or chunked body, is read and
--                recorded before the answer).
-- A function response is copied to the child with `string.dump`: its
-- upvalues are copied by value (nil, booleans, numbers, strings, tables of
-- those, Lua functions following the same rule; `_ENV` becomes the child's
-- globals; a C function of the standard libraries is found by name).  It receives `c` with
--   `c.request` (raw request text, "" when `read` is false), `c.index`,
--   `c:send(bytes)` (false once the peer is gone), `c:sleep(seconds)`,
--   `c:close()` (FIN), `c:reset()` (RST: linger 0, then close).
-- The connection is closed when the function returns.  The child keeps its
-- files in a temporary directory, removed when it ends.
--
-- Helpers (each returns a response):
--   `http(status, headers, body)`  headers a map or a list of "Name: value";
--       Content-Length (unless Content-Length or Transfer-Encoding is given)
--       and Connection: close are added.
--   `chunked(status, headers, chunks)` a chunked answer of the given pieces.
--   `bad_chunk(status, headers)`   a chunked answer whose chunk size is "zz".
--   `long_header(bytes, status)`   a header line of `bytes` (default 1 MiB).
--   `stream(bytes, opts)`          no Content-Length, Connection: close, then
--       `bytes` body bytes made piece by piece (never whole in memory):
--       opts.status, opts.headers, opts.chunked (send as chunked instead),
--       opts.piece (size, default 64 KiB), opts.gen(offset, size) -> string
--       (default "x" * size), opts.prefix (sent first, counted in `bytes`).
--   `hold(seconds, response)`      wait, then answer `response` (default: close).
--   `cut(response, n)`             the first `n` bytes of `response`, then close
--       (`reset = true` as third argument: an RST instead of a FIN).
--   `echo(token, shape, opts)`     a JSON error that carries `token`; shapes:
--       "plain" (401 JSON, token in msg and error), "forbidden" (403 JSON),
--       "escaped" (every character of the token \u-escaped), "code_in_200"
--       (HTTP 200, "code":"401" inside), "key" (the token as a JSON key),
--       "text" (a non-JSON 502 page whose token starts `opts.at` bytes in,
--       default 196, so a 200-byte snippet cut before masking shows its head),
--       "nested" (deep inside arrays and objects of an HTTP 200 answer).
--       opts.status overrides the HTTP status.
--   `json(status, body_text)`      `http(status, {Content-Type: application/json}, body)`.
-- @module hostile

local socket = require "socket"

local format, concat = string.format, table.concat

local M = {}

-- ---- serialising the script for the child -----------------------------------------

local serialize

local function number_literal(n)
    if n ~= n then
        return "(0/0)"
    elseif n == math.huge then
        return "math.huge"
    elseif n == -math.huge then
        return "(-math.huge)"
    elseif n == math.floor(n) and math.abs(n) < 2 ^ 53 then
        return format("%d", n)
    end
    return format("%.17g", n)
end

local function string_literal(s)
    -- Decimal escapes for every byte outside printable ASCII: the same text
    -- loads in Lua 5.1, LuaJIT and 5.4.
    return '"' .. s:gsub('[%c"\\\128-\255]', function(ch)
        return format("\\%03d", ch:byte())
    end) .. '"'
end

-- C functions reachable from the globals, by name ("string.rep").
local C_NAMES
local function c_name(f)
    if not C_NAMES then
        C_NAMES = {}
        for _, lib in ipairs { "string", "table", "math", "os", "io", "coroutine", "debug" } do
            for k, x in pairs(_G[lib] or {}) do
                if type(x) == "function" then
                    C_NAMES[x] = lib .. "." .. k
                end
            end
        end
        for k, x in pairs(_G) do
            if type(x) == "function" then
                C_NAMES[x] = k
            end
        end
    end
    return C_NAMES[f]
end

serialize = function(v, seen)
    local t = type(v)
    if t == "nil" or t == "boolean" then
        return tostring(v)
    elseif t == "number" then
        return number_literal(v)
    elseif t == "string" then
        return string_literal(v)
    elseif t == "table" then
        seen = seen or {}
        if seen[v] then
            error("hostile: a table that contains itself cannot be copied to the child", 0)
        end
        seen[v] = true
        local out = {}
        for k, x in pairs(v) do
            out[#out + 1] = "[" .. serialize(k, seen) .. "]=" .. serialize(x, seen)
        end
        seen[v] = nil
        return "{" .. concat(out, ",") .. "}"
    elseif t == "function" then
        local ok, bytes = pcall(string.dump, v)
        if not ok and c_name(v) then
            return c_name(v)
        elseif not ok then
            error("hostile: a C function cannot be copied to the child (reach it through a global)", 0)
        end
        local ups = {}
        local i = 1
        while true do
            local name, value = debug.getupvalue(v, i)
            if name == nil then
                break
            end
            if name == "_ENV" then
                ups[#ups + 1] = format("{%d,true}", i)
            else
                ups[#ups + 1] = format("{%d,false,%s}", i, serialize(value, seen))
            end
            i = i + 1
        end
        return format("FN(%s,{%s})", string_literal(bytes), concat(ups, ","))
    end
    error("hostile: a " .. t .. " cannot be copied to the child", 0)
end

-- ---- helpers that build responses --------------------------------------------------

local REASONS = { [200] = "OK", [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
    [404] = "Not Found", [500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Unavailable" }

local function header_lines(headers)
    local out, names = {}, {}
    headers = headers or {}
    if headers[1] then
        for _, line in ipairs(headers) do
            out[#out + 1] = line
            names[(line:match("^([^:]+)") or ""):lower()] = true
        end
    else
        local keys = {}
        for k in pairs(headers) do
            keys[#keys + 1] = k
        end
        table.sort(keys)
        for _, k in ipairs(keys) do
            out[#out + 1] = k .. ": " .. headers[k]
            names[k:lower()] = true
        end
    end
    return out, names
end

--- The head of an answer (status line and headers, up to the empty line).
function M.head(status, headers, extra)
    status = status or 200
    local lines, names = header_lines(headers)
    for _, x in ipairs(extra or {}) do
        local name = x:match("^([^:]+)"):lower()
        if not names[name] then
            lines[#lines + 1] = x
        end
    end
    return format("HTTP/1.1 %d %s\r\n", status, REASONS[status] or "Status") .. concat(lines, "\r\n")
        .. (#lines > 0 and "\r\n" or "") .. "\r\n"
end

function M.http(status, headers, body)
    body = body or ""
    local _, names = header_lines(headers)
    local extra = { "Connection: close" }
    if not names["content-length"] and not names["transfer-encoding"] then
        extra[#extra + 1] = "Content-Length: " .. #body
    end
    return M.head(status, headers, extra) .. body
end

function M.json(status, body)
    return M.http(status, { ["Content-Type"] = "application/json" }, body)
end

function M.chunked(status, headers, chunks)
    local out = { M.head(status, headers, { "Transfer-Encoding: chunked", "Connection: close" }) }
    for _, piece in ipairs(chunks or {}) do
        out[#out + 1] = format("%x\r\n%s\r\n", #piece, piece)
    end
    out[#out + 1] = "0\r\n\r\n"
    return concat(out)
end

function M.bad_chunk(status, headers)
    headers = headers or { ["Content-Type"] = "application/json" }
    return M.head(status, headers, { "Transfer-Encoding: chunked", "Connection: close" })
        .. "5\r\n{\"a\":\r\nzz\r\n1}\r\n0\r\n\r\n"
end

function M.long_header(bytes, status)
    bytes = bytes or 1024 * 1024
    local line = format("HTTP/1.1 %d OK\r\nContent-Type: application/json\r\n", status or 200)
    return function(c)
        if not c:send(line .. "X-Long: ") then
            return
        end
        local left = bytes
        while left > 0 do
            local n = math.min(left, 65536)
            if not c:send(string.rep("a", n)) then
                return
            end
            left = left - n
        end
        c:send("\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    end
end

function M.stream(bytes, opts)
    opts = opts or {}
    local head = M.head(opts.status or 200, opts.headers or { ["Content-Type"] = "application/json" },
        { opts.chunked and "Transfer-Encoding: chunked" or nil, "Connection: close" })
    local piece, gen, chunked, prefix = opts.piece or 65536, opts.gen, opts.chunked, opts.prefix or ""
    return function(c)
        if not c:send(head) then
            return
        end
        local sent, filler = 0, nil
        if prefix ~= "" then
            if not c:send(chunked and string.format("%x\r\n%s\r\n", #prefix, prefix) or prefix) then
                return
            end
            sent = #prefix
        end
        while sent < bytes do
            local n = math.min(piece, bytes - sent)
            local data
            if gen then
                data = gen(sent, n)
            else
                if not filler or #filler ~= n then
                    filler = string.rep("x", n)
                end
                data = filler
            end
            if chunked then
                data = string.format("%x\r\n", #data) .. data .. "\r\n"
            end
            if not c:send(data) then
                return
            end
            sent = sent + n
        end
        if chunked then
            c:send("0\r\n\r\n")
        end
    end
end

function M.hold(seconds, response)
    return function(c)
        c:sleep(seconds)
        if type(response) == "string" then
            c:send(response)
        elseif type(response) == "function" then
            response(c)
        end
    end
end

function M.cut(response, n, reset)
    return function(c)
        c:send(response:sub(1, n))
        if reset then
            c:reset()
        end
    end
end

local function u_escape(s)
    return (s:gsub(".", function(ch) return format("\\u%04x", ch:byte()) end))
end

local function json_string(s)
    return '"' .. s:gsub('[%c"\\]', function(ch)
        if ch == '"' or ch == "\\" then
            return "\\" .. ch
        end
        return format("\\u%04x", ch:byte())
    end) .. '"'
end

function M.echo(token, shape, opts)
    opts = opts or {}
    shape = shape or "plain"
    local status, body, ctype = 401, nil, "application/json"
    local t = json_string(token)
    if shape == "plain" then
        body = '{"code":401,"error":"invalid token ' .. t:sub(2, -2) .. '","msg":' .. t .. '}'
    elseif shape == "forbidden" then
        status = 403
        body = '{"code":403,"error":' .. t .. ',"msg":"PLEASE VALIDATE TOKEN ' .. t:sub(2, -2) .. '"}'
    elseif shape == "escaped" then
        local e = u_escape(token)
        body = '{"code":401,"error":"token \\"' .. e .. '\\" refused","msg":"' .. e .. '"}'
    elseif shape == "code_in_200" then
        status = 200
        body = '{"code":"401","error":"PLEASE VALIDATE TOKEN ' .. t:sub(2, -2) .. '","msg":' .. t .. '}'
    elseif shape == "key" then
        status = 200
        body = '{"code":"401","error":{' .. t .. ':"bad"},"msg":"refused"}'
    elseif shape == "nested" then
        status = 200
        body = '{"code":200,"error":null,"msg":"ok","data":[{"a":[[{"b":' .. t .. '}]],"c":"x'
            .. t:sub(2, -2) .. 'y"}]}'
    elseif shape == "text" then
        status, ctype = 502, "text/html"
        local at = opts.at or 196
        body = string.rep("-", at) .. token .. " was refused by the upstream</p></body></html>"
    else
        error("hostile.echo: unknown shape " .. tostring(shape), 2)
    end
    return M.http(opts.status or status, { ["Content-Type"] = ctype }, body)
end

-- ---- the parent's side ---------------------------------------------------------------

local Handle = {}
Handle.__index = Handle

local function sh_quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

local CHILD = [[
local dir = %s
package.path, package.cpath = %s, %s
local function FN(bytes, ups)
    local f = assert((loadstring or load)(bytes, "=hostile response", "b"))
    for _, u in ipairs(ups) do
        if u[2] then debug.setupvalue(f, u[1], _G) else debug.setupvalue(f, u[1], u[3]) end
    end
    return f
end
local script = %s
require("hostile").serve(dir, script)
]]

function M.start(opts)
    opts = opts or {}
    local p = assert(io.popen("env -u LD_PRELOAD mktemp -d", "r"))
    local dir = p:read("*l")
    p:close()
    local script = { responses = opts.responses or {}, default = opts.default, read = opts.read ~= false }
    -- The child starts without the sanitizer's preload (wolkvox.fake.loop loads core).
    local cpath = require("support").child_cpath()
    local prog = format(CHILD, string_literal(dir), string_literal(package.path), string_literal(cpath),
        serialize(script))
    local f = assert(io.open(dir .. "/child.lua", "wb"))
    f:write(prog)
    f:close()
    local interp = opts.lua or (jit and "luajit" or "lua5.4")
    -- The child's stdin is this pipe: when this process goes, so does the child.
    local pipe = assert(io.popen("exec env -u LD_PRELOAD " .. interp .. " " .. sh_quote(dir .. "/child.lua"), "w"))
    local self = setmetatable({ dir = dir, pipe = pipe }, Handle)
    for _ = 1, 500 do
        local ready = read_file(dir .. "/ready")
        if ready then
            local pid, url = ready:match("^(%d+) (%S+)")
            self.pid, self.url = tonumber(pid), url
            return self
        end
        socket.sleep(0.01)
    end
    self:stop()
    error("the hostile server did not start", 2)
end

--- The raw texts of the requests received so far, in order of connection.
function Handle:requests()
    local out = {}
    while true do
        local s = read_file(self.dir .. "/req." .. (#out + 1))
        if not s then
            return out
        end
        out[#out + 1] = s
    end
end

--- How many connections were accepted.
function Handle:connections()
    return tonumber(read_file(self.dir .. "/count") or "0") or 0
end

function Handle:stop()
    if self.pipe then
        self.pipe:close() -- EOF on the child's stdin: it exits; close waits for it
        self.pipe = nil
        os.execute("rm -rf " .. sh_quote(self.dir))
    end
end

-- ---- the child's side ----------------------------------------------------------------

local function write_file(path, s)
    local tmp = path .. ".tmp"
    local f = assert(io.open(tmp, "wb"))
    assert(f:write(s))
    assert(f:close())
    assert(os.rename(tmp, path))
end

local function own_pid()
    local f = io.open("/proc/self/stat", "r")
    local pid = f and f:read("*l"):match("^(%d+)")
    if f then
        f:close()
    end
    return pid or "0"
end

local Conn = {}
Conn.__index = Conn

function Conn:send(data)
    if self.closed then
        return false
    end
    local i = 1
    while i <= #data do
        local last, err, partial = self.sock:send(data, i)
        if last then
            i = last + 1
        elseif err == "timeout" then
            i = partial + 1
            if i <= #data then
                self.loop:writable(self.sock)
            end
        else
            self.closed = true
            return false
        end
    end
    return true
end

function Conn:sleep(seconds)
    self.loop:sleep(seconds)
end

function Conn:close()
    if not self.closed then
        self.closed = true
        self.loop:forget(self.sock)
        self.sock:close()
    end
end

function Conn:reset()
    if not self.closed then
        self.sock:setoption("linger", { on = true, timeout = 0 })
        self:close()
    end
end

-- Read one request (head, then a Content-Length or chunked body): its raw text.
function Conn:read_request()
    local buf, deadline = "", socket.gettime() + 10
    local function fill()
        while socket.gettime() < deadline do
            local data, err, partial = self.sock:receive(65536)
            local got = data or partial
            if got and #got > 0 then
                buf = buf .. got
                return true
            end
            if err ~= "timeout" then
                return false
            end
            self.loop:readable(self.sock)
        end
        return false
    end
    local head_end
    repeat
        head_end = buf:find("\r\n\r\n", 1, true)
    until head_end or not fill()
    if not head_end then
        return buf
    end
    local head = buf:sub(1, head_end + 3):lower()
    local n = tonumber(head:match("\ncontent%-length:%s*(%d+)"))
    if n then
        while #buf < head_end + 3 + n and fill() do
        end
    elseif head:find("\ntransfer%-encoding:[^\n]*chunked") then
        while not buf:find("\r\n0\r\n\r\n", head_end, true) and fill() do
        end
    end
    return buf
end

--- The child's main: serve `script` until stdin closes.
function M.serve(dir, script)
    local loop = require("wolkvox.fake.loop").new()
    local server = assert(socket.bind("127.0.0.1", 0, 64))
    server:settimeout(0)
    local count = 0
    loop:spawn(function()
        while true do
            local sock = server:accept()
            if sock then
                count = count + 1
                write_file(dir .. "/count", tostring(count))
                local index = count
                sock:settimeout(0)
                sock:setoption("tcp-nodelay", true)
                loop:spawn(function()
                    local c = setmetatable({ sock = sock, loop = loop, index = index, request = "" }, Conn)
                    if script.read then
                        c.request = c:read_request()
                        write_file(dir .. "/req." .. index, c.request)
                    end
                    local r = script.responses[index]
                    if r == nil then
                        r = script.default
                    end
                    if type(r) == "string" then
                        c:send(r)
                    elseif type(r) == "function" then
                        local ok, err = pcall(r, c)
                        if not ok then
                            io.stderr:write("hostile: response ", index, " failed: ", tostring(err), "\n")
                        end
                    end
                    c:close()
                end)
            else
                loop:readable(server)
            end
        end
    end)
    -- The parent holds our stdin: its end (stop(), exit, crash) is EOF here.
    local stdin = { getfd = function() return 0 end }
    loop:spawn(function()
        while true do
            loop:readable(stdin)
            if io.stdin:read(1) == nil then
                loop:stop()
                return
            end
        end
    end)
    local _, port = server:getsockname()
    write_file(dir .. "/ready", own_pid() .. " http://127.0.0.1:" .. port .. "\n")
    loop:run()
    server:close()
    os.execute("rm -rf '" .. dir:gsub("'", "'\\''") .. "'")
end

return M
