-- Hardening of the shared state and of the schedule (issue #9): state files
-- that links cannot redirect, state directories nobody else can change,
-- slots given back on every way out of a call, a deadline that bounds the
-- wait for a slot, and abandoned calls that keep their slot busy for as long
-- as the server may still run them.
local core = require "wolkvox.core"
local pacer = require "wolkvox.limits.pacer"
local schedule = require "wolkvox.call.schedule"
local support = require "support"
local wolkvox = require "wolkvox"

-- One line of a shell command's output.
local function sh(cmd)
    local p = assert(io.popen(cmd, "r"))
    local out = p:read("*a")
    p:close()
    return (out:gsub("%s+$", ""))
end

-- The mode of `path` as `stat -c %a` prints it ("600").
local function mode(path)
    return sh("stat -c %a '" .. path .. "'")
end

local function write(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
end

local read = support.read

local AS_ROOT = sh("id -u") == "0"

-- Wait until the fake has no call in flight (calls abandoned by the client
-- run on there, as at wolkvox), so the next test's reset meets none.
local function settle(srv)
    support.wait_for(function() return srv:control("stats").inflight == 0 end, 10, "the fake's calls to end")
end

-- A child Lua process of this flavour running `code`, killed after
-- `limit` seconds, so that a regression fails instead of hanging the suite.
-- `shell` runs before it (a ulimit).
local function child(code, limit, shell)
    local cmd = support.lua_command(code):gsub("^exec ", "exec timeout -s KILL " .. (limit or 30) .. " ")
    if shell then
        -- Without the sanitizer's preload in the shell too: ASan cannot map
        -- its shadow memory under a ulimit.
        cmd = "exec env -u LD_PRELOAD sh -c '" .. (shell .. cmd):gsub("'", "'\\''") .. "'"
    end
    return assert(io.popen(cmd .. " 2>&1", "r"))
end

-- A child that holds both slot files of `dir` (and prints its pid) for `hold` s.
local function slot_holder(dir, hold)
    local p = child(string.format([[
        local core = require "wolkvox.core"
        local a = assert(core.lock(%q))
        local b = assert(core.lock(%q))
        io.write(io.open("/proc/self/stat"):read("*l"):match("^%%d+"), "\n")
        io.stdout:flush()
        core.sleep(%g)
    ]], dir .. "/slot1", dir .. "/slot2", hold), hold + 10)
    local pid = p:read("*l")
    assert.matches("^%d+$", pid)
    return p, pid
end

describe("state files and directories", function()
    local srv

    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    it("creates directories 0700 and files 0600, whatever the umask leaves", function()
        local dir = support.tmpdir() .. "/a/state"
        local x = support.client(srv, { state_dir = dir, min_interval = 0.01 })
        assert(x:services())
        assert(x:quota())                                 -- writes the measurement
        local pdir, qdir = x._ctx.pacer.dir, x._ctx.ledger.dir
        for _, d in ipairs { dir:match("^(.*)/state$"), dir, dir .. "/tokens", pdir, dir .. "/operations", qdir } do
            assert.equal("700", mode(d), d)
        end
        local day = x._ctx.ledger:day()
        local files = { pdir .. "/slot1", pdir .. "/last", qdir .. "/calls-" .. day, qdir .. "/measured-" .. day }
        for _, f in ipairs(files) do
            assert.equal("600", mode(f), f)
        end
        x:close()
    end)

    it("refuses a state directory that group or others may write to", function()
        local dir = support.tmpdir() .. "/state"
        assert(core.mkdir(dir))
        os.execute("chmod 0777 '" .. dir .. "'")
        local x, err = wolkvox.new { base_url = srv.url, token = srv.token, state_dir = dir }
        assert.is_nil(x)
        assert.equal("params", err.kind)
        assert.matches(dir .. " has mode 0777: group or others may write to it", err.message, 1, true)
        -- nothing was made in it
        assert.equal("", sh("ls -A '" .. dir .. "'"))
        -- a directory under it that the library would use is checked too
        os.execute("chmod 0700 '" .. dir .. "'")
        assert(core.mkdir(dir .. "/tokens"))
        os.execute("chmod 0770 '" .. dir .. "/tokens'")
        local ok, why = core.mkdir(dir .. "/tokens/x")
        assert.is_nil(ok)
        assert.matches("/tokens has mode 0770", why)
        -- so is a group-writable directory above it
        local top = support.tmpdir()
        os.execute("chmod 0775 '" .. top .. "'")
        ok, why = core.mkdir(top .. "/state")
        assert.is_nil(ok)
        assert.matches("mode 0775", why)
    end)

    it("refuses a directory that belongs to another user, and links others planted in a shared /tmp", function()
        if not AS_ROOT then
            pending("needs root to give a directory to another user")
            return
        end
        -- A shared directory, as /tmp is: root's, 1777.
        local shared = support.tmpdir()
        os.execute("chmod 1777 '" .. shared .. "'")
        local victim_dir = support.tmpdir()
        write(victim_dir .. "/precious", "precious\n")
        -- Another user made the state directory there first...
        os.execute("mkdir '" .. shared .. "/made' && chmod 0700 '" .. shared .. "/made' && chown nobody '"
            .. shared .. "/made'")
        local ok, why = core.mkdir(shared .. "/made/tokens")
        assert.is_nil(ok)
        assert.matches("/made belongs to uid %d+, not to this user", why)
        -- ...or planted a link where it will be.
        os.execute("ln -s '" .. victim_dir .. "' '" .. shared .. "/link' && chown -h nobody '" .. shared .. "/link'")
        local x, err = wolkvox.new { base_url = srv.url, token = srv.token, state_dir = shared .. "/link" }
        assert.is_nil(x)
        assert.matches("/link is a symbolic link of uid %d+: refused", err.message)
        assert.equal("precious", sh("ls -A '" .. victim_dir .. "'"))
        -- A sticky directory of another user is not trusted either.
        local theirs = support.tmpdir()
        os.execute("chmod 1777 '" .. theirs .. "' && chown nobody '" .. theirs .. "'")
        ok, why = core.mkdir(theirs .. "/state")
        assert.is_nil(ok)
        assert.matches("belongs to uid", why)
        -- The user's own link to their own directory is followed.
        os.execute("ln -s '" .. victim_dir .. "' '" .. shared .. "/mine'")
        assert(core.mkdir(shared .. "/mine/state"))
        assert.equal("700", mode(victim_dir .. "/state"))
    end)

    it("never writes through a link planted in the state directory", function()
        local victim = support.tmpdir() .. "/precious"
        write(victim, "precious\n")
        local day
        local function fresh()
            local x = support.client(srv, { state_dir = support.tmpdir(), min_interval = 0.01, retries = 0 })
            day = x._ctx.ledger:day()
            return x, x._ctx.pacer.dir, x._ctx.ledger.dir
        end
        local function plant(path)
            os.remove(path)
            assert(os.execute("ln -s '" .. victim .. "' '" .. path .. "'"))
        end
        -- the ledger's count, its measurement, the pacer's slot and its `last` file
        local cases = {
            function(_, q) return q .. "/calls-" .. day end,
            function(_, q) return q .. "/measured-" .. day end,
            function(p) return p .. "/slot1" end,
            function(p) return p .. "/last" end,
        }
        for i, where in ipairs(cases) do
            local x, p, q = fresh()
            local path = where(p, q)
            plant(path)
            srv:control("reset")
            local data, err
            if path:match("measured") then
                data, err = x:quota()
            else
                data, err = x:services()
            end
            -- refused with a clear error, or the link replaced (never followed)
            if data then
                local f = io.open(path, "rb")
                assert.is_not_nil(f, "case " .. i)
                f:close()
                assert.equal("", sh("find '" .. path .. "' -type l"), "case " .. i)
            else
                assert.equal("params", err.kind, "case " .. i)
                assert.matches("is a symbolic link: refused", err.message, 1, true)
            end
            assert.equal("precious\n", read(victim), "case " .. i)
            x:close()
        end
    end)

    it("core: state files are opened without following links, created 0600, replaced atomically", function()
        local dir = support.tmpdir()
        local victim = dir .. "/victim"
        write(victim, "v")
        os.execute("ln -s victim '" .. dir .. "/link'")
        local ok, msg, code = core.read_file(dir .. "/link")
        assert.is_nil(ok)
        assert.equal("link", code)
        assert.matches("link is a symbolic link: refused", msg)
        ok, msg, code = core.append_file(dir .. "/link", "x")
        assert.is_nil(ok)
        assert.equal("link", code)
        assert.matches("symbolic link", msg)
        ok, msg = core.file_size(dir .. "/link")
        assert.is_nil(ok)
        assert.matches("symbolic link", msg)
        ok, msg = core.lock(dir .. "/link")
        assert.is_nil(ok)
        assert.matches("symbolic link", msg)
        -- write_file replaces the link itself
        assert(core.write_file(dir .. "/link", "new\n"))
        assert.equal("v", read(victim))
        assert.equal("new\n", read(dir .. "/link"))
        assert.equal("600", mode(dir .. "/link"))
        assert.equal("", sh("find '" .. dir .. "' -type l"))
        assert.equal("new\n", core.read_file(dir .. "/link"))
        assert.is_nil(select(1, core.read_file(dir .. "/none")))
        assert.equal("missing", select(3, core.read_file(dir .. "/none")))
        assert.equal(3, core.append_file(dir .. "/count", "..."))
        assert.equal(4, core.append_file(dir .. "/count", "."))
        assert.equal(4, core.file_size(dir .. "/count"))
        assert.equal("600", mode(dir .. "/count"))
        -- no temporary file is left behind
        assert.equal("count link victim", sh("ls '" .. dir .. "' | tr '\\n' ' '"))
        -- a lock's file holds what its holder writes
        local lk = assert(core.lock(dir .. "/slot"))
        assert.equal("600", mode(dir .. "/slot"))
        assert(lk:write("123.5\n"))
        assert.equal("123.5\n", lk:read())
        lk:release()
        assert.has_error(function() lk:read() end)
    end)
end)

describe("the schedule gives back what it took", function()
    local srv

    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    -- A schedule over a transport object written here (it stands in for a
    -- transport, not for the schedule) and a real pacer.
    -- (Its sleep gives up after 10 s in all, so a wedge fails the test
    -- instead of hanging it.)
    local function rig(transport, pc, extra)
        local t0 = core.now()
        local h = {
            request = function(item) return { url = "x", item = item } end,
            finish = function() end,
            acquire = function() return pc:acquire() end,
            release = function(slot, abandoned) pc:release(slot, abandoned) end,
            now = core.now,
            sleep = function(s)
                if core.now() - t0 > 10 then
                    error("wedged: still waiting after 10 s", 0)
                end
                core.sleep(s)
            end,
        }
        for k, v in pairs(extra or {}) do
            h[k] = v
        end
        return schedule.new(transport, 2, h)
    end

    it("releases the slot when a start raises, so later calls do not hang", function()
        local pc = pacer.new { dir = support.tmpdir() }
        local boom = { "start refused" }
        local transport = { start = function() error(boom) end }
        for _ = 1, 3 do
            local s = rig(transport, pc)
            s:add({})
            local ok, err = pcall(s.next, s)
            assert.is_false(ok)
            assert.equal(boom, err)          -- the same error value
        end
        assert.equal(0, pc.held)
        local a, b = pc:acquire(), pc:acquire()
        assert.is_table(a)
        assert.is_table(b)
        pc:release(a)
        pc:release(b)
    end)

    it("through the API: three calls whose start raises, then a normal call returns", function()
        local p = child(string.format([[
            local wolkvox = require "wolkvox"
            local c = assert(wolkvox.new { base_url = %q, token = %q, state_dir = %q, retries = 0 })
            for _ = 1, 3 do
                pcall(c.call, c, "information", "services", { ["bad name"] = "x" }, { unchecked = true })
            end
            local rows = c:services()
            io.write(rows and "done" or "failed", "\n")
        ]], srv.url, srv.token, support.tmpdir()), 30)
        local t0 = core.now()
        local out = p:read("*a")
        p:close()
        assert.equal("done\n", out)
        assert.is_true(core.now() - t0 < 20)
    end)

    it("aborts on an error from wait: cancels, frees the slots as abandoned, raises the same value", function()
        local pc = pacer.new { dir = support.tmpdir(), server_limit = 30 }
        local boom = setmetatable({}, { __tostring = function() return "interrupted!" end })
        local cancelled = 0
        local n = 0
        local transport = {
            start = function() n = n + 1 return n end,
            wait = function() error(boom, 0) end,
            cancel = function() cancelled = cancelled + 1 return n, n end,
        }
        local abandoned_sends
        local s = rig(transport, pc, { abandon = function(sends) abandoned_sends = sends end })
        s:add({})
        s:add({})
        local ok, err = pcall(s.next, s)
        assert.is_false(ok)
        assert.equal(boom, err)
        assert.equal(1, cancelled)
        assert.equal(2, abandoned_sends)
        assert.equal(0, pc.held)
        -- both calls may still run at the server: their slots stay busy
        local slot, wait, why = pc:acquire()
        assert.is_nil(slot)
        assert.equal("abandoned", why) -- told apart from a slot held now (issue 19)
        assert.is_true(wait > 25 and wait < 30.01, tostring(wait))
        local text = read(pc.dir .. "/slot1")
        assert.is_true(tonumber(text) > core.time() + 25)
    end)

    it("a deadline bounds the wait for a slot another process holds", function()
        local dir = support.tmpdir()
        local p, pid = slot_holder(dir, 20)
        local pc = pacer.new { dir = dir }
        local s = rig({ start = function() error("never started") end }, pc, { deadline = core.now() + 2 })
        s:add({})
        local t0 = core.now()
        local ok, err = pcall(s.next, s)
        local took = core.now() - t0
        os.execute("kill -9 " .. pid)
        p:close()
        assert.is_false(ok)
        assert.equal("transport", err.kind)
        assert.equal("timeout", err.reason)
        assert.is_false(err.retryable)
        assert.matches("waiting for a free slot of the token", err.message)
        assert.is_true(took >= 1.9 and took < 8, took)
    end)
end)

describe("a deadline bounds the wait for a slot, through the API", function()
    local srv

    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    it("both slots held by another process: deadline = 2 fails with a timeout in well under 14 s", function()
        local x = support.client(srv, { state_dir = support.tmpdir(), retries = 0 })
        local p, pid = slot_holder(x._ctx.pacer.dir, 20)
        local t0 = core.now()
        local rows, err = x:call("information", "services", { deadline = 2 })
        local took = core.now() - t0
        os.execute("kill -9 " .. pid)
        p:close()
        assert.is_nil(rows)
        assert.equal("transport", err.kind)
        assert.equal("timeout", err.reason)
        assert.matches("waiting for a free slot of the token", err.message)
        assert.is_true(took >= 1.9 and took < 8, took)
        assert.equal(0, #srv:log())
        -- the slots are free again: the same client goes on
        assert(x:services())
        x:close()
    end)
end)

describe("abandoned calls keep their slot until the server has ended them #slow", function()
    local srv

    setup(function() srv = support.fake() end)
    teardown(function()
        pacer.SERVER_LIMIT = 60
        srv:stop()
    end)
    before_each(function() srv:control("reset") end)

    it("the next call waits for the server rather than collide", function()
        pacer.SERVER_LIMIT = 3
        local x = support.client(srv, { state_dir = support.tmpdir(), timeout = 0.5, retries = 0 })
        pacer.SERVER_LIMIT = 60
        support.faults(srv, { { match = "services", delay = 2, times = 2 } })
        local t0 = core.now()
        local _, e1 = x:services()
        local _, e2 = x:services()
        assert.equal("timeout", e1.reason)
        assert.equal("timeout", e2.reason)
        -- both of the token's places are still taken at the server
        assert(x:routing_points())
        assert.is_true(core.now() - t0 >= 2.9)
        local log = srv:log()
        assert.equal(3, #log)
        for _, e in ipairs(log) do
            assert.is_nil(e.refused)
        end
        assert.is_true(log[3].t_start >= log[1].t_end and log[3].t_start >= log[2].t_end)
        x:close()
        settle(srv)
    end)

    it("with a deadline shorter than the server's limit, the next call fails with a slot timeout", function()
        pacer.SERVER_LIMIT = 30
        local x = support.client(srv, { state_dir = support.tmpdir(), timeout = 0.5, retries = 0 })
        pacer.SERVER_LIMIT = 60
        support.faults(srv, { { match = "services", delay = 1, times = 2 } })
        assert.is_nil((x:services()))
        assert.is_nil((x:services()))
        local t0 = core.now()
        local rows, err = x:call("information", "routing_points", { deadline = 1 })
        assert.is_nil(rows)
        assert.equal("timeout", err.reason)
        assert.matches("waiting for a free slot of the token", err.message)
        assert.is_true(core.now() - t0 < 8)
        assert.equal(2, #srv:log())
        x:close()
        settle(srv)
    end)

    it("three processes sharing the token never have more than 2 calls at the server", function()
        local dir = support.tmpdir()
        support.faults(srv, { { match = "services", delay = 2, times = 3 } })
        local code = string.format([[
            local pacer = require "wolkvox.limits.pacer"
            pacer.SERVER_LIMIT = 2.5
            local wolkvox = require "wolkvox"
            local c = assert(wolkvox.new { base_url = %q, token = %q, state_dir = %q, timeout = 0.5,
                retries = 0 })
            local _, err = c:services()
            local a, b = c:routing_points(), c:routing_points()
            io.write(tostring(err and err.reason), " ", a and b and "ok" or "failed", "\n")
        ]], srv.url, srv.token, dir)
        local pipes = { child(code, 60), child(code, 60), child(code, 60) }
        for _, p in ipairs(pipes) do
            assert.equal("timeout ok\n", p:read("*a"))
            p:close()
        end
        local log = srv:log()
        assert.equal(9, #log)
        for _, e in ipairs(log) do
            assert.is_nil(e.refused)
            assert.is_true(e.inflight <= 2)
        end
        assert.is_true(srv:control("stats").max_inflight <= 2)
        settle(srv)
    end)

    it("in memory and in a shared dict too", function()
        local pc = pacer.new { server_limit = 0.5, time = core.time }
        local a, b = pc:acquire(), pc:acquire()
        pc:release(a, true)
        pc:release(b)
        local c = assert(pc:acquire())           -- b's place was free at once
        local none, wait = pc:acquire()
        assert.is_nil(none)                      -- a's is not
        assert.is_true(wait > 0 and wait <= 0.5)
        pc:release(c)
        core.sleep(0.6)                          -- (on purpose: a's 0.5 s at the server pass)
        pc:release(assert(pc:acquire()))
        -- A dict with lua_shared_dict's add/set/delete (expiry recorded, not run).
        local dict = { keys = {} }
        function dict.add(d, k, v, ttl)
            if d.keys[k] then return false end
            d.keys[k] = { v, ttl }
            return true
        end
        function dict.set(d, k, v, ttl) d.keys[k] = { v, ttl } end
        function dict.delete(d, k) d.keys[k] = nil end
        local pd = pacer.new { dict = dict, key = "t", ttl = 75, server_limit = 60, time = core.time }
        local s1, s2 = pd:acquire(), pd:acquire()
        pd:release(s1, true)
        pd:release(s2)
        local kept = dict.keys["wolkvox:slot:t:1"]
        assert.is_table(kept)
        assert.is_true(kept[2] > 59 and kept[2] <= 60)
        assert.is_nil(dict.keys["wolkvox:slot:t:2"])
    end)

    it("a loop that breaks out of each() leaves the slots of the windows in flight busy", function()
        srv:control("config", { latency = 0.3 })
        pacer.SERVER_LIMIT = 20
        local x = support.client(srv, { state_dir = support.tmpdir() })
        pacer.SERVER_LIMIT = 60
        local n = 0
        for _ in x:each("cdr_1", { from = "2026-01-01", to = "2026-04-30" }) do
            n = n + 1
            if n == 1 then
                break
            end
        end
        x._ctx:settle()        -- (Lua 5.4 has done it already, when the loop closed)
        assert.equal(1, n)
        local pdir, busy = x._ctx.pacer.dir, 0
        for i = 1, 2 do
            local left = (tonumber((core.read_file(pdir .. "/slot" .. i) or ""):match("%S+")) or 0) - core.time()
            if left > 10 then
                busy = busy + 1
            end
        end
        assert.is_true(busy >= 1)
        assert.is_true(#srv:log() > busy)             -- the first window's slot was freed when it answered
        x:close()
        settle(srv)
    end)

    it("an interrupt during a transfer aborts it and leaves its slot busy for the server's limit", function()
        local dir = support.tmpdir()
        support.faults(srv, { { match = "services", delay = 4 } })
        local p = child(string.format([[
            io.write(io.open("/proc/self/stat"):read("*l"):match("^%%d+"), "\n")
            io.stdout:flush()
            require("wolkvox.limits.pacer").SERVER_LIMIT = 20
            local wolkvox = require "wolkvox"
            local c = assert(wolkvox.new { base_url = %q, token = %q, state_dir = %q, retries = 0 })
            c:services()
            io.write("returned\n")
        ]], srv.url, srv.token, dir), 40)
        local pid = p:read("*l")
        support.wait_for(function() return #srv:log() > 0 end, 10, "the request to be at the server")
        os.execute("kill -INT " .. pid)
        local t1 = core.now()
        local rest = p:read("*a")
        p:close()
        assert.is_true(core.now() - t1 < 3)             -- well before the 4 s answer
        assert.matches("interrupted", rest)
        -- the call runs on at the server: its slot stays taken (until start + 20 s)
        local x = support.client(srv, { state_dir = dir })
        local pc = x._ctx.pacer
        local stamps = {}
        for i = 1, 2 do
            local text = core.read_file(pc.dir .. "/slot" .. i) or ""      -- (missing: never used)
            stamps[i] = (tonumber(text:match("%S+")) or 0) - core.time()
        end
        table.sort(stamps)
        assert.is_true(stamps[1] <= 0)                    -- the other slot is free
        assert.is_true(stamps[2] > 10 and stamps[2] <= 20.01, tostring(stamps[2]))
        local a = assert(pc:acquire())
        local none, wait = pc:acquire()
        assert.is_nil(none)
        assert.is_true(wait > 0)
        pc:release(a)
        x:close()
        settle(srv)
    end)

    it("an interrupt during a long wait for a slot ends the call at once", function()
        local dir = support.tmpdir()
        local x = support.client(srv, { state_dir = dir })
        local pdir = x._ctx.pacer.dir
        x:close()
        -- both slots stamped busy for 30 s, as abandoned calls leave them
        for i = 1, 2 do
            local lk = assert(core.lock(pdir .. "/slot" .. i))
            lk:write(string.format("%.3f\n", core.time() + 30))
            lk:release()
        end
        local p = child(string.format([[
            io.write(io.open("/proc/self/stat"):read("*l"):match("^%%d+"), "\n")
            io.stdout:flush()
            local wolkvox = require "wolkvox"
            local c = assert(wolkvox.new { base_url = %q, token = %q, state_dir = %q,
                on_throttle = function() io.write("waiting\n") io.stdout:flush() end })
            c:services()
            io.write("returned\n")
        ]], srv.url, srv.token, dir), 40)
        local pid = p:read("*l")
        -- once it waits for a slot (the child is killed after 40 s: no hang),
        -- asleep in that wait: past its on_throttle hook, whose pcall would
        -- catch the interrupt
        assert.equal("waiting", p:read("*l"))
        support.wait_for(function() return (support.proc(pid, "stat") or ""):match("^%d+ %b() S") end, 10,
            "the child to sleep in its wait for a slot")
        local t0 = core.now()
        os.execute("kill -INT " .. pid)
        local rest = p:read("*a")
        p:close()
        assert.is_true(core.now() - t0 < 10)
        assert.matches("interrupted", rest)
        assert.equal(0, #srv:log())
    end)
end)

describe("careless ranges", function()
    local srv, c
    support.suite(nil, { state_dir = false }, function(s, x) srv, c = s, x end)

    -- The plan's error for cdr_1 (or `name`) over `params`.
    local function refused(params, name)
        local p, err = c:plan(name or "cdr_1", params)
        assert.is_nil(p, "planned: " .. tostring(p and p.calls))
        assert.equal("params", err.kind)
        return err.message
    end

    it("refuse dates outside 2000..2100, naming the value given", function()
        local dates = require "wolkvox.dates"
        assert.equal(2000, dates.MIN_YEAR)
        assert.equal(2100, dates.MAX_YEAR)
        assert.equal("from: date 1970-01-01 is outside what wolkvox holds (2000 to 2100)",
            refused { from = "1970-01-01", to = "2026-01-31" }:match("from: .*$"))
        local function says(text, msg)
            assert.is_truthy(msg:find(text, 1, true), msg)
        end
        says("to: date 9999-12-31 is outside what wolkvox holds", refused { from = "2026-01-01", to = "9999-12-31" })
        says("from: date 19991231235959 is outside", refused { from = "19991231235959", to = "2026-01-31" })
        says("to: date 2101-01-01 is outside", refused { from = "2026-01-01", to = "2101-01-01" })
        says("from: date 1999-12-31 is outside",
            refused { from = { year = 1999, month = 12, day = 31 }, to = "2026-01-31" })
        -- os.time() numbers: 0 is named, with the date it stands for
        assert.matches("from: date 0 %(1969%-12%-31 19:00:00%) is outside what wolkvox holds %(2000 to 2100%)",
            refused { from = 0, to = 4102444800 })
        assert.matches("to: date 1e%+300 is outside", refused { from = "2026-01-01", to = 1e300 })
        assert.matches("to: date 9%.007%d*e%+15 is outside", refused { from = "2026-01-01", to = 2 ^ 53 })
        assert.matches("from: date %-1e%+20 is outside", refused { from = -1e20, to = "2026-01-01" })
        -- the edges are in
        assert.is_table(c:plan("cdr_1", { from = "2000-01-01", to = "2000-01-02" }))
        assert.is_table(c:plan("cdr_1", { from = "2100-12-30", to = "2100-12-31" }))
        assert.equal(0, #srv:log())
    end)

    it("refuse numbers that are not finite, and numbers that look like milliseconds", function()
        assert.matches("from: a date number must be finite seconds since 1970 %(os.time%(%)%), not [-]?nan",
            refused { from = 0 / 0, to = "2026-01-01" })
        assert.matches("to: a date number must be finite .*, not inf", refused { from = "2026-01-01", to = math.huge })
        assert.matches("from: a date number must be finite .*, not %-inf",
            refused { from = -math.huge, to = "2026-01-01" })
        local ms = os.time { year = 2026, month = 1, day = 5, hour = 12 } * 1000
        assert.matches("from: date " .. string.format("%.0f", ms) .. " looks like milliseconds",
            refused { from = ms, to = "2026-01-31" })
        assert.matches("from: date fields must be whole numbers",
            refused { from = { year = 0 / 0, month = 1, day = 1 }, to = "2026-01-31" })
        assert.equal(0, #srv:log())
    end)

    it("a century per day is planned fast and small", function()
        local dates, windows = require "wolkvox.dates", require "wolkvox.call.windows"
        local t0, before = os.clock(), collectgarbage("count")
        local from, to = dates.parse("2000-01-01"), dates.parse("2100-12-31", true)
        local w = windows.split(from, to, 31 * 86400 - 1, 86400)
        local p = windows.periods(from, to, "day")
        local took = os.clock() - t0
        assert.equal(1190, #w)
        assert.equal(36890, #p)
        assert.is_true(took < 1, took)
        assert.is_true(collectgarbage("count") - before < 64 * 1024)   -- under 64 MB
        -- and a direct call with a silly range fails before building anything
        assert.has_error(function() windows.split(0, 1e300, 100) end)
        assert.has_error(function() windows.periods(0, 0 / 0, "day") end)
    end)

    it("huge ranges are refused at once, within a small memory limit and time", function()
        -- (in a child process: a regression fails there instead of taking this one down)
        local p = child(string.format([[
            local wolkvox = require "wolkvox"
            local c = assert(wolkvox.new { base_url = %q, token = %q, state_dir = false })
            for _, case in ipairs {
                { "cdr_1", { from = 0, to = 1e300 } },
                { "cdr_1", { from = "2026-01-01", to = 2 ^ 53 } },
                { "agent_1", { from = "2000-01-01", to = "9999-12-31", per = "day" } },
            } do
                local plan, err = c:plan(case[1], case[2])
                io.write(tostring(plan and plan.calls), " ", tostring(err and err.message), "\n")
            end
        ]], srv.url, srv.token), 30, "ulimit -v 1000000; ")
        local out = p:read("*a")
        p:close()
        local lines = {}
        for line in out:gmatch("[^\n]+") do
            lines[#lines + 1] = line
        end
        assert.equal(3, #lines, out)
        assert.matches("^nil .*from: date 0 %(1969%-12%-31 19:00:00%) is outside what wolkvox holds", lines[1])
        assert.matches("^nil .*to: date 9%.007%d*e%+15 is outside what wolkvox holds", lines[2])
        assert.matches("^nil .*to: date 9999%-12%-31 is outside what wolkvox holds", lines[3])
    end)
end)

describe("the quota limit in force", function()
    local quota = require "wolkvox.limits.quota"
    local srv
    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    it("licenses given by the user stay in force after token_info measured another limit", function()
        local x = support.client(srv, { state_dir = support.tmpdir(), licenses = 5 })
        local before = assert(x:quota { measure = false })
        assert.equal(5000, before.limit)
        assert.equal("configured", before.limit_source)
        assert.is_nil(before.measured_limit)
        local q = assert(x:quota())                 -- the fake says token_limit 25000
        assert.equal(5000, q.limit)
        assert.equal("configured", q.limit_source)
        assert.equal(25000, q.measured_limit)
        assert.equal("measured", q.source)          -- `used` comes from token_info
        assert.equal(5000 - q.used, q.remaining)
        local plan = assert(x:plan("cdr_1", { from = "2026-01-01", to = "2026-01-02" }))
        assert.equal("configured", plan.quota.limit_source)
        x:close()
    end)

    it("an explicit daily_limit is what refuses calls, whatever was measured", function()
        local x = support.client(srv, { state_dir = support.tmpdir(), daily_limit = 3 })
        assert(x:quota())                           -- 1 call, measured limit 25000
        assert(x:services())
        assert(x:services())
        local rows, err = x:services()              -- a 4th call would cross 3
        assert.is_nil(rows)
        assert.equal("quota", err.kind)
        assert.matches("the limit is configured", err.message)
        assert.equal(3, #srv:log())
        x:close()
    end)

    it("without one, the measured limit is in force; prefer_measured makes it win", function()
        local x = support.client(srv, { state_dir = support.tmpdir() })
        assert.is_nil(x:quota({ measure = false }).limit_source)
        local q = assert(x:quota())
        assert.equal(25000, q.limit)
        assert.equal("measured", q.limit_source)
        x:close()
        local l = quota.new { dir = support.tmpdir(), daily_limit = 5000, prefer_measured = true }
        assert.equal("configured", l:status().limit_source)
        l:measured(10, 25000)
        local s = l:status()
        assert.same({ 25000, "measured", 25000, 10 }, { s.limit, s.limit_source, s.measured_limit, s.used })
        local m = quota.new { daily_limit = 5000 }   -- in memory
        m:measured(10, 25000)
        s = m:status()
        assert.same({ 5000, "configured", 25000 }, { s.limit, s.limit_source, s.measured_limit })
    end)
end)

describe("slot stamps", function()
    it("count for no more than the server's limit from now (a clock set back)", function()
        local dir = support.tmpdir()
        for i = 1, 2 do
            local lk = assert(core.lock(dir .. "/slot" .. i))
            lk:write(string.format("%.6f\n", core.time() + 3600))
            lk:release()
        end
        local pc = pacer.new { dir = dir, server_limit = 5 }
        local slot, wait = pc:acquire()
        assert.is_nil(slot)
        assert.is_true(wait <= 5.01, tostring(wait))
    end)
end)
