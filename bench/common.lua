--- bench/common.lua: what the benchmarks share (bench/users.lua,
-- bench/db.lua): shell helpers, a static nginx that serves answers made
-- once (so the server's own work is not charged to a client), and the
-- timing of fresh processes (in rounds, or one under GNU time).
--
--   local common = dofile("bench/common.lua")
local socket = require "socket"

local M = {}

--- The output of the shell command `cmd`.
function M.sh(cmd)
    local p = assert(io.popen(cmd, "r"))
    local out = p:read("*a")
    p:close()
    return out
end

--- Write `text` to the file `path`.
function M.write(path, text)
    local f = assert(io.open(path, "wb"))
    assert(f:write(text))
    assert(f:close())
end

--- The middle value of the numbers of `t` (sorted in place).
function M.median(t)
    table.sort(t)
    local n = #t
    return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

--- A free TCP port on 127.0.0.1.
function M.free_port()
    local so = assert(socket.bind("127.0.0.1", 0))
    local _, port = so:getsockname()
    so:close()
    return port
end

--- Start a static nginx in `dir` (its files under `dir/www`), its server
-- block holding the `locations` (lines); gives its base URL.  `stop(dir)`
-- ends it.
function M.static_nginx(dir, locations)
    local port = M.free_port()
    local is_root = M.sh("id -u"):match("^0%s") ~= nil
    local conf = {
        is_root and "user root;" or "",
        "worker_processes 1;",
        "daemon on;",
        "pid " .. dir .. "/nginx.pid;",
        "error_log " .. dir .. "/error.log;",
        "events { worker_connections 64; }",
        "http {",
        "  access_log off;",
        "  client_body_temp_path " .. dir .. "/tmp;",
        "  proxy_temp_path " .. dir .. "/tmp; fastcgi_temp_path " .. dir .. "/tmp;",
        "  uwsgi_temp_path " .. dir .. "/tmp; scgi_temp_path " .. dir .. "/tmp;",
        "  default_type application/json;",
        "  root " .. dir .. "/www;",
        "  server {",
        "    listen 127.0.0.1:" .. port .. ";",
    }
    for _, l in ipairs(locations) do
        conf[#conf + 1] = "    " .. l
    end
    conf[#conf + 1] = "  }"
    conf[#conf + 1] = "}"
    M.write(dir .. "/nginx.conf", table.concat(conf, "\n"))
    os.execute("mkdir -p " .. dir .. "/tmp")
    assert(os.execute("nginx -p " .. dir .. " -c " .. dir .. "/nginx.conf -e " .. dir .. "/error.log"),
        "nginx did not start")
    return "http://127.0.0.1:" .. port
end

--- The answers of the cdr_1 calls a six-month export makes, served by a
-- static nginx as the fake made them (so the fake's work is charged to no
-- client).  The export from `from` to each of `tos` runs against the fake
-- through `lua` (a command running Lua 5.4 with the tree's modules) from
-- `root`; the fake's log says which calls were made.  Which windows a run
-- asks after a capped answer depends a little on which of its two calls in
-- flight answers first: run a range more than once in `tos`, and a call
-- none of the runs made (rare) is answered by the fake behind nginx (its
-- requests in dir/fake.log).  Gives the base URL, the fake's handle (stop
-- it at the end), the bytes of JSON served and the number of calls.
function M.recorded_answers(opts)
    local fake, core = require "wolkvox.fake", require "wolkvox.core"
    local dir = opts.dir
    local srv = fake.spawn { rows_per_day = opts.rows_per_day }
    for _, to in ipairs(opts.tos) do
        assert(os.execute("env WOLKVOX_TOKEN=" .. srv.token .. " " .. opts.lua .. " " .. opts.root
            .. "/bin/wolkvox --base-url " .. srv.url .. " --state-dir " .. dir .. "/rec-state --quiet report cdr_1 "
            .. "--from " .. opts.from .. " --to " .. to .. " -o /dev/null"), "the recording run failed")
    end
    local calls, seen = {}, {}
    for _, e in ipairs(srv:log()) do
        local ini, fin = e.params and e.params.date_ini, e.params and e.params.date_end
        if ini and fin and not seen[ini .. "-" .. fin] then
            seen[ini .. "-" .. fin] = true
            calls[#calls + 1] = { ini = ini, fin = fin }
        end
    end
    os.execute("mkdir -p " .. dir .. "/www " .. dir .. "/tmp")
    local s = core.session { token = srv.token, timeout = 120 }
    local bytes = 0
    for _, c in ipairs(calls) do
        local res = s:request { url = srv.url .. "/api/v2/reports_manager.php?api=cdr_1&date_ini=" .. c.ini
            .. "&date_end=" .. c.fin, decode = false }
        assert(res.status == 200 and res.body, "the fake did not answer")
        local path = dir .. "/www/" .. c.ini .. "-" .. c.fin .. ".json"
        M.write(path, res.body)
        bytes = bytes + #res.body
        assert(os.execute("gzip -9 -n -k " .. path))
    end
    s:close()
    local base = M.static_nginx(dir, {
        "location /api/ { gzip_static on; try_files /$arg_date_ini-$arg_date_end.json @fake; }",
        "location @fake { access_log " .. dir .. "/fake.log; proxy_pass " .. srv.url .. "; }",
    })
    return base, srv, bytes, #calls
end

--- The two VMs the floor is measured on (bench/floor.lua, bench/breakdown.lua),
-- each with bench/c/floor.c built for it under `dir`; `vm.env(core)` is the
-- environment of a child that loads the tree's modules, floor.so and the C
-- core of directory `core` (default: the VM's build, or WV_BUILD_54 /
-- WV_BUILD_JIT).
function M.floor_vms(root, dir)
    local warn = "-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith "
        .. "-Wcast-qual -Wformat=2 -Wundef"
    local vms = {
        { name = "Lua 5.4", exe = "lua5.4", pc = "lua5.4", path_var = "LUA_PATH_5_4", cpath_var = "LUA_CPATH_5_4",
          core = os.getenv("WV_BUILD_54") or (root .. "/build/5.4") },
        { name = "LuaJIT", exe = "luajit", pc = "luajit", path_var = "LUA_PATH", cpath_var = "LUA_CPATH",
          core = os.getenv("WV_BUILD_JIT") or (root .. "/build/luajit") },
    }
    for _, vm in ipairs(vms) do
        vm.floor = dir .. "/" .. vm.pc
        os.execute("mkdir -p " .. vm.floor)
        assert(os.execute("cc -std=c99 -O2 -g -fPIC -shared " .. warn .. " $(pkg-config --cflags " .. vm.pc .. ") "
            .. root .. "/bench/c/floor.c -o " .. vm.floor .. "/floor.so"), "cannot build floor.so for " .. vm.name)
        function vm.env(core)
            return string.format("env %s='%s/lua/?.lua;%s/lua/?/init.lua;;' %s='%s/?.so;%s/?.so;;' ", vm.path_var,
                root, root, vm.cpath_var, vm.floor, core or vm.core)
        end
    end
    return vms
end

--- Stop the nginx that `static_nginx(dir, ...)` started.
function M.stop(dir)
    os.execute("kill $(cat " .. dir .. "/nginx.pid) 2>/dev/null")
end

-- The runner of M.rounds (python3: its clock and wait4 give microseconds
-- where GNU time gives hundredths of a second).
local RUNNER = [[
import os, shlex, subprocess, sys, time
runs, cmds = int(sys.argv[1]), [l.rstrip("\n") for l in open(sys.argv[2])]
for _ in range(runs):
    for i, cmd in enumerate(cmds):
        t0 = time.perf_counter()
        p = subprocess.Popen(shlex.split(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = p.stderr.read()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        if status != 0:
            print("%d failed %s" % (i + 1, err.decode(errors="replace").replace("\n", " ")[:300]), flush=True)
        else:
            print("%d %.6f %.6f %d" % (i + 1, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss), flush=True)
]]

--- Run each of the commands `cmds` (a list of strings, split as a shell
-- splits words; no shell runs them) `runs` times in fresh processes, in
-- rounds: each round runs every command once, so a change in the machine's
-- load falls on all of them alike.  Gives, per command, { wall = median
-- wall seconds, cpu = median CPU seconds (user + system), mb = median peak
-- RSS in MB }, or { failed = what it printed } when a run failed.
function M.rounds(cmds, runs)
    if #cmds == 0 then
        return {}
    end
    local dir = M.sh("mktemp -d"):gsub("%s+$", "")
    M.write(dir .. "/runner.py", RUNNER)
    M.write(dir .. "/cmds", table.concat(cmds, "\n") .. "\n")
    local out = M.sh("python3 " .. dir .. "/runner.py " .. runs .. " " .. dir .. "/cmds")
    os.execute("rm -rf " .. dir)
    local got = {}
    for i = 1, #cmds do
        got[i] = { walls = {}, cpus = {}, kbs = {} }
    end
    for line in out:gmatch("[^\n]+") do
        local i, rest = line:match("^(%d+) (.*)$")
        local g = got[tonumber(i)]
        if g and rest:match("^failed") then
            g.failed = g.failed or rest:sub(8)
        elseif g then
            local wall, cpu, kb = rest:match("^([%d%.]+) ([%d%.]+) (%d+)$")
            g.walls[#g.walls + 1], g.cpus[#g.cpus + 1], g.kbs[#g.kbs + 1] = tonumber(wall), tonumber(cpu),
                tonumber(kb)
        end
    end
    local res = {}
    for i, g in ipairs(got) do
        if g.failed or #g.walls == 0 then
            res[i] = { failed = g.failed or "no run finished" }
        else
            res[i] = { wall = M.median(g.walls), cpu = M.median(g.cpus), mb = M.median(g.kbs) / 1024 }
        end
    end
    return res
end

--- Run `cmd` once under GNU time: its wall seconds and peak RSS (KB), or
-- nil and what it printed when it failed.
function M.timed(cmd)
    local out = M.sh("/usr/bin/time -f '@@ %e %M' " .. cmd .. " 2>&1 >/dev/null")
    local wall, kb = out:match("@@ ([%d%.]+) (%d+)")
    if not wall or out:find("Command exited with non%-zero status") then
        return nil, out
    end
    return tonumber(wall), tonumber(kb)
end

return M
