-- Debian's redis-server for the fleet specs: started on a free loopback
-- port with a directory of its own (persistence on: every write fsynced to
-- its append-only file), restarted and stopped by the spec itself.
local support = require "support"

local M = {}

--- The path of redis-server, or nil when it is not installed.
function M.binary()
    local p = io.popen("command -v redis-server 2>/dev/null")
    local path = p:read("*l")
    p:close()
    return path ~= "" and path or nil
end

--- Whether the wolkvox.redis C module was built (hiredis found).
function M.client_built()
    return (pcall(require, "wolkvox.redis"))
end

--- For a `describe` that needs Redis: true when redis-server and the
-- wolkvox.redis module are there.  Without redis-server the describe is
-- pending, with a message; with it but without the module (hiredis was
-- missing at build time) a failing test says so: the suite must not pass
-- by skipping what it could run.
function M.need()
    local busted = require "busted"
    if not M.binary() then
        busted.pending("redis-server is not installed (Debian redis-server; tools/install-deps installs it)")
        return false
    end
    if not M.client_built() then
        busted.it("needs the wolkvox.redis module", function()
            error("redis-server is installed but wolkvox.redis was not built: install libhiredis-dev "
                .. "(tools/install-deps) and run make", 0)
        end)
        return false
    end
    return true
end

-- A free TCP port of 127.0.0.1 (the kernel's choice, then released).
local function free_port()
    local socket = require "socket"
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
end

local Server = {}
Server.__index = Server

local function sh(cmd)
    return os.execute("env -u LD_PRELOAD sh -c '" .. cmd:gsub("'", "'\\''") .. "' >/dev/null 2>&1")
end

--- Start it (again, on the same port and directory after `stop`).
function Server:start()
    local args = { "redis-server", "--port", self.port, "--bind", "127.0.0.1", "--dir", self.dir,
        "--daemonize", "yes", "--pidfile", self.dir .. "/pid", "--logfile", self.dir .. "/log",
        "--save", "''", "--appendonly", "yes", "--appendfsync", "always" }
    if self.password then
        args[#args + 1] = "--requirepass"
        args[#args + 1] = self.password
    end
    if self.cert then
        -- TLS only: the plain port closed.
        args[3] = "0"
        for _, a in ipairs { "--tls-port", self.port, "--tls-cert-file", self.cert, "--tls-key-file",
            self.dir .. "/key.pem" } do
            args[#args + 1] = a
        end
        -- With client_auth, a client needs a certificate signed by the spec's CA.
        for _, a in ipairs(self.client_cert and { "--tls-ca-cert-file", self.ca, "--tls-auth-clients", "yes" }
                or { "--tls-auth-clients", "no" }) do
            args[#args + 1] = a
        end
    end
    assert(sh(table.concat(args, " ")), "redis-server did not start")
    local core = require "wolkvox.core"
    if self.cert then
        for _ = 1, 200 do
            local mine = self.client_cert and (" --cert " .. self.client_cert .. " --key " .. self.client_key) or ""
            local p = io.popen("env -u LD_PRELOAD redis-cli --tls --cacert " .. self.cert .. mine .. " -p " .. self.port
                .. " ping 2>/dev/null")
            local answer = p:read("*a")
            p:close()
            if answer:find("PONG", 1, true) then
                self.pid = tonumber(support.read(self.dir .. "/pid"):match("%d+"))
                return self
            end
            core.sleep(0.05)
        end
        error("redis-server (TLS) did not answer on port " .. self.port)
    end
    -- Until it answers (bounded: 200 x 50 ms).
    for _ = 1, 200 do
        local conn = require("wolkvox.redis").connect("127.0.0.1", self.port, 1)
        if conn then
            local r, err = conn:command("PING")
            conn:close()
            if r or (err and err:find("NOAUTH")) then
                self.pid = tonumber(support.read(self.dir .. "/pid"):match("%d+"))
                return self
            end
        end
        core.sleep(0.05)
    end
    error("redis-server did not answer on port " .. self.port .. ": " .. tostring(support.slurp(self.dir .. "/log")))
end

--- Stop it (SIGTERM: it finishes what it was doing) and wait until it is gone.
function Server:stop()
    if not self.pid then
        return
    end
    os.execute("kill " .. self.pid)
    local pid = self.pid
    self.pid = nil
    support.wait_for(function() return not support.alive(pid) end, 20, "redis-server (pid " .. pid .. ") to stop")
end

--- A connection (for a spec's own look at the keys); over TLS with `cert`.
function Server:connect()
    local conn = assert(require("wolkvox.redis").connect("127.0.0.1", self.port, 2,
        self.cert and { cafile = self.cert, cert = self.client_cert, key = self.client_key } or nil))
    if self.password then
        assert(conn:command("AUTH", self.password))
    end
    return conn
end

--- One command on a fresh connection.
function Server:command(...)
    local conn = self:connect()
    local r, err = conn:command(...)
    conn:close()
    return r, err
end

--- Start a server: `password` (requirepass) and `tls` (TLS only, with a
-- self-signed certificate for 127.0.0.1: `cert` is its file) optional;
-- `client_auth` (with `tls`): clients must show a certificate signed by the
-- spec's CA (`ca`); `client_cert` and `client_key` are one.
-- @return the handle: `port`, `url` (`redis://127.0.0.1:PORT/0`, or
--   `rediss://`), `dir`, `cert`, `start()`, `stop()`, `command(...)`
function M.start(opts)
    opts = opts or {}
    local self = setmetatable({ port = free_port(), dir = support.tmpdir(), password = opts.password }, Server)
    self.url = "redis://127.0.0.1:" .. self.port .. "/0"
    if opts.tls then
        self.cert = self.dir .. "/cert.pem"
        assert(sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout " .. self.dir .. "/key.pem -out " .. self.cert
            .. " -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=DNS:127.0.0.1,IP:127.0.0.1"),
            "openssl could not make a certificate")
        self.url = "rediss://127.0.0.1:" .. self.port .. "/0"
        if opts.client_auth then
            local d = self.dir
            self.ca, self.client_cert, self.client_key = d .. "/ca.pem", d .. "/client.pem", d .. "/client.key"
            assert(sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout " .. d .. "/ca.key -out " .. self.ca
                .. " -days 2 -subj /CN=spec-ca"
                .. " && openssl req -newkey rsa:2048 -nodes -keyout " .. self.client_key .. " -out " .. d
                .. "/client.csr -subj /CN=spec-client"
                .. " && openssl x509 -req -in " .. d .. "/client.csr -CA " .. self.ca .. " -CAkey " .. d
                .. "/ca.key -CAcreateserial -out " .. self.client_cert .. " -days 2"),
                "openssl could not make the client certificate")
        end
    end
    return self:start()
end

--- The frame of a fleet spec: a fake server and a redis-server (`opts`
-- for `start`) for the whole `describe`, stopped at its end; `bind(srv,
-- rs)` receives them.
function M.suite(opts, bind)
    local busted = require "busted"
    local srv, rs
    busted.setup(function()
        srv = support.fake()
        rs = M.start(opts)
        bind(srv, rs)
    end)
    busted.teardown(function()
        srv:stop()
        rs:stop()
    end)
end


-- ---- a hostile Redis ---------------------------------------------------------------
-- A small RESP server in a child process (the spec's Lua flavour, LuaSocket
-- and wolkvox.fake.loop) that plays Redis for fleet mode and answers some
-- commands wrongly.  Without rules it answers like a Redis would: PONG, OK
-- to AUTH, SELECT and SET, nil to GET, a script id to SCRIPT LOAD (one per
-- script of wolkvox.limits.redis, recognised by its text), and to EVALSHA of
-- those scripts slot 1 taken, 1 freed, a start claimed, the count added.
-- A rule names a command as "PING", "AUTH", "SELECT", "GET", "SET",
-- "SCRIPT LOAD" or "EVALSHA take" ("free", "claim", "add") and says what it
-- gets instead:
--   a string                 these bytes (any RESP, or not RESP at all);
--   { send = bytes }         the same;
--   { drip = bytes, every = s, limit = s }  one byte every `s` seconds; the
--                            connection is closed when `limit` seconds went first;
--   { stream = head, fill = bytes, total = n }  `head`, then `fill` again and
--                            again until `n` bytes went or the client is gone.
-- `times = n` in a table rule: only n such commands get it (after the
-- first `after`, default 0).
local HOSTILE_CHILD = [==[
local dir, rules = %s, %s
local socket = require "socket"
local loop = require("wolkvox.fake.loop").new()
local function log(line)
    local f = assert(io.open(dir .. "/log", "ab"))
    f:write(line, "\n")
    f:close()
end
local function write_file(path, s)
    local f = assert(io.open(path .. ".tmp", "wb"))
    f:write(s)
    f:close()
    assert(os.rename(path .. ".tmp", path))
end
local SCRIPTS = { { "take", "return {0, wait}" }, { "free", "redis.call('DEL'" },
    { "claim", "return -1" }, { "add", "INCRBY" } }
local shas, added = {}, 0
local Conn = {}
Conn.__index = Conn
function Conn:send(data)
    local i = 1
    while i <= #data do
        local last, err, partial = self.sock:send(data, i)
        if last then
            i = last + 1
        elseif err == "timeout" then
            i = partial + 1
            if i <= #data then
                loop:writable(self.sock)
            end
        else
            return false
        end
    end
    return true
end
function Conn:fill()
    while true do
        local data, err, partial = self.sock:receive(65536)
        local got = data or partial
        if got and #got > 0 then
            self.buf = self.buf .. got
            return true
        end
        if err ~= "timeout" then
            return false
        end
        loop:readable(self.sock)
    end
end
function Conn:line()
    while true do
        local e = self.buf:find("\r\n", 1, true)
        if e then
            local l = self.buf:sub(1, e - 1)
            self.buf = self.buf:sub(e + 2)
            return l
        end
        if not self:fill() then
            return nil
        end
    end
end
function Conn:bytes(n)
    while #self.buf < n + 2 do
        if not self:fill() then
            return nil
        end
    end
    local s = self.buf:sub(1, n)
    self.buf = self.buf:sub(n + 3)
    return s
end
-- One command: its arguments, or nil when the client is gone.
function Conn:command()
    local head = self:line()
    local n = head and tonumber(head:match("^%%*(%%d+)$"))
    if not n then
        return nil
    end
    local args = {}
    for i = 1, n do
        local len = tonumber((self:line() or ""):match("^%%$(%%d+)$"))
        args[i] = len and self:bytes(len)
        if not args[i] then
            return nil
        end
    end
    return args
end
local function bulk(s)
    return "$" .. #s .. "\r\n" .. s .. "\r\n"
end
local function answer(name, args)
    if name == "PING" then
        return "+PONG\r\n"
    elseif name == "AUTH" or name == "SELECT" or name == "SET" then
        return "+OK\r\n"
    elseif name == "GET" then
        return "$-1\r\n"
    elseif name == "SCRIPT LOAD" then
        for i, s in ipairs(SCRIPTS) do
            if (args[3] or ""):find(s[2], 1, true) then
                local sha = string.format("%%040x", i)
                shas[sha] = s[1]
                return bulk(sha)
            end
        end
        return "-ERR unknown script\r\n"
    elseif name == "EVALSHA take" then
        return "*2\r\n:1\r\n:0\r\n"
    elseif name == "EVALSHA free" then
        return ":1\r\n"
    elseif name == "EVALSHA claim" then
        return ":-1\r\n"
    elseif name == "EVALSHA add" then
        added = added + (tonumber(args[4]) or 0)
        return ":" .. added .. "\r\n"
    elseif name:find("^EVALSHA") then
        return "-NOSCRIPT No matching script. Please use EVAL.\r\n"
    end
    return "-ERR unknown command\r\n"
end
local used = {}
local function serve(c)
    while true do
        local args = c:command()
        if not args then
            return
        end
        local name = args[1]:upper()
        if name == "SCRIPT" then
            name = "SCRIPT " .. (args[2] or ""):upper()
        elseif name == "EVALSHA" then
            name = "EVALSHA " .. (shas[args[2]] or "?")
        end
        local rule = rules[name]
        if type(rule) == "table" and (rule.times or rule.after) then
            used[name] = (used[name] or 0) + 1
            local after = rule.after or 0
            if used[name] <= after or used[name] > after + (rule.times or math.huge) then
                rule = nil
            end
        end
        log(c.index .. " " .. name .. (rule and " (hostile)" or ""))
        if rule == nil then
            if not c:send(answer(name, args)) then
                return
            end
        elseif type(rule) == "string" or rule.send then
            if not c:send(rule.send or rule) then
                return
            end
        elseif rule.drip then
            local stop = socket.gettime() + (rule.limit or 60)
            for i = 1, #rule.drip do
                if i > 1 then
                    loop:sleep(rule.every or 2)
                end
                if socket.gettime() >= stop or not c:send(rule.drip:sub(i, i)) then
                    return
                end
            end
        elseif rule.stream then
            if not c:send(rule.stream) then
                return
            end
            local piece = rule.fill:rep(math.max(1, math.floor(65536 / #rule.fill)))
            local sent = #rule.stream
            while sent < rule.total do
                if not c:send(piece) then
                    return
                end
                sent = sent + #piece
            end
        end
    end
end
local server = assert(socket.bind("127.0.0.1", 0, 64))
server:settimeout(0)
local count = 0
loop:spawn(function()
    while true do
        local sock = server:accept()
        if sock then
            count = count + 1
            write_file(dir .. "/count", tostring(count))
            sock:settimeout(0)
            sock:setoption("tcp-nodelay", true)
            local c = setmetatable({ sock = sock, index = count, buf = "" }, Conn)
            loop:spawn(function()
                serve(c)
                loop:forget(sock)
                sock:close()
            end)
        else
            loop:readable(server)
        end
    end
end)
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
write_file(dir .. "/ready", tostring(port))
loop:run()
]==]

-- A Lua literal of `v` (strings, numbers, booleans, tables of those).
local function literal(v)
    if type(v) == "table" then
        local out = {}
        for k, x in pairs(v) do
            out[#out + 1] = "[" .. literal(k) .. "]=" .. literal(x)
        end
        return "{" .. table.concat(out, ",") .. "}"
    elseif type(v) == "string" then
        return (string.format("%q", v):gsub("\r", "\\r"))
    end
    return tostring(v)
end

local Hostile = {}
Hostile.__index = Hostile

--- Start a hostile Redis with `rules` (see above).
-- @return the handle: `port`, `url` (`redis://127.0.0.1:PORT/0`),
--   `log()` (the commands seen, "CONNECTION NAME[ (hostile)]", in order),
--   `connections()`, `stop()`
function M.hostile(rules)
    local dir = support.tmpdir()
    local cpath = support.child_cpath()
    local prog = string.format("package.path = %q .. package.path; package.cpath = %q\n",
        "lua/?.lua;lua/?/init.lua;", cpath) .. string.format(HOSTILE_CHILD, literal(dir), literal(rules or {}))
    support.spit(dir .. "/child.lua", prog)
    local interp = jit and "luajit" or "lua5.4"
    -- Its stdin is this pipe: when this process goes, so does the child.
    local pipe = assert(io.popen("exec env -u LD_PRELOAD " .. interp .. " " .. dir .. "/child.lua", "w"))
    local self = setmetatable({ dir = dir, pipe = pipe }, Hostile)
    local core = require "wolkvox.core"
    for _ = 1, 500 do
        local port = tonumber(support.slurp(dir .. "/ready") or "")
        if port then
            self.port, self.url = port, "redis://127.0.0.1:" .. port .. "/0"
            return self
        end
        core.sleep(0.01)
    end
    self:stop()
    error("the hostile Redis did not start", 2)
end

function Hostile:log()
    local out = {}
    for line in (support.slurp(self.dir .. "/log") or ""):gmatch("[^\n]+") do
        out[#out + 1] = line
    end
    return out
end

function Hostile:connections()
    return tonumber(support.slurp(self.dir .. "/count") or "0") or 0
end

function Hostile:stop()
    if self.pipe then
        self.pipe:close()
        self.pipe = nil
        os.execute("rm -rf '" .. self.dir .. "'")
    end
end

return M
