-- Shared helpers for the specs: a fake wolkvox server in a child process and
-- clients pointed at it.  Nothing here replaces library code.
local fake = require "wolkvox.fake"
local wolkvox = require "wolkvox"

local M = {}

-- WOLKVOX_GC_STRESS=1 makes the collector run as often as it can, to flush
-- out __gc mistakes (used by the sanitizer runs).
if os.getenv("WOLKVOX_GC_STRESS") == "1" then
    collectgarbage("setpause", 0)
end

--- A fresh state directory (quota ledger, pacing locks) for this run.
function M.tmpdir()
    local p = io.popen("env -u LD_PRELOAD mktemp -d")
    local dir = p:read("*l")
    p:close()
    return dir
end
M.state_dir = M.tmpdir()

--- `s` quoted for sh.
function M.q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Run `cmd` with sh, without the sanitizer's preload: its exit code and
-- its output (stdout and stderr together).
function M.sh(cmd)
    local p = assert(io.popen("env -u LD_PRELOAD sh -c " .. M.q(cmd) .. " 2>&1; echo \" $?\""))
    local out = p:read("*a")
    p:close()
    local text, code = out:match("^(.-) (%d+)%s*$")
    return tonumber(code), text
end

--- A tmpfs mounted on a fresh directory (mode 0700): `opts` its mount
-- options ("size=1m", "size=1m,nr_inodes=2"), filled to its last byte when
-- `full`; or nil and why not (mounting needs root).
function M.tmpfs(opts, full)
    local dir = M.tmpdir()
    local code, why = M.sh("mount -t tmpfs -o " .. opts .. ",mode=0700 tmpfs " .. M.q(dir))
    if code ~= 0 then
        os.remove(dir)
        return nil, why
    end
    if full then
        M.sh("cat /dev/zero > " .. M.q(dir .. "/fill")) -- fails once the disk is full
    end
    return dir
end

--- Inside a test: a `tmpfs(opts, full)` unmounted when the test ends
-- (through the test's own `finally`, given), or nil with the test marked
-- pending (through the test's own `pending`, given: busted's module
-- function of that name marks nothing) where it cannot be mounted.
function M.disk(opts, full, finally, pending)
    local dir, why = M.tmpfs(opts, full)
    if not dir then
        pending("cannot mount a tmpfs here: " .. tostring(why))
        return nil
    end
    finally(function() M.unmount(dir) end)
    return dir
end

--- Unmount a `tmpfs` and remove its directory.
function M.unmount(dir)
    M.sh("umount " .. M.q(dir) .. " && rmdir " .. M.q(dir))
end

--- The content of file `path`, or nil when it cannot be opened.
function M.slurp(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

--- Write file `path` (LuaJIT's file:write gives true, not the file: no chaining).
function M.spit(path, ...)
    local f = assert(io.open(path, "w"))
    f:write(...)
    f:close()
end

--- The content of file `path`; raises when it cannot be read.
function M.read(path)
    return assert(M.slurp(path), "cannot read " .. tostring(path))
end

--- The `package.cpath` of a child Lua process of this flavour, started
-- without the sanitizer's preload: the plain build instead of the ASan one.
function M.child_cpath()
    return (package.cpath:gsub("build/asan/", "build/5.4/"))
end

--- The command that runs a child Lua process of this flavour, with the
-- tree's modules and the C module path this process was given (busted's
-- --cpath).  The sanitizer's preload is not passed on: it is for this
-- process, and LeakSanitizer would abort children that exit without closing.
function M.lua_command(code)
    local interp = jit and "luajit" or "lua5.4"
    local cpath = M.child_cpath()
    local prelude = string.format("package.path = %q .. package.path; package.cpath = %q; ",
        "lua/?.lua;lua/?/init.lua;spec/?.lua;", cpath)
    return "exec env -u LD_PRELOAD " .. interp .. " -e '" .. prelude .. code:gsub("'", "'\\''") .. "'"
end

--- Like `lua_command`, but the child keeps this run's instrumentation:
-- under `spec/run asan` it runs the ASan build with the sanitizer preloaded
-- (leak checks off: a child may exit without closing), under `spec/run
-- valgrind` it runs under memcheck (exit status 99 on an error).  For specs
-- whose point is what the sanitizers see, in a process of their own.
function M.checked_command(code)
    local flavour = os.getenv("WOLKVOX_FLAVOUR")
    local preload = os.getenv("LD_PRELOAD")
    local prelude = string.format("package.path = %q .. package.path; package.cpath = %q; ",
        "lua/?.lua;lua/?/init.lua;spec/?.lua;", package.cpath)
    local body = "-e '" .. (prelude .. code):gsub("'", "'\\''") .. "'"
    if flavour == "asan" and preload then
        return "exec env LD_PRELOAD='" .. preload .. "' ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 lua5.4 " .. body
    elseif flavour == "valgrind" then
        return "exec env -u LD_PRELOAD valgrind -q --error-exitcode=99 --suppressions=spec/valgrind.supp lua5.4 "
            .. body
    end
    return M.lua_command(code)
end

--- `lua_command(code)` under an address-space limit of `kb` KiB.  The
-- shell that sets the limit is started without the sanitizer's preload
-- too: ASan's runtime cannot map its shadow memory under such a limit.
function M.limited_command(kb, code)
    local inner = "ulimit -v " .. math.floor(kb) .. "; " .. M.lua_command(code)
    return "exec env -u LD_PRELOAD sh -c '" .. inner:gsub("'", "'\\''") .. "'"
end

-- The socket inodes of the fd listing `out` (of ls -l /proc/PID/fd).
local function socket_set(out)
    local set = {}
    for inode in out:gmatch("socket:%[(%d+)%]") do
        set[inode] = true
    end
    return set
end

local function capture(cmd)
    local p = assert(io.popen("env -u LD_PRELOAD " .. cmd))
    local out = p:read("*a")
    p:close()
    return out
end

-- `ls FLAGS` of this process's descriptors (/proc/self would be ls's own).
local function own_fds(flags)
    local pid = M.read("/proc/self/stat"):match("^(%d+)")
    return capture("ls " .. flags .. " /proc/" .. pid .. "/fd 2>/dev/null")
end

--- The inodes (strings) of this process's TCP connections to loopback
-- port `port`, from /proc/net/tcp and /proc/self/fd.
function M.connections_to(port)
    local mine = socket_set(own_fds("-l"))
    local found = {}
    for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
        for line in (M.slurp(file) or ""):gmatch("[^\n]+") do
            local rem, inode = line:match("^%s*%d+: %x+:%x+ %x+:(%x+) %x+ %S+ %S+ %S+ +%d+ +%d+ +(%d+)")
            if rem and tonumber(rem, 16) == port and mine[inode] then
                found[#found + 1] = inode
            end
        end
    end
    return found
end

--- Check that this process holds a connection to loopback port `port` and
-- that a program started now does not inherit it (`what` names the peer).
function M.not_inherited(port, what)
    local open = M.connections_to(port)
    assert(#open >= 1, "this process has no connection to " .. what)
    local child = socket_set(capture("ls -l /proc/self/fd"))
    for _, inode in ipairs(open) do
        assert(not child[inode], "a program started by this process inherited its connection to " .. what)
    end
    return #open
end

--- True while process `pid` exists (a zombie counts as gone).
function M.alive(pid)
    local f = io.open("/proc/" .. tostring(pid) .. "/stat", "r")
    if not f then
        return false
    end
    local stat = f:read("*l") or ""
    f:close()
    return not stat:match("^%d+ %b() Z")
end

--- Poll `pred()` every 15 ms until it gives a true value, and give that
-- value: for a test that waits until something has happened (a process
-- started, a request reached the server, a file or a lock is there), in
-- place of a fixed sleep.  After `timeout` seconds (default 10) the test
-- fails, naming `what` it waited for.
function M.wait_for(pred, timeout, what)
    local core = require "wolkvox.core"
    timeout = timeout or 10
    local deadline = core.now() + timeout
    while true do
        local v = pred()
        if v then
            return v
        end
        if core.now() >= deadline then
            error("timed out after " .. tostring(timeout) .. "s waiting for " .. tostring(what or "a condition"), 2)
        end
        core.sleep(0.015)
    end
end

--- The command `cmd` (a shell command, "exec " in front or not) killed
-- after `limit` seconds (default 120): a child that hangs (a lease or a
-- reply that never comes) then ends, and its output ends with a line
-- saying so, instead of a read of it blocking until spec/run's limit.
-- Its exit status is the command's (137 when it was killed).
function M.timed(cmd, limit)
    limit = limit or 120
    local body = "timeout -s KILL " .. limit .. " " .. cmd:gsub("^exec ", "") .. "; s=$?; "
        .. "if [ $s -eq 137 ] || [ $s -eq 124 ]; then echo \"killed after " .. limit
        .. " s: a hang? (spec time bound)\"; fi; exit $s"
    return "env -u LD_PRELOAD sh -c " .. M.q(body)
end

--- bin/wolkvox against the fake server `srv`, as a user runs it (no
-- preload, none of the caller's WOLKVOX_* settings, the fake's token in
-- WOLKVOX_TOKEN): its exit code, stdout and stderr.  `opts`: `home` (HOME),
-- `state_dir` (--state-dir), `env` (more NAME=VALUE words, quoted),
-- `limit` (seconds before it is killed, default 120).
function M.wolkvox(srv, argv, opts)
    opts = opts or {}
    local out, err = os.tmpname(), os.tmpname()
    local cmd = "env -u LD_PRELOAD -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE -u WOLKVOX_SERVER"
        .. (opts.home and (" HOME=" .. M.q(opts.home)) or "") .. " WOLKVOX_TOKEN=" .. srv.token
        .. " " .. (opts.env or "") .. " lua5.4 bin/wolkvox --base-url " .. srv.url
        .. (opts.state_dir and (" --state-dir " .. M.q(opts.state_dir)) or "") .. " " .. argv
        .. " >" .. out .. " 2>" .. err
    local p = io.popen(M.timed(cmd, opts.limit or 120) .. "; echo $?")
    local code = tonumber(p:read("*a"):match("(%d+)%s*$"))
    p:close()
    local o, e = M.slurp(out), M.slurp(err)
    os.remove(out)
    os.remove(err)
    return code, o, e
end

--- The value of the sample `name` with `labels` (a subset) in the
-- Prometheus text `text` (`wolkvox.out.metrics.parse`), or nil.
function M.metric(text, name, labels)
    for _, s in ipairs(require("wolkvox.out.metrics").parse(text)) do
        if s.name == name then
            local all = true
            for k, v in pairs(labels or {}) do
                all = all and s.labels[k] == v
            end
            if all then
                return s.value
            end
        end
    end
    return nil
end

--- The contents of a /proc file of `pid` (NULs as spaces), or nil.
function M.proc(pid, what)
    local f = io.open("/proc/" .. tostring(pid) .. "/" .. what, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return (s:gsub("%z", " "))
end

--- Start a fake server for one spec file.  The child inherits this
-- process's open files: a spec that leaks them (an io.open never closed in a
-- wait loop) is caught here, by name, before it breaks a fake.
function M.fake(opts)
    opts = opts or {}
    local _, open = own_fds("-1"):gsub("\n", "")
    assert(open < 256, "this spec process has " .. tostring(open) .. " descriptors open: a leak in the specs")
    opts.lua = opts.lua or "env -u LD_PRELOAD lua5.4"
    opts.cpath = opts.cpath or "build/5.4/?.so"   -- the plain build: no preload in the child
    return fake.spawn(opts)
end

--- A client for the fake server `srv`, with extra options.
function M.client(srv, opts)
    local o = { base_url = srv.url, token = srv.token, state_dir = M.state_dir }
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    return assert(wolkvox.new(o))
end

--- The usual frame of a spec file: a fake server and a client for the whole
-- `describe`, the fake reset before each test; `bind(srv, c)` receives them.
function M.suite(fake_opts, client_opts, bind)
    local busted = require "busted"
    local srv, c
    busted.setup(function()
        srv = M.fake(fake_opts)
        c = M.client(srv, client_opts)
        bind(srv, c)
    end)
    busted.teardown(function()
        c:close()
        srv:stop()
    end)
    busted.before_each(function() srv:control("reset") end)
end

--- Queue faults on the fake.
function M.faults(srv, list)
    srv:control("faults", { faults = list })
end

--- The fake's log entries for api `name`.
function M.calls(srv, name)
    local out = {}
    for _, entry in ipairs(srv:log()) do
        if name == nil or entry.api == name then
            out[#out + 1] = entry
        end
    end
    return out
end

--- Read each pipe of `pipes` to its end and close it: their outputs.
function M.read_all(pipes)
    local out = {}
    for i, p in ipairs(pipes) do
        out[i] = p:read("*a")
        p:close()
    end
    return out
end

--- True when the fake saw more than 2 calls of a token in flight (or
-- refused one for it) since its last reset.
function M.exceeded(srv)
    for _, entry in ipairs(srv:log()) do
        if entry.refused == "concurrency" or entry.inflight > 2 then
            return true
        end
    end
    return false
end

--- Ctrl-C as the standalone interpreter delivers it: a hook that raises
-- "interrupted!" at the next call, here when `target` is called (a C
-- function inside the library's pcall, say).  Runs `f` with that hook:
-- pcall's results.
function M.interrupted_at(target, f)
    debug.sethook(function()
        if debug.getinfo(2, "f").func == target then
            debug.sethook()
            error("interrupted!")
        end
    end, "c")
    local ok, err = pcall(f)
    debug.sethook()
    return ok, err
end

--- Every string reachable from `v` (keys and values), for leak checks.
function M.strings(v, out, seen)
    out, seen = out or {}, seen or {}
    local t = type(v)
    if t == "string" then
        out[#out + 1] = v
    elseif t == "table" and not seen[v] then
        seen[v] = true
        for k, x in pairs(v) do
            M.strings(k, out, seen)
            M.strings(x, out, seen)
        end
        local mt = getmetatable(v)
        if mt and mt.__tostring then
            out[#out + 1] = tostring(v)
        end
    end
    return out
end

return M
