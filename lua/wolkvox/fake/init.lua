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

-- Optional dependencies of the rock: say which package brings them.
for _, dep in ipairs { { "socket", "LuaSocket (Debian: lua-socket; luarocks install luasocket)" },
    { "cjson", "lua-cjson (Debian: lua-cjson; luarocks install lua-cjson)" } } do
    if not pcall(require, dep[1]) then
        error("wolkvox.fake needs " .. dep[2], 2)
    end
end

local socket = require "socket"
local api = require "wolkvox.fake.api"
local http = require "wolkvox.fake.http"
local loop_mod = require "wolkvox.fake.loop"

local format, tostring, tonumber = string.format, tostring, tonumber

local M = {}

M.DEFAULT_PORT = 8089
M.TOKEN = "test-token"

-- Settings given on the command line or to serve() that go to the API state.
local CONFIG_KEYS = { "tokens", "max_rows", "rows_per_day", "rates", "max_days", "concurrency_limit",
    "recorded_until", "daily_limit", "latency", "utc_offset", "disabled", "truncation", "chat_codes", "ips",
    "storage_files", "chat_messages", "fixtures", "licenses", "faults" }

-- The settings of `opts`: a scenario file's (`opts.scenario`), overridden
-- by the ones given directly.  Raises when the scenario cannot be used.
local function settings_of(opts, level)
    local config = {}
    if opts.scenario then
        local sc, why = api.read_scenario(opts.scenario)
        if not sc then
            error(why, level + 1)
        end
        for k, v in pairs(sc) do
            config[k] = v
        end
    end
    for _, k in ipairs(CONFIG_KEYS) do
        if opts[k] ~= nil then
            config[k] = opts[k]
        end
    end
    return config
end

-- False only when process `pid` is gone (no /proc entry): a failure to
-- open it for another reason (no descriptor left: EMFILE) is no news.
local function alive(pid)
    local f, _, code = io.open("/proc/" .. tostring(pid) .. "/stat", "r")
    if f then
        f:close()
        return true
    end
    return code ~= 2 -- ENOENT
end

-- Stop `loop` when our stdin reaches its end: the parent that spawned us
-- holds the other end of the pipe, so its exit (or crash) ends us too.
local function watch_stdin(loop)
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
end

-- What an idle timeout may be (the library's option and --idle-timeout).
local IDLE_RULE = "seconds above 0, at most 86400"
local function idle_ok(v)
    return type(v) == "number" and v == v and v > 0 and v <= 86400
end

-- Raise (at `level`) on an idle_timeout that is not IDLE_RULE.
local function check_idle(v, level)
    if v ~= nil and not idle_ok(v) then
        error("wolkvox.fake: idle_timeout: " .. IDLE_RULE .. " (got " .. tostring(v) .. ")", level + 1)
    end
end

--- Serve until shut down (POST /__fake/shutdown), `lifetime` seconds pass,
-- the process `watch_pid` ends, or (with `watch_stdin`) stdin is closed.
-- @tparam table opts `host` (default 127.0.0.1), `port` (default 8089, 0 picks
--   a free one), `scenario` (a JSON file of settings), the settings of
--   `wolkvox.fake.api` (`tokens`, `max_rows`, `rows_per_day`, `latency`,
--   `daily_limit`, `licenses`, `disabled`, `truncation`, `faults`, ...),
--   `lifetime`, `watch_pid`, `watch_stdin`, `on_ready(url)`, `idle_timeout`
--   (seconds a connection may wait for a request's next bytes before it is
--   closed, default 60); see docs/fake.md
function M.serve(opts)
    opts = opts or {}
    check_idle(opts.idle_timeout, 2)
    local config = settings_of(opts, 2)
    local host = opts.host or "127.0.0.1"
    local server = assert(socket.bind(host, opts.port or M.DEFAULT_PORT, 64))
    local loop = loop_mod.new()
    local state = api.new(config, loop)
    http.serve(loop, server, state:handler(), { idle = opts.idle_timeout })
    if opts.watch_pid then
        loop:spawn(function()
            while alive(opts.watch_pid) do
                loop:sleep(1)
            end
            loop:stop()
        end)
    end
    if opts.watch_stdin then
        watch_stdin(loop)
    end
    local _, port = server:getsockname()
    local url = format("http://%s:%d", host, port)
    if opts.on_ready then
        opts.on_ready(url)
    end
    loop:run(opts.lifetime and (socket.gettime() + opts.lifetime) or nil)
    server:close()
end

--- A fixture (a recorded answer to replay) from `answer`, the decoded JSON
-- a real server sent (the envelope, or `{ code =, msg =, data = rows }`
-- built from a client's result): personal fields replaced by "<field>",
-- `token` masked.  `opts`: `match` ("cdr_1" or "family/api"), `params` (the
-- query values a request must have), `status`, `fields` (more personal
-- names), `name`.  Put it in the `fixtures` setting (or a scenario's).
function M.fixture(answer, token, opts)
    return api.fixture_of(answer, token, opts)
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

--- The child's side of spawn(): read the settings (tokens included) from
-- the first line of stdin, serve, and end when stdin closes.
function M.child()
    local cjson = require "cjson"
    local line = io.stdin:read("*l")
    local opts = api.integral(cjson.decode(line or "{}"))
    local ready = opts.ready
    opts.ready, opts.watch_stdin = nil, true
    opts.on_ready = function(url)
        local f = assert(io.open(ready .. ".tmp", "w"))
        assert(f:write(tostring(own_pid()), " ", url, "\n"))
        assert(f:close())
        assert(os.rename(ready .. ".tmp", ready))
    end
    M.serve(opts)
end

local function read_all(path)
    local f = io.open(path, "r")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

-- Close the pipe to the child (it sees the end of its stdin and exits) and
-- wait for it.  Used by stop() and by the collector.
local function release(self)
    local pipe = self.pipe
    if pipe then
        self.pipe = nil
        pcall(pipe.close, pipe)
    end
end

--- Start a fake server in a child process on a free loopback port.
-- The settings (tokens included) reach the child through its stdin, never
-- its command line; the child ends when this process closes the pipe: on
-- stop(), when the handle is collected, or when this process exits.
-- @tparam[opt] table opts as for serve() (port defaults to 0; `idle_timeout`
--   too), plus `lua`
--   (interpreter, default $WOLKVOX_FAKE_LUA or lua5.4) and `cpath` (where
--   the child looks first for `wolkvox.core`, whose poll lifts select's
--   limit of 1024 descriptors; default: this process's `package.cpath` when
--   both are Lua 5.4)
-- @return a handle: `url`, `token`, `pid`, `control(what, body)`, `log()`, `stop()`
function M.spawn(opts)
    opts = opts or {}
    check_idle(opts.idle_timeout, 2)
    local cjson = require "cjson"
    local ready = os.tmpname()
    os.remove(ready)
    local serve_opts = { port = opts.port or 0, host = opts.host or "127.0.0.1",
        watch_pid = own_pid(), lifetime = opts.lifetime or 3600, ready = ready, idle_timeout = opts.idle_timeout }
    -- A scenario is read here (its tokens go through the pipe with the rest).
    local config = settings_of(opts, 2)
    for k, v in pairs(config) do
        serve_opts[k] = v
    end
    local root = lua_root()
    local code = {}
    if root then
        code[#code + 1] = format("package.path = %q .. package.path",
            root .. "?.lua;" .. root .. "?/init.lua;")
    end
    local lua = opts.lua or os.getenv("WOLKVOX_FAKE_LUA")
    -- The C core (for poll) from where this process found it, when the
    -- child is the same Lua; else from the child's own path.
    local cpath = opts.cpath
    if cpath == nil and lua == nil and _VERSION == "Lua 5.4" and not rawget(_G, "jit") then
        cpath = package.cpath
    end
    if cpath then
        code[#code + 1] = format("package.cpath = %q .. package.cpath", cpath .. ";")
    end
    code[#code + 1] = "require('wolkvox.fake').child()"
    lua = lua or "lua5.4"
    local cmd = "exec " .. lua .. " -e " .. shell_quote(table.concat(code, "\n"))
    local pipe = assert(io.popen(cmd, "w"))
    local self = { token = (config.tokens or { M.TOKEN })[1], pipe = pipe }
    if newproxy then -- Lua 5.1 / LuaJIT: tables have no __gc, a proxy carries it
        self.gc = newproxy(true)
        getmetatable(self.gc).__gc = function() release(self) end
    end
    setmetatable(self, Handle)
    pipe:setvbuf("no")
    pipe:write(cjson.encode(serve_opts), "\n")
    local url
    for _ = 1, 1000 do
        local s = read_all(ready)
        local pid
        pid, url = (s or ""):match("^(%d+) (%S+)\n")
        if url then
            self.pid = tonumber(pid)
            break
        end
        socket.sleep(0.01)
    end
    os.remove(ready)
    if not url then
        release(self)
        error("the fake wolkvox server did not start", 2)
    end
    self.url = url
    return self
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
        release(self)
    end
end

Handle.__gc = release -- Lua 5.2+

-- ---- command line -----------------------------------------------------------

local USAGE = [[
usage: wolkvox-fake [--host 127.0.0.1] [--port 8089] [--token T]... [--token-file F] [--max-rows N]
                    [--rows-per-day N] [--latency S] [--daily-limit N] [--lifetime S] [--scenario FILE]
                    [--idle-timeout S]

A fake wolkvox API server for tests and offline scripts.  Point a client at it:
  wolkvox.new { base_url = "http://127.0.0.1:8089", token = "test-token" }
--token-file F reads tokens one per line from F ("-": stdin), which keeps them out
of `ps` (a --token argument is visible there).
--scenario FILE loads settings, tokens and a fault script from a JSON file (docs/fake.md).
--idle-timeout S closes a connection after S seconds without a request's next bytes
(default 60; a client that keeps connections open longer between calls needs more).
Control: GET /__fake/log, GET /__fake/stats, POST /__fake/{reset,config,faults,scenario,shutdown}.
]]

--- Run from the command line with the argument list `argv`.
function M.main(argv)
    local opts, tokens = {}, {}
    local numeric = { ["--port"] = "port", ["--max-rows"] = "max_rows",
        ["--rows-per-day"] = "rows_per_day", ["--latency"] = "latency",
        ["--daily-limit"] = "daily_limit", ["--lifetime"] = "lifetime", ["--watch-pid"] = "watch_pid",
        ["--idle-timeout"] = "idle_timeout" }
    -- What each number may be: seconds and counts are finite and not negative,
    -- a port is a whole number up to 65535, an idle timeout above 0.
    local function bad_number(flag, n)
        if not n or n ~= n or n < 0 or n == math.huge then
            return "a finite number of 0 or more"
        elseif flag == "--port" and (n % 1 ~= 0 or n > 65535) then
            return "a whole number from 0 to 65535"
        elseif flag == "--idle-timeout" and not idle_ok(n) then
            return IDLE_RULE
        end
    end
    local i = 1
    while i <= #argv do
        local a = argv[i]
        if a == "-h" or a == "--help" then
            local ok, err = io.stdout:write(USAGE)
            if ok then
                ok, err = io.stdout:flush()
            end
            if not ok then
                io.stderr:write("wolkvox-fake: cannot write to stdout: ", tostring(err), "\n")
                return 1
            end
            return 0
        elseif argv[i + 1] == nil then
            io.stderr:write("wolkvox-fake: ", a, " needs a value\n")
            return 2
        elseif a == "--host" then
            opts.host = argv[i + 1]
        elseif a == "--scenario" then
            local sc, why = api.read_scenario(argv[i + 1])
            if not sc then
                io.stderr:write("wolkvox-fake: ", why, "\n")
                return 2
            end
            opts.scenario = argv[i + 1]
        elseif a == "--token" then
            tokens[#tokens + 1] = argv[i + 1]
        elseif a == "--token-file" then
            local f = argv[i + 1] == "-" and io.stdin or io.open(argv[i + 1], "r")
            if not f then
                io.stderr:write("wolkvox-fake: cannot read ", argv[i + 1], "\n")
                return 2
            end
            for t in f:lines() do
                if t ~= "" then
                    tokens[#tokens + 1] = t
                end
            end
            if f ~= io.stdin then
                f:close()
            end
        elseif numeric[a] then
            local n = tonumber(argv[i + 1])
            local why = bad_number(a, n)
            if why then
                io.stderr:write("wolkvox-fake: ", a, " needs a number: ", why, "\n", USAGE)
                return 2
            end
            opts[numeric[a]] = n
        else
            io.stderr:write("wolkvox-fake: unknown argument ", tostring(a), "\n", USAGE)
            return 2
        end
        i = i + 2
    end
    if #tokens > 0 then
        opts.tokens = tokens
    end
    local given = opts.tokens or (opts.scenario and api.read_scenario(opts.scenario).tokens)
    opts.on_ready = function(url)
        -- Only the built-in test token is shown; a token given here is not echoed.
        local which = given and (#given .. " token(s) given")
            or ("token: " .. M.TOKEN)
        local ok, err = io.stdout:write("wolkvox-fake listening on ", url, " (", which, ")\n")
        if ok then
            ok, err = io.stdout:flush()
        end
        if not ok then
            -- Whoever waits for this line to learn the URL would wait forever.
            io.stderr:write("wolkvox-fake: cannot write to stdout: ", tostring(err), "\n")
            os.exit(1)
        end
    end
    M.serve(opts)
    return 0
end

return M
