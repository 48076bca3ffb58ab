-- Pacing: two calls in flight per token across processes, crash-safe slots,
-- a minimum interval; and the ledger that processes share.
local core = require "wolkvox.core"
local pacer = require "wolkvox.limits.pacer"
local support = require "support"

-- Start a child process that runs a six-month cdr_1 report and prints
-- "<rows> <calls>"; returns the pipe.
local function child(srv, state_dir)
    local code = string.format([[
        local wolkvox = require "wolkvox"
        local c = assert(wolkvox.new { base_url = %q, token = %q, state_dir = %s, retries = 0 })
        local rows, meta = c:report("cdr_1", { from = "2026-01-01", to = "2026-06-30" })
        io.write(rows and #rows or tostring(meta), " ", c:stats().calls, "\n")
    ]], srv.url, srv.token, state_dir and string.format("%q", state_dir) or "false")
    return assert(io.popen(support.lua_command(code) .. " 2>&1", "r"))
end

local read_all = support.read_all

describe("pacing", function()
    local srv

    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    it("keeps two processes with one token to 2 calls in flight, and their ledgers add up", function()
        local dir = support.tmpdir()
        srv:control("config", { latency = 0.2, max_rows = 60000 })
        local out = read_all { child(srv, dir), child(srv, dir) }
        for _, line in ipairs(out) do
            assert.equal("18100 6\n", line)
        end
        local stats = srv:control("stats")
        assert.is_true(stats.max_inflight <= 2)
        for _, entry in ipairs(srv:log()) do
            assert.is_nil(entry.refused)
            assert.is_true(entry.inflight <= 2)
        end
        assert.equal(12, #srv:log())
        -- The operation's ledger counted both processes' calls.
        local x = support.client(srv, { state_dir = dir })
        assert.equal(12, x:quota({ measure = false }).used)
        x:close()
    end)

    it("(control) without the shared state the same two processes exceed it", function()
        srv:control("config", { latency = 0.2, max_rows = 60000 })
        read_all { child(srv, nil), child(srv, nil) }
        assert.is_true(support.exceeded(srv), "the fake never saw more than 2 in flight")
    end)

    it("takes back the slots of a process that died holding them", function()
        local dir = support.tmpdir() .. "/tokens/x"
        assert(core.mkdir(dir))
        local code = string.format([[
            local core = require "wolkvox.core"
            local a = assert(core.lock(%q))
            local b = assert(core.lock(%q))
            io.write(io.open("/proc/self/stat"):read("*l"):match("^%%d+"), "\n")
            io.stdout:flush()
            core.sleep(30)
        ]], dir .. "/slot1", dir .. "/slot2")
        local p = assert(io.popen(support.lua_command(code), "r"))
        local pid = p:read("*l")
        local pc = pacer.new { dir = dir }
        local slot, wait, why = pc:acquire()
        assert.is_nil(slot)
        assert.equal("slot", why)
        assert.is_true(wait > 0)
        os.execute("kill -9 " .. pid)
        p:close()
        slot = pc:acquire()
        assert.is_table(slot)
        pc:release(slot)
    end)

    it("leaves min_interval between the starts of calls", function()
        local x = support.client(srv, { min_interval = 0.3, state_dir = support.tmpdir() })
        local reasons, starts = {}, {}
        -- (a hook's error would be caught and logged: collect, assert after)
        x._ctx.hooks.on_throttle = function(info) reasons[#reasons + 1] = info.reason end
        x._ctx.hooks.on_request = function() starts[#starts + 1] = core.time() end
        assert(x:services())
        assert(x:services())
        assert(x:services())
        assert.equal(3, #starts)
        -- (the hook runs a few microseconds after the pacer's claim)
        assert.is_true(starts[2] - starts[1] >= 0.299)
        assert.is_true(starts[3] - starts[2] >= 0.299)
        -- A start waits only when the previous call took less than the
        -- interval: on a loaded machine a call can take longer.
        assert.is_true(#reasons <= 2)
        for _, r in ipairs(reasons) do
            assert.equal("the minimum interval", r)
        end
        assert.equal(3, #srv:log())
        x:close()
    end)


    it("counts a start stamped in the future (a clock set back) for no more than min_interval", function()
        -- Issue #20: the `last` file written an hour ahead, as a clock set
        -- back an hour leaves it, held every start for an hour.
        local dir = support.tmpdir()
        assert(core.write_file(dir .. "/last", string.format("%.6f\n", core.time() + 3600)))
        local pc = pacer.new { dir = dir, min_interval = 2 }
        local slot, wait, why = pc:acquire()
        assert.is_nil(slot)
        assert.equal("interval", why)
        assert.is_true(wait > 0 and wait <= 2.01, tostring(wait))
        -- A shared dict's stamp likewise.
        local dict = { keys = {} }
        function dict.add(d, k, v) if d.keys[k] then return false end d.keys[k] = v return true end
        function dict.get(d, k) return d.keys[k] end
        function dict.set(d, k, v) d.keys[k] = v end
        function dict.delete(d, k) d.keys[k] = nil end
        dict.keys["wolkvox:pace:t"] = core.time() + 3600
        local pd = pacer.new { dict = dict, key = "t", min_interval = 2, time = core.time }
        slot, wait, why = pd:acquire()
        assert.is_nil(slot)
        assert.equal("interval", why)
        assert.is_true(wait > 0 and wait <= 2.01, tostring(wait))
    end)

    it("holds a client to its own max_concurrent", function()
        local pc = pacer.new { dir = support.tmpdir(), max_concurrent = 1 }
        local a = pc:acquire()
        assert.is_table(a)
        assert.is_nil((pc:acquire()))
        pc:release(a)
        pc:release(a)                  -- twice is harmless
        assert.is_table(pc:acquire())
    end)
end)

describe("a pacing slot", function()
    it("given back twice is given back once (held counts stay true, the other slot stays taken)", function()
        for _, dir in ipairs { require("support").tmpdir(), false } do
            local p = pacer.new { dir = dir or nil }
            local a = assert(p:acquire())
            local b = assert(p:acquire())
            assert.is_nil((p:acquire())) -- both slots taken
            p:release(a)
            p:release(a)
            assert.equal(1, p.held)
            local c = assert(p:acquire())  -- a's slot again
            assert.is_nil((p:acquire()))   -- b's is still taken
            p:release(b)
            p:release(c)
            p:release(b)
            assert.equal(0, p.held)
        end
    end)
end)
