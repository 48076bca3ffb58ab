-- bench/users.lua: what a user waits for, measured as a user runs it.
--
-- One answer of 59,000 cdr_1 rows (about 28 MB of JSON, 4 MB gzipped) is made
-- once by the fake server and then served by a static nginx on loopback, so
-- the server's own work (making rows, compressing) is not charged to any
-- client:
--   gz     precompressed (gzip_static): a client that asks for gzip gets it
--   id     identity: no gzip at all
--   slow   precompressed over a 100 Mbit/s link (limit_rate 12500k)
-- Every client is a fresh process (a cron job is one), run RUNS times per
-- case, in rounds (each round runs every case once, so a change in the
-- machine's load falls on all alike); each figure is the median wall time,
-- CPU time and peak RSS (python3's clock and wait4, to the microsecond),
-- side by side in one run:
--   lua-wolkvox 5.4    wolkvox.new{...}:cdr_1{...}: libcurl + the C decoder
--   lua-wolkvox LuaJIT the same on LuaJIT (the OpenResty engine)
--   LuaSocket+cjson    socket.http.request, then cjson.decode (5.4, LuaJIT)
--   Python             urllib + json
--   PHP                curl + json_decode (the vendor's own example)
--   curl               transfer only (--compressed -o /dev/null): the floor
-- and the export cases (5.4): c:export to CSV over 1 and 6 windows of 59,000
-- rows (rows wait on disk: flat memory), the same holding each window in
-- memory (spool_dir = false), the command line's `wolkvox report` over the 6 to CSV and to NDJSON,
-- each() through a writer, and curl fetching the 6 answers one after another
-- (the transfer floor of that job).
--   make bench, or: lua5.4 bench/users.lua [RUNS [PATTERN [SHAPE]]]   (needs
--   nginx, python3; PATTERN: only the clients whose name contains it, "" for
--   all; SHAPE: "fake", the fake server's rows (the default), or "realistic",
--   rows shaped like real call detail from bench/realistic.lua)
local fake = require "wolkvox.fake"
local core = require "wolkvox.core"
local socket = require "socket"

local RUNS = tonumber(arg and arg[1]) or 7
local ONLY = arg and arg[2] ~= "" and arg[2] or nil
local SHAPE = arg and arg[3] or "fake"
local ROWS = 59000
assert(SHAPE == "fake" or SHAPE == "realistic", "SHAPE: fake or realistic")

local common = dofile("bench/common.lua")
local sh, write, median = common.sh, common.write, common.median

local function have(cmd)
    return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end


local root = sh("pwd"):gsub("%s+$", "")
local dir = sh("mktemp -d"):gsub("%s+$", "")

-- ---- the answer, made once --------------------------------------------------

local res = { body = SHAPE == "realistic" and dofile("bench/realistic.lua").answer { rows = ROWS, seed = 1 } }
if SHAPE == "fake" then
    local srv = fake.spawn { rows_per_day = ROWS }
    local s = core.session { token = srv.token, timeout = 120 }
    res = s:request { url = srv.url .. "/api/v2/reports_manager.php?api=cdr_1"
        .. "&date_ini=20260105000000&date_end=20260105235959", decode = false }
    s:close()
    srv:stop()
    assert(res.status == 200 and res.body, "the fake did not answer")
end
os.execute("mkdir -p " .. dir .. "/www")
write(dir .. "/www/cdr.json", res.body)
assert(os.execute("gzip -9 -n -k " .. dir .. "/www/cdr.json"))
local size = #res.body
local gz_size = tonumber(sh("stat -c %s " .. dir .. "/www/cdr.json.gz"))

-- ---- a static nginx ------------------------------------------------------------

-- Every path answers the one file, as the API answers every window.
local base = common.static_nginx(dir, {
    "location /gz/ { gzip_static on; try_files /cdr.json =404; }",
    "location /id/ { gzip_static off; try_files /cdr.json =404; }",
    "location /slow/ { gzip_static on; limit_rate 12500k; try_files /cdr.json =404; }",
})

-- ---- the clients ------------------------------------------------------------------

local WOLKVOX = [[
local c = assert(require("wolkvox").new { base_url = %q, token = "bench", state_dir = false })
local rows = assert(c:cdr_1 { from = "2026-01-05", to = "2026-01-05" })
assert(#rows == %d)
]]
local SOCKET = [[
local http, ltn12, cjson = require "socket.http", require "ltn12", require "cjson"
local parts = {}
local _, status = http.request { url = %q, sink = ltn12.sink.table(parts) }
assert(status == 200)
assert(#cjson.decode(table.concat(parts)).data == %d)
]]
local PYTHON = [[
import json, urllib.request
with urllib.request.urlopen(%q) as r:
    assert len(json.loads(r.read())["data"]) == %d
]]
local PHP = [[<?php
$c = curl_init(%q);
curl_setopt($c, CURLOPT_RETURNTRANSFER, true);
curl_setopt($c, CURLOPT_ENCODING, "");
$v = json_decode(curl_exec($c), true);
if (count($v["data"]) != %d) exit(1);
]]
local EACH = [[
local export = require "wolkvox.export"
local c = assert(require("wolkvox").new { base_url = %q, token = "bench", state_dir = false })
local f = assert(io.open("/dev/null", "wb"))
local w = assert(export.writer("csv", f, { columns = export.columns("cdr_1") }))
-- Six months: six 31-day windows, each answered with the same 59,000 rows.
for row in c:each("cdr_1", { from = "2026-01-01", to = "2026-06-30" }) do assert(w:write(row)) end
assert(w:close())
]]
local EXPORT = [[
local c = assert(require("wolkvox").new { base_url = %q, token = "bench", state_dir = false, spool_dir = %s })
assert(c:export("cdr_1", { from = "2026-01-01", to = %q }, { format = "csv", output = "/dev/null" }))
]]

local LUA54 = "env LUA_PATH_5_4='" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;' LUA_CPATH_5_4='"
    .. root .. "/build/5.4/?.so;;' lua5.4"
local JIT = "env LUA_PATH='" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;' LUA_CPATH='"
    .. root .. "/build/luajit/?.so;;' luajit"

local function script(name, text)
    local path = dir .. "/" .. name
    write(path, text)
    return path
end

local cases = {}
local function case(name, where, cmd)
    cases[#cases + 1] = { name = name, where = where, cmd = cmd }
end

for _, where in ipairs { "gz", "id", "slow" } do
    local url = base .. "/" .. where .. "/api/v2/reports_manager.php"
    case("lua-wolkvox 5.4", where, LUA54 .. " " .. script("w54-" .. where .. ".lua",
        WOLKVOX:format(base .. "/" .. where, ROWS)))
    if have("luajit") then
        case("lua-wolkvox LuaJIT", where, JIT .. " " .. script("wjit-" .. where .. ".lua",
            WOLKVOX:format(base .. "/" .. where, ROWS)))
    end
    case("LuaSocket+cjson 5.4", where, "lua5.4 " .. script("s54-" .. where .. ".lua", SOCKET:format(url, ROWS)))
    if have("luajit") then
        case("LuaSocket+cjson LuaJIT", where, "luajit " .. script("sjit-" .. where .. ".lua",
            SOCKET:format(url, ROWS)))
    end
    if have("python3") then
        case("Python urllib+json", where, "python3 " .. script("p-" .. where .. ".py", PYTHON:format(url, ROWS)))
    end
    if have("php") then
        case("PHP curl+json_decode", where, "php " .. script("php-" .. where .. ".php", PHP:format(url, ROWS)))
    end
    case("curl --compressed (floor)", where, "curl -s --compressed -o /dev/null " .. url)
end
case("export -> CSV, 1 window", "gz", LUA54 .. " " .. script("export1.lua",
    EXPORT:format(base .. "/gz", "nil", "2026-01-31")))
case("export -> CSV, 6 windows", "gz", LUA54 .. " " .. script("export6.lua",
    EXPORT:format(base .. "/gz", "nil", "2026-06-30")))
case("export -> CSV, 6 windows, in memory", "gz", LUA54 .. " " .. script("export6m.lua",
    EXPORT:format(base .. "/gz", "false", "2026-06-30")))
-- The same job through the installed command, as a cron line runs it: it goes
-- through c:export (issue #21: at most 1.1x the library's time).
case("wolkvox report -> CSV, 6 windows (CLI)", "gz", "env WOLKVOX_TOKEN=bench " .. LUA54 .. " " .. root
    .. "/bin/wolkvox --base-url " .. base .. "/gz --state-dir " .. dir .. "/cli-state --quiet report cdr_1 "
    .. "--from 2026-01-01 --to 2026-06-30 --output /dev/null")
case("wolkvox report -> NDJSON, 6 windows (CLI)", "gz", "env WOLKVOX_TOKEN=bench " .. LUA54 .. " " .. root
    .. "/bin/wolkvox --base-url " .. base .. "/gz --state-dir " .. dir .. "/cli-state --quiet report cdr_1 "
    .. "--from 2026-01-01 --to 2026-06-30 --format ndjson --output /dev/null")
case("each() -> writer -> CSV, 6 windows", "gz", LUA54 .. " " .. script("each6.lua", EACH:format(base .. "/gz")))
case("curl --compressed x6, one after another", "gz", "sh -c 'for i in 1 2 3 4 5 6; do curl -s --compressed "
    .. "-o /dev/null " .. base .. "/gz/api/v2/reports_manager.php; done'")

-- ---- running ------------------------------------------------------------------------

print(string.format("lua-wolkvox benchmarks: %d rows (%s), %.1f MB of JSON (%.1f MB gzipped); "
    .. "median of %d fresh processes each, run in rounds (each round runs every client once); %s", ROWS, SHAPE,
    size / 1e6, gz_size / 1e6, RUNS, os.date("!%Y-%m-%d %H:%M UTC")))
print(string.format("machine: %s, %s cores", sh("uname -m"):gsub("%s+$", ""), sh("nproc"):gsub("%s+$", "")))
print()
local chosen, cmds = {}, {}
for _, c in ipairs(cases) do
    if not ONLY or c.name:find(ONLY, 1, true) then
        chosen[#chosen + 1], cmds[#cmds + 1] = c, c.cmd
    end
end
local got = common.rounds(cmds, RUNS)
print(string.format("%-40s %-5s %9s %9s %9s %8s", "client", "serve", "wall s", "CPU s", "peak MB", "vs 5.4"))
local ours, by = {}, {}
for i, c in ipairs(chosen) do
    local r = got[i]
    by[c.name .. " " .. c.where] = r.wall
    if r.failed then
        print(string.format("%-40s %-5s failed: %s", c.name, c.where, r.failed:sub(1, 200)))
    else
        if c.name == "lua-wolkvox 5.4" then
            ours[c.where] = r.wall
        end
        local ratio = ours[c.where] and string.format("%.2fx", r.wall / ours[c.where]) or ""
        print(string.format("%-40s %-5s %9.3f %9.3f %9.1f %8s", c.name, c.where, r.wall, r.cpu, r.mb, ratio))
    end
end
-- Issue #26's yardstick: one call against LuaSocket + lua-cjson on the same VM.
local against = {}
for _, vm in ipairs { "5.4", "LuaJIT" } do
    for _, where in ipairs { "gz", "id", "slow" } do
        local a, b = by["lua-wolkvox " .. vm .. " " .. where], by["LuaSocket+cjson " .. vm .. " " .. where]
        if a and b then
            against[#against + 1] = string.format("%s %s %.2fx", vm, where, a / b)
        end
    end
end
if #against > 0 then
    print()
    print("one call, lua-wolkvox / LuaSocket + lua-cjson (wall): " .. table.concat(against, ", "))
end

-- ---- inside nginx: does the worker keep answering? ------------------------------
-- One OpenResty worker fetches the 59,000 rows (c:cdr_1 on cosockets) while
-- this process asks the same worker for /ping every 5 ms (a new connection
-- each, as a browser or a health check would); the figures are the /ping
-- latencies over RUNS fetches one after another (p50, p99, the worst, and
-- how many took over 50 ms), the worker's peak RSS (VmHWM) and the median
-- time of a fetch (to within a ping: its end is seen between two), each
-- case in an nginx of its own:
--   gz, id        the cosocket transport as shipped (gc_hold: the worker's
--                 collector waits while the rows are made)
--   gz, no hold   the same with gc_hold = false: what it saves
--   gz, curl      the blocking libcurl transport in the worker (a control)
local MODULES = "/usr/lib/nginx/modules"
local function ping_bench()
    if ONLY and not ("nginx /ping"):find(ONLY, 1, true) then
        return
    end
    if not io.open(MODULES .. "/ngx_http_lua_module.so", "rb") or not have("luajit") then
        print("nginx /ping: skipped (no lua-nginx-module or luajit)")
        return
    end
    local function ping(port)
        local t0 = socket.gettime()
        local so = assert(socket.connect("127.0.0.1", port))
        so:send("GET /ping HTTP/1.0\r\n\r\n")
        so:receive("*a")
        so:close()
        return socket.gettime() - t0
    end
    -- An nginx with one worker on a free port: its port, its directory, its
    -- worker's pid; nil when it did not start.
    local function start(name)
        local lport = common.free_port()
        local ldir = dir .. "/lua-" .. name
        os.execute("mkdir -p " .. ldir .. "/logs " .. ldir .. "/tmp")
        write(ldir .. "/nginx.conf", table.concat({
            "load_module " .. MODULES .. "/ndk_http_module.so;",
            "load_module " .. MODULES .. "/ngx_http_lua_module.so;",
            common.sh("id -u"):match("^0%s") and "user root;" or "",
            "worker_processes 1; daemon on; pid " .. ldir .. "/nginx.pid; error_log " .. ldir .. "/error.log;",
            "events { worker_connections 64; }",
            "http {",
            "  access_log off;",
            "  client_body_temp_path " .. ldir .. "/tmp; proxy_temp_path " .. ldir .. "/tmp;",
            "  fastcgi_temp_path " .. ldir .. "/tmp; uwsgi_temp_path " .. ldir .. "/tmp;",
            "  scgi_temp_path " .. ldir .. "/tmp;",
            "  lua_package_path '" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;';",
            "  lua_package_cpath '" .. root .. "/build/luajit/?.so;;';",
            "  lua_shared_dict wolkvox 1m;",
            "  server {",
            "    listen 127.0.0.1:" .. lport .. ";",
            "    location = /ping { content_by_lua_block { ngx.say('pong') } }",
            "    location /fetch/ { content_by_lua_block {",
            "      local where, transport, hold = ngx.var.uri:match('^/fetch/(%w+)/(%w+)/?(%w*)$')",
            "      local c = assert(require('wolkvox').new { base_url = '" .. base .. "/' .. where,",
            "        token = 'bench', state_dir = false, transport = transport, gc_hold = hold ~= 'nohold' })",
            "      local rows = assert(c:cdr_1 { from = '2026-01-05', to = '2026-01-05' })",
            "      ngx.say(#rows)",
            "    } }",
            "  }",
            "}",
        }, "\n"))
        if not os.execute("nginx -p " .. ldir .. " -c " .. ldir .. "/nginx.conf -e " .. ldir .. "/error.log") then
            return nil
        end
        socket.sleep(0.3)
        local master = sh("cat " .. ldir .. "/nginx.pid"):match("%d+")
        local worker = master and sh("pgrep -P " .. master):match("%d+")
        return lport, ldir, worker
    end
    print()
    print(string.format("%-44s %7s %7s %7s %7s %6s %8s %7s", "inside nginx: /ping while the worker fetches",
        "p50 ms", "p99 ms", "worst", ">50 ms", "pings", "worker MB", "fetch s"))
    for _, it in ipairs { { "gz", "ngx", "" }, { "id", "ngx", "" }, { "gz", "ngx", "nohold" },
        { "gz", "curl", "" } } do
        local name = it[1] .. "-" .. it[2] .. "-" .. it[3]
        local lport, ldir, worker = start(name)
        if not lport then
            print("nginx /ping: the OpenResty worker did not start")
            return
        end
        local lat, over, took = {}, 0, {}
        for r = 1, RUNS do
            local t0 = socket.gettime()
            -- The fetch runs in the background; its curl writes a file when answered.
            local mark = ldir .. "/done-" .. r
            os.execute("(curl -s -o /dev/null http://127.0.0.1:" .. lport .. "/fetch/" .. it[1] .. "/" .. it[2]
                .. "/" .. it[3] .. "; echo > " .. mark .. ") &")
            socket.sleep(0.02)
            local t_end = socket.gettime() + 30
            repeat
                local t = ping(lport)
                lat[#lat + 1] = t
                over = over + (t > 0.05 and 1 or 0)
                socket.sleep(0.005)
            until io.open(mark, "r") or socket.gettime() > t_end
            took[r] = socket.gettime() - t0
        end
        local hwm = worker and sh("grep VmHWM /proc/" .. worker .. "/status"):match("(%d+)")
        os.execute("kill $(cat " .. ldir .. "/nginx.pid) 2>/dev/null")
        table.sort(lat)
        local label = "cdr_1 59k rows, " .. it[1] .. ", " .. it[2] .. (it[3] ~= "" and (", " .. it[3]) or "")
        print(string.format("%-44s %7.1f %7.1f %7.1f %7d %6d %8.0f %7.2f", label, lat[math.ceil(#lat / 2)] * 1000,
            lat[math.ceil(#lat * 0.99)] * 1000, lat[#lat] * 1000, over, #lat, (tonumber(hwm) or 0) / 1024,
            median(took)))
    end
end
ping_bench()

common.stop(dir)
socket.sleep(0.2)
os.execute("rm -rf " .. dir)
