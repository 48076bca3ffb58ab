-- A real nginx with lua-nginx-module for the specs: Debian's nginx and
-- libnginx-mod-http-lua, started on loopback from a generated config in a
-- temporary prefix (no system files touched), LuaJIT build of the tree.
local socket = require "socket"
local support = require "support"

local M = {}

local MODULES = "/usr/lib/nginx/modules"

local function sh(cmd)
    local p = assert(io.popen("env -u LD_PRELOAD " .. cmd .. " 2>&1", "r"))
    local out = p:read("*a")
    local ok = p:close()
    return ok, out
end

--- A port nothing listens on now (for the servers a spec starts).
function M.free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return port
end

--- True when nginx and the Lua module are installed; else false and what
-- is missing.  (`command` is a shell builtin: it runs inside sh, and the
-- answer is read from its output, since a pipe's exit status is not
-- reported on LuaJIT.)
function M.available()
    local missing = {}
    local _, path = sh("sh -c 'command -v nginx'")
    if not path:match("^/%S*nginx%s*$") then
        missing[#missing + 1] = "nginx"
    end
    for _, mod in ipairs { "ndk_http_module.so", "ngx_http_lua_module.so" } do
        local f = io.open(MODULES .. "/" .. mod, "rb")
        if f then
            f:close()
        else
            missing[#missing + 1] = MODULES .. "/" .. mod
        end
    end
    if #missing > 0 then
        return false, "not installed: " .. table.concat(missing, ", ")
            .. " (Debian nginx and libnginx-mod-http-lua; tools/install-deps installs them)"
    end
    return true
end

--- For a `describe` that needs nginx: true when it is there; otherwise a
-- test that fails with what is missing is added in its place, and false
-- (the suite must not pass by skipping what it could not run).
--     describe("... #nginx", function()
--         if not nginx.need() then return end
--         ...
function M.need()
    local ok, why = M.available()
    if not ok then
        require("busted").it("needs nginx with lua-nginx-module", function()
            error(why, 0)
        end)
    end
    return ok
end

--- The frame of a `describe` that needs nginx and the fake: a fake
-- started with `fake_opts`, then nginx with `start(srv)` (the options of
-- `M.start`), both stopped at the end; `bind(srv, ngx)` receives them.
-- False (and a failing test in place) when nginx is not installed.
function M.suite(fake_opts, start, bind)
    if not M.need() then
        return false
    end
    local busted = require "busted"
    local srv, server
    busted.setup(function()
        srv = support.fake(fake_opts)
        server = M.start(start(srv))
        bind(srv, server)
    end)
    busted.teardown(function()
        if server then
            server:stop()
        end
        srv:stop()
    end)
    return true
end

local Nginx = {}
Nginx.__index = Nginx

-- The tree's LuaJIT build: the first relative entry of this process's C
-- path when busted was given one (--cpath=build/xyz/?.so), else build/luajit.
local function tree_cpath(root)
    local first = package.cpath:match("^([^;]*)")
    if first and first:match("^build/") then
        return root .. first .. ";;"
    end
    return root .. "build/luajit/?.so;;"
end

--- Start nginx with `workers` worker processes and `locations` (text put
-- inside the server block).  `http` is extra text for the http block;
-- `cpath` replaces the C module path (the tree's LuaJIT build by default:
-- the one busted's --cpath names, else build/luajit).
function M.start(opts)
    local root = select(2, sh("pwd")):gsub("%s+$", "") .. "/"
    local prefix = support.tmpdir()
    for _, d in ipairs { "conf", "logs", "tmp" } do
        assert(os.execute("mkdir -p " .. prefix .. "/" .. d))
    end
    local port = M.free_port()
    local is_root = select(2, sh("id -u")):match("^0%s") ~= nil
    local conf = table.concat({
        "load_module " .. MODULES .. "/ndk_http_module.so;",
        "load_module " .. MODULES .. "/ngx_http_lua_module.so;",
        is_root and "user root;" or "",
        "worker_processes " .. (opts.workers or 1) .. ";",
        "daemon on;",
        "pid " .. prefix .. "/logs/nginx.pid;",
        "error_log " .. prefix .. "/logs/error.log info;",
        "events { worker_connections 256; }",
        "http {",
        "  access_log off;",
        "  client_body_temp_path " .. prefix .. "/tmp/body;",
        "  proxy_temp_path " .. prefix .. "/tmp/proxy;",
        "  fastcgi_temp_path " .. prefix .. "/tmp/fastcgi;",
        "  uwsgi_temp_path " .. prefix .. "/tmp/uwsgi;",
        "  scgi_temp_path " .. prefix .. "/tmp/scgi;",
        "  lua_package_path '" .. root .. "lua/?.lua;" .. root .. "lua/?/init.lua;;';",
        "  lua_package_cpath '" .. (opts.cpath or tree_cpath(root)) .. "';",
        "  lua_shared_dict wolkvox 1m;",
        "  lua_shared_dict results 1m;",
        opts.http or "",
        "  server {",
        "    listen 127.0.0.1:" .. port .. " reuseport;",
        opts.locations,
        "  }",
        "}",
    }, "\n")
    local f = assert(io.open(prefix .. "/conf/nginx.conf", "w"))
    f:write(conf)
    f:close()
    local ok, out = sh("nginx -p " .. prefix .. " -c " .. prefix .. "/conf/nginx.conf -e "
        .. prefix .. "/logs/error.log")
    assert(ok, "nginx did not start: " .. out .. "\n" .. conf)
    local self = setmetatable({ prefix = prefix, port = port, url = "http://127.0.0.1:" .. port }, Nginx)
    for _ = 1, 100 do -- wait for the listener
        local c = socket.connect("127.0.0.1", port)
        if c then
            c:close()
            return self
        end
        socket.sleep(0.02)
    end
    self:stop()
    error("nginx did not listen on " .. port .. ": " .. self:errors())
end

--- GET `path`: status and body.
function Nginx:get(path, timeout)
    local http = require "socket.http"
    http.TIMEOUT = timeout or 30
    local body, status = http.request(self.url .. path)
    return status, body
end

--- The error log.
function Nginx:errors()
    local f = io.open(self.prefix .. "/logs/error.log", "r")
    local s = f and f:read("*a") or ""
    if f then
        f:close()
    end
    return s
end

--- The size of the error log in bytes (0 when there is none yet).
function Nginx:log_size()
    local f = io.open(self.prefix .. "/logs/error.log", "rb")
    if not f then
        return 0
    end
    local n = f:seek("end")
    f:close()
    return n or 0
end

function Nginx:stop()
    local f = io.open(self.prefix .. "/logs/nginx.pid", "r")
    if f then
        local pid = f:read("*l")
        f:close()
        sh("kill -QUIT " .. pid)
        for _ = 1, 100 do
            if not support.alive(pid) then
                return
            end
            socket.sleep(0.02)
        end
        -- A graceful stop waits for every request: a handler that never
        -- ends would keep its worker (and its error log) growing.  The
        -- daemon's master leads the process group of its workers.
        sh("kill -s KILL -- -" .. pid)
    end
end

return M
