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
    local core = require "wolkvox.core"
    for _ = 1, 400 do
        if not support.alive(self.pid) then
            break
        end
        core.sleep(0.05)
    end
    self.pid = nil
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

return M
