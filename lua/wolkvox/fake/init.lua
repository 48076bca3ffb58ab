--- The project's fake wolkvox server, for tests, demos and offline scripts.
--
--     lua5.4 bin/wolkvox-fake --port 8089            -- from a shell
--     require("wolkvox.fake").serve { port = 8089 }  -- in a Lua process (blocks)
--     local srv = require("wolkvox.fake").spawn()    -- in a child process
--     -- srv.url, srv.token, srv:control("faults", { faults = { { status = 500 } } }), srv:stop()
--
-- It answers every endpoint of the registry over plain HTTP on loopback,
-- accepts the tokens it was given (default "test-token"), and is steered
-- through /__fake/{log,stats,reset,config,faults,shutdown} (see
-- `wolkvox.fake.api`).  LuaSocket and lua-cjson are its only dependencies.
-- @module wolkvox.fake

local socket = require "socket"
local api = require "wolkvox.fake.api"
local http = require "wolkvox.fake.http"
local loop_mod = require "wolkvox.fake.loop"

local format, tostring, tonumber = string.format, tostring, tonumber

local M = {}

M.DEFAULT_PORT = 8089
M.TOKEN = "test-token"

-- Settings given on the command line or to serve() that go to the API state.
local CONFIG_KEYS = { "tokens", "max_rows", "rows_per_day", "max_days", "concurrency_limit",
    "daily_limit", "latency", "utc_offset" }

local function alive(pid)
    local f = io.open("/proc/" .. tostring(pid) .. "/stat", "r")
    if f then
        f:close()
        return true
    end
    return false
end

--- Serve until shut down (POST /__fake/shutdown), `lifetime` seconds pass,
-- or the process `watch_pid` ends.
-- @tparam table opts `host` (default 127.0.0.1), `port` (default 8089, 0 picks
--   a free one), `tokens`, `max_rows`, `rows_per_day`, `latency`,
--   `daily_limit`, `lifetime`, `watch_pid`, `on_ready(url)`
function M.serve(opts)
    opts = opts or {}
    local host = opts.host or "127.0.0.1"
    local server = assert(socket.bind(host, opts.port or M.DEFAULT_PORT, 64))
    local loop = loop_mod.new()
    local config = {}
    for _, k in ipairs(CONFIG_KEYS) do
        config[k] = opts[k]
    end
    local state = api.new(config, loop)
    http.serve(loop, server, state:handler())
    if opts.watch_pid then
        loop:spawn(function()
            while alive(opts.watch_pid) do
                loop:sleep(1)
            end
            loop:stop()
        end)
    end
    local _, port = server:getsockname()
    local url = format("http://%s:%d", host, port)
    if opts.on_ready then
        opts.on_ready(url)
    end
    loop:run(opts.lifetime and (socket.gettime() + opts.lifetime) or nil)
    server:close()
end

-- ---- a server in a child process ------------------------------------------

local function own_pid()
    local f = io.open("/proc/self/stat", "r")
    if not f then
        return nil
    end
    local pid = tonumber((f:read("*l") or ""):match("^(%d+)"))
    f:close()
    return pid
end

-- The directory this module was loaded from, so the child finds the same code.
local function lua_root()
    local src = debug.getinfo(1, "S").source
    local dir = src:match("^@(.*)wolkvox[/\\]fake[/\\]init%.lua$")
    return dir
end

local Handle = {}
Handle.__index = Handle

local function shell_quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Start a fake server in a child process on a free loopback port.
-- @tparam[opt] table opts as for serve() (port defaults to 0), plus `lua`
--   (interpreter, default $WOLKVOX_FAKE_LUA or lua5.4)
-- @return a handle: `url`, `token`, `control(what, body)`, `log()`, `stop()`
function M.spawn(opts)
    opts = opts or {}
    local serve_opts = { port = opts.port or 0, host = opts.host or "127.0.0.1",
        watch_pid = own_pid(), lifetime = opts.lifetime or 3600 }
    for _, k in ipairs(CONFIG_KEYS) do
        serve_opts[k] = opts[k]
    end
    local root = lua_root()
    local code = {}
    if root then
        code[#code + 1] = format("package.path = %q .. package.path",
            root .. "?.lua;" .. root .. "?/init.lua;")
    end
    local args = {}
    for k, v in pairs(serve_opts) do
        if type(v) == "table" then
            local items = {}
            for i, item in ipairs(v) do
                items[i] = format("%q", item)
            end
            args[#args + 1] = format("[%q] = { %s }", k, table.concat(items, ", "))
        elseif type(v) == "string" then
            args[#args + 1] = format("[%q] = %q", k, v)
        else
            args[#args + 1] = format("[%q] = %s", k, tostring(v))
        end
    end
    code[#code + 1] = "local o = { " .. table.concat(args, ", ") .. " }"
    code[#code + 1] = "o.on_ready = function(url) io.stdout:write('wolkvox-fake listening on ', url, '\\n') "
        .. "io.stdout:flush() end"
    code[#code + 1] = "require('wolkvox.fake').serve(o)"
    local lua = opts.lua or os.getenv("WOLKVOX_FAKE_LUA") or "lua5.4"
    local cmd = "exec " .. lua .. " -e " .. shell_quote(table.concat(code, "\n"))
    local pipe = assert(io.popen(cmd, "r"))
    local line = pipe:read("*l")
    local url = line and line:match("listening on (%S+)")
    if not url then
        pipe:close()
        error("the fake wolkvox server did not start (" .. tostring(line) .. ")", 2)
    end
    return setmetatable({ url = url, token = (opts.tokens or { M.TOKEN })[1], pipe = pipe }, Handle)
end

--- Call a control endpoint: GET for log and stats, POST with a JSON body otherwise.
function Handle:control(what, body)
    local ltn12 = require "ltn12"
    local shttp = require "socket.http"
    local cjson = require "cjson"
    local out = {}
    local req = { url = self.url .. "/__fake/" .. what, sink = ltn12.sink.table(out) }
    if what ~= "log" and what ~= "stats" then
        local payload = cjson.encode(body or {})
        req.method = "POST"
        req.source = ltn12.source.string(payload)
        req.headers = { ["content-type"] = "application/json", ["content-length"] = #payload }
    end
    local ok, status = shttp.request(req)
    if not ok then
        error("fake control " .. what .. " failed: " .. tostring(status), 2)
    end
    local text = table.concat(out)
    if status ~= 200 then
        error("fake control " .. what .. " answered " .. tostring(status) .. ": " .. text, 2)
    end
    return cjson.decode(text)
end

--- The request log since the last reset.
function Handle:log()
    return self:control("log")
end

--- Shut the child down and wait for it.
function Handle:stop()
    if self.pipe then
        pcall(self.control, self, "shutdown")
        self.pipe:close()
        self.pipe = nil
    end
end

-- ---- command line -----------------------------------------------------------

local USAGE = [[
usage: wolkvox-fake [--host 127.0.0.1] [--port 8089] [--token T]... [--max-rows N]
                    [--rows-per-day N] [--latency S] [--daily-limit N] [--lifetime S]

A fake wolkvox API server for tests and offline scripts.  Point a client at it:
  wolkvox.new { base_url = "http://127.0.0.1:8089", token = "test-token" }
Control: GET /__fake/log, GET /__fake/stats, POST /__fake/{reset,config,faults,shutdown}.
]]

--- Run from the command line with the argument list `argv`.
function M.main(argv)
    local opts, tokens = {}, {}
    local numeric = { ["--port"] = "port", ["--max-rows"] = "max_rows",
        ["--rows-per-day"] = "rows_per_day", ["--latency"] = "latency",
        ["--daily-limit"] = "daily_limit", ["--lifetime"] = "lifetime", ["--watch-pid"] = "watch_pid" }
    local i = 1
    while i <= #argv do
        local a = argv[i]
        if a == "-h" or a == "--help" then
            io.stdout:write(USAGE)
            return 0
        elseif a == "--host" then
            opts.host = argv[i + 1]
        elseif a == "--token" then
            tokens[#tokens + 1] = argv[i + 1]
        elseif numeric[a] then
            local n = tonumber(argv[i + 1])
            if not n then
                io.stderr:write("wolkvox-fake: ", a, " needs a number\n", USAGE)
                return 2
            end
            opts[numeric[a]] = n
        else
            io.stderr:write("wolkvox-fake: unknown argument ", tostring(a), "\n", USAGE)
            return 2
        end
        if argv[i + 1] == nil then
            io.stderr:write("wolkvox-fake: ", a, " needs a value\n")
            return 2
        end
        i = i + 2
    end
    if #tokens > 0 then
        opts.tokens = tokens
    end
    opts.on_ready = function(url)
        -- Only the built-in test token is shown; a token given here is not echoed.
        local which = opts.tokens and (#opts.tokens .. " token(s) from --token")
            or ("token: " .. M.TOKEN)
        io.stdout:write("wolkvox-fake listening on ", url, " (", which, ")\n")
        io.stdout:flush()
    end
    M.serve(opts)
    return 0
end

return M
