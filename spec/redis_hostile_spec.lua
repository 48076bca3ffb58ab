-- Fleet mode against a hostile or broken Redis (issue 20): replies of the
-- wrong type to every command fleet mode sends, a reply dripped one byte at
-- a time, a bulk string declaring 1 GiB and an array declaring 100 million
-- elements.  Each must end as a `state` error (redis_failure = "refuse") or
-- as this host's own limits with a warning ("local"): no raise, no crash, no
-- hang, bounded memory, and the connection that saw it is not used again.
-- The hostile server is a small RESP server in a child process
-- (redis.hostile); a real redis-server shows that fleet mode still works.
local support = require "support"
local redis = require "redis"

if not (redis.binary() and redis.client_built()) then
    describe("fleet mode against a hostile Redis", function()
        redis.need()
    end)
    return
end

local core = require "wolkvox.core"
local state = require "wolkvox.limits.shared"
local state_redis = require "wolkvox.limits.redis"
local client = require "wolkvox.redis"

local GiB = 1024 * 1024 * 1024
local MODES = { "refuse", "local" }

-- A fleet client of the fake `srv` on Redis `url` in failure `mode` (more
-- options in `extra`): the client, and the list its logger fills.  Its
-- deadline bounds every call: a slot a hostile Redis never frees is a
-- timeout, not a hang.
local function fleet(srv, url, mode, extra)
    local lines = {}
    local o = { state_dir = support.tmpdir(), redis = url, redis_failure = mode, retries = 0, deadline = 60,
        logger = function(level, line) lines[#lines + 1] = level .. " " .. line end }
    for k, v in pairs(extra or {}) do
        o[k] = v
    end
    return support.client(srv, o), lines
end

-- The warnings among `lines`.
local function warnings(lines)
    local out = {}
    for _, l in ipairs(lines) do
        if l:find("^warn ") then
            out[#out + 1] = l
        end
    end
    return out
end

-- `method` of client `x` (`...` its arguments), protected: a raise fails the
-- spec with its message; else the results.
local function call(x, method, ...)
    local ok, rows, err = pcall(x[method], x, ...)
    assert(ok, "raised: " .. tostring(rows))
    return rows, err
end

-- What one call of `x` in `mode` must come to when the fleet state fails
-- with a message holding `expect` (plain text) before the call is made:
-- refused (kind state, nothing sent to `srv`), or made with this host's
-- own limits after one warning.
local function check_refused_or_local(srv, x, lines, mode, expect, what)
    local before = srv:control("stats").requests
    local rows, err = call(x, "services")
    if mode == "refuse" then
        assert.is_nil(rows, what .. ": the call was made")
        assert.equal("state", err.kind, what .. ": " .. tostring(err))
        assert.truthy(tostring(err):find(expect, 1, true), what .. ": " .. tostring(err))
        assert.equal(before, srv:control("stats").requests, what .. ": a call was sent")
    else
        assert.is_table(rows, what .. ": " .. tostring(err))
        local w = warnings(lines)
        assert.equal(1, #w, what .. ": " .. table.concat(lines, " / "))
        assert.truthy(w[1]:find("falls back", 1, true), what .. ": " .. w[1])
        assert.truthy(w[1]:find(expect, 1, true), what .. ": " .. w[1])
        assert.equal(before + 1, srv:control("stats").requests, what)
    end
end

-- Wrong replies, by the command that gets them.  `gate`: the command is
-- asked before a call (its failure refuses the call); otherwise it is asked
-- after the call went out (freeing the slot, counting the call) or by
-- quota() (SET of the measurement), where a failure must not fail anything
-- but is warned about.  Each entry: the reply, what the message must say.
local WRONG = {
    { cmd = "SCRIPT LOAD", gate = true, cases = {
        { ":1\r\n", "SCRIPT LOAD with an integer" },
        { "$-1\r\n", "SCRIPT LOAD with nil" },
        { "*1\r\n$40\r\n" .. ("a"):rep(40) .. "\r\n", "SCRIPT LOAD with an array of 1" },
        { "$3\r\nabc\r\n", "SCRIPT LOAD with a string where a script id" },
        { "-ERR hostile script\r\n", "ERR hostile script" },
    } },
    { cmd = "EVALSHA take", gate = true, cases = {
        { ":1\r\n", "EVALSHA (take) with an integer" },
        { "$-1\r\n", "EVALSHA (take) with nil" },
        { "*-1\r\n", "EVALSHA (take) with nil" },
        { "$2\r\n10\r\n", "EVALSHA (take) with a string" },
        { "*2\r\n$1\r\n1\r\n$1\r\n0\r\n", "EVALSHA (take) with an array of 2" },
        { "*1\r\n:0\r\n", "EVALSHA (take) with an array of 1" },
        { "*2\r\n:3\r\n:0\r\n", "EVALSHA (take) with an array of 2" },
        { "*2\r\n:0\r\n*0\r\n", "EVALSHA (take) with an array of 2" },
        { "-ERR hostile take\r\n", "ERR hostile take" },
    } },
    { cmd = "EVALSHA claim", gate = true, extra = { min_interval = 0.01 }, cases = {
        { "*1\r\n:5\r\n", "EVALSHA (claim) with an array of 1" },
        { "$3\r\n100\r\n", "EVALSHA (claim) with a string" },
        { "$-1\r\n", "EVALSHA (claim) with nil" },
        { "-ERR hostile claim\r\n", "ERR hostile claim" },
    } },
    { cmd = "GET", gate = true, cases = {
        { ":5\r\n", "GET with an integer" },
        { "*1\r\n$1\r\n5\r\n", "GET with an array of 1" },
        { "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", "WRONGTYPE" },
    } },
    { cmd = "AUTH", gate = true, password = true, cases = {
        { ":1\r\n", "AUTH with an integer" },
        { "*0\r\n", "AUTH with an array of 0" },
        { "$-1\r\n", "authentication refused" },
        { "-ERR hostile auth\r\n", "ERR hostile auth" },
    } },
    { cmd = "SELECT", gate = true, db = 3, cases = {
        { "$-1\r\n", "cannot select database 3" },
        { ":0\r\n", "SELECT with an integer" },
        { "-ERR DB index is out of range\r\n", "DB index is out of range" },
    } },
    { cmd = "EVALSHA free", cases = {
        { "*0\r\n", "EVALSHA (free) with an array of 0" },
        { "$1\r\n1\r\n", "EVALSHA (free) with a string" },
        { "-ERR hostile free\r\n", "ERR hostile free" },
    } },
    { cmd = "EVALSHA add", cases = {
        { "$-1\r\n", "EVALSHA (add) with nil" },
        { "*1\r\n:1\r\n", "EVALSHA (add) with an array of 1" },
        { "+OK\r\n", "EVALSHA (add) with a string" },
        { "-ERR hostile add\r\n", "ERR hostile add" },
    } },
    { cmd = "SET", cases = {
        { ":1\r\n", "SET with an integer" },
        { "*1\r\n+OK\r\n", "SET with an array of 1" },
        { "-ERR hostile set\r\n", "ERR hostile set" },
    } },
}

-- The hostile server's URL for group `g`.
local function url_of(h, g)
    return "redis://" .. (g.password and ":spec-pw@" or "") .. "127.0.0.1:" .. h.port .. "/" .. (g.db or 0)
end

describe("fleet mode against a hostile Redis: #slow", function()
    local srv
    setup(function()
        srv = support.fake()
    end)
    teardown(function()
        srv:stop()
    end)
    before_each(function()
        srv:control("reset")
    end)

    for _, mode in ipairs(MODES) do
        for _, g in ipairs(WRONG) do
            it(g.cmd .. " answered with the wrong type or an error: no raise (redis_failure = " .. mode .. ")",
                function()
                for _, case in ipairs(g.cases) do
                    local reply, expect = case[1], case[2]
                    local what = g.cmd .. " -> " .. string.format("%q", reply)
                    local h = redis.hostile { [g.cmd] = reply }
                    finally(function() h:stop() end)
                    local x, lines = fleet(srv, url_of(h, g), mode, g.extra)
                    if g.gate then
                        check_refused_or_local(srv, x, lines, mode, expect, what)
                    elseif g.cmd == "SET" then
                        -- quota() measures (token_info), then stores the measurement.
                        local q, err = call(x, "quota")
                        if mode == "refuse" then
                            assert.is_nil(q, what)
                            assert.equal("state", err.kind, what)
                            assert.truthy(tostring(err):find(expect, 1, true), what .. ": " .. tostring(err))
                        else
                            assert.is_table(q, what .. ": " .. tostring(err))
                            assert.truthy(table.concat(warnings(lines), "\n"):find(expect, 1, true),
                                what .. ": " .. table.concat(lines, " / "))
                        end
                    else
                        -- After the call went out: the call's rows, and one warning.
                        local rows, err = call(x, "services")
                        assert.is_table(rows, what .. ": " .. tostring(err))
                        local w = warnings(lines)
                        assert.equal(1, #w, what .. ": " .. table.concat(lines, " / "))
                        assert.truthy(w[1]:find(expect, 1, true), what .. ": " .. w[1])
                    end
                    call(x, "close")
                    h:stop()
                end
            end)
        end
    end

    for _, mode in ipairs(MODES) do
        it("fails a reply dripped one byte every 2 s at the command's deadline, not at the drip's end ("
            .. mode .. ")", function()
            -- The deadline is connect_timeout (3 s here).  Before, each read
            -- had its own 3 s, which a byte every 2 s never used up: the drip
            -- (20 s, then twice as the command was tried again) held the call.
            local h = redis.hostile { ["EVALSHA take"] = { drip = "$1000\r\n" .. ("x"):rep(1000) .. "\r\n", every = 2,
                limit = 20 } }
            finally(function() h:stop() end)
            local x, lines = fleet(srv, h.url, mode, { connect_timeout = 3 })
            local t0 = core.now()
            check_refused_or_local(srv, x, lines, mode, "within 3 s", "drip")
            local took = core.now() - t0
            assert.is_true(took < 13, "the call took " .. took .. " s")
            x:close()
        end)
    end

    for _, mode in ipairs(MODES) do
        it("gives one fleet operation its timeout for all it sends, connecting included (" .. mode .. ")",
            function()
            -- Every command answered, each a little under the timeout (2 s of
            -- 3): the operation (here the ledger's first GET, on a new
            -- connection: AUTH, SELECT, GET) ends within its 3 s, however
            -- many commands it needed.
            local slow = { drip = "+OK\r\n", every = 0.5, limit = 60 }
            local h = redis.hostile { AUTH = slow, SELECT = slow, GET = { drip = "$-1\r\n", every = 0.5, limit = 60 } }
            finally(function() h:stop() end)
            local x, lines = fleet(srv, "redis://:spec-pw@127.0.0.1:" .. h.port .. "/3", mode, { connect_timeout = 3 })
            local t0 = core.now()
            check_refused_or_local(srv, x, lines, mode, "no whole reply from Redis by its deadline", "slow commands")
            local took = core.now() - t0
            assert.is_true(took < 13, "the call took " .. took .. " s")
            x:close()
        end)
    end

    -- The huge replies: each `stream` rule sends its header, then filler
    -- until the client goes away (or the declared size is reached).
    local HUGE = {
        { "a bulk string declaring 1 GiB", { stream = "$" .. GiB .. "\r\n", fill = "x", total = GiB + 16 },
            "too large (over 1048576 bytes)" },
        { "an array declaring 100 million elements", { stream = "*100000000\r\n", fill = ":1\r\n",
            total = 400000020 }, "too large (over 4096 elements)" },
    }
    for _, mode in ipairs(MODES) do
        for _, case in ipairs(HUGE) do
            it("refuses " .. case[1] .. " at once (" .. mode .. ")", function()
                local h = redis.hostile { ["EVALSHA take"] = case[2] }
                finally(function() h:stop() end)
                local x, lines = fleet(srv, h.url, mode)
                local t0 = core.now()
                check_refused_or_local(srv, x, lines, mode, case[3], case[1])
                local took = core.now() - t0
                assert.is_true(took < 10, "took " .. took .. " s")
                x:close()
            end)
        end
    end

    for _, mode in ipairs(MODES) do
        for _, case in ipairs(HUGE) do
            it("reads " .. case[1] .. " in bounded memory (" .. mode .. ", a child under ulimit -v)", function()
                local h = redis.hostile { ["EVALSHA take"] = case[2] }
                finally(function() h:stop() end)
                -- The backend as a fleet client has it, in a process of its own
                -- whose peak RSS is read from /proc at the end.
                local code = string.format([[
                    local sr = require "wolkvox.limits.redis"
                    local state = require "wolkvox.limits.shared"
                    local cfg = sr.parse(%q)
                    local b = sr.new { cfg = cfg, connect = sr.connector(cfg), prefix = "spec:", timeout = 5 }
                    local g = state.guard(b, { failure = %q })
                    local ok, a = pcall(g.call, g, "take", { "slot:{k}:1", "slot:{k}:2" }, 60, 0.25)
                    local why = type(a) == "table" and a.message or tostring(a)
                    local f = io.open("/proc/self/status")
                    local hwm = f:read("*a"):match("VmHWM:%%s*(%%d+)")
                    f:close()
                    io.write(tostring(ok), "|", why, "|", hwm, "\n")
                ]], h.url, mode)
                local p = io.popen(support.timed(support.limited_command(1000000, code), 120) .. " 2>&1")
                local out = p:read("*a")
                p:close()
                local ok, why, hwm = out:match("^(%a+)|(.-)|(%d+)\n")
                assert.is_not_nil(hwm, out)
                if mode == "refuse" then
                    assert.equal("false", ok, out)
                    assert.truthy(why:find(case[3], 1, true), out)
                else
                    -- (the guard said "local": false, this host's own limits)
                    assert.equal("true|false", ok .. "|" .. why, out)
                end
                assert.is_true(tonumber(hwm) < 64 * 1024, "peak RSS " .. hwm .. " kB: " .. out)
            end)
        end
    end

    it("never waits longer than a lease for a slot, nor longer than min_interval for a start", function()
        -- Integers of the right type, but waits no Redis running these
        -- scripts can give (a slot is kept a lease at most, a start
        -- `interval`): 31 years.
        local h = redis.hostile { ["EVALSHA take"] = "*2\r\n:0\r\n:999999999999\r\n",
            ["EVALSHA claim"] = ":999999999999\r\n" }
        finally(function() h:stop() end)
        local cfg = assert(state_redis.parse(h.url))
        local b = state_redis.new { cfg = cfg, connect = assert(state_redis.connector(cfg)), prefix = "spec:" }
        local slot, wait = b:take({ "slot:{k}:1", "slot:{k}:2" }, 65, 0.25)
        assert.is_false(slot)
        assert.is_true(wait > 0 and wait <= 65, tostring(wait))
        local claimed
        claimed, wait = b:claim("pace:{k}", 2)
        assert.is_false(claimed)
        assert.is_true(wait > 0 and wait <= 2, tostring(wait))
        b:close()
    end)

    it("drops the connection that saw a bad reply: the next command opens another", function()
        local bad = {
            { GET = { send = ":5\r\n", after = 1, times = 1 } },
            { GET = { send = "*100000000\r\n", after = 1, times = 1 } },
            { GET = { stream = "$" .. GiB .. "\r\n", fill = "x", total = GiB + 16, after = 1, times = 1 } },
            { GET = { send = "*2\r\n$1\r\n1\r\n", after = 1, times = 1 } },  -- half a reply, then nothing
            { GET = { send = ":1\r\n:2\r\n", after = 1, times = 1 } },       -- two replies to one command
        }
        for _, rules in ipairs(bad) do
            local r = rules.GET
            local h = redis.hostile(rules)
            finally(function() h:stop() end)
            local cfg = assert(state_redis.parse(h.url))
            local b = state_redis.new { cfg = cfg, connect = assert(state_redis.connector(cfg)), prefix = "spec:",
                timeout = 1 }
            assert.is_false(b:get("x"))         -- a first command on connection 1
            local v, err = b:get("x")           -- the bad reply
            assert.is_nil(v, string.format("%q", r.send or r.stream))
            assert.is_string(err)
            assert.is_nil(b.conn, err)
            assert.is_false(b:get("x"))         -- the next on a new connection
            local log = h:log()
            assert.equal("1 GET", log[1])
            assert.equal("1 GET (hostile)", log[2])
            assert.equal("2 GET", log[3])
            assert.equal(2, h:connections())
            b:close()
            h:stop()
        end
    end)
end)

describe("wolkvox.redis against a hostile server #slow", function()
    it("answers nil, a message and a kind to any bad reply, closes the connection, and never crashes", function()
        -- In a child process of this flavour's instrumentation (ASan or
        -- valgrind when the suite runs under them): an error inside an array
        -- used to corrupt the Lua stack (a crash).
        local cases = {
            { "*2\r\n-ERR inside\r\n:0\r\n", nil },            -- a reply: { false, 0 }
            { "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", "protocol" },
            { "*-5\r\n", "protocol" },
            { "hello\r\n", "protocol" },
            { ":1\r\n:2\r\n", "protocol" },
            { "*4097\r\n", "protocol" },
            { "$1048577\r\n", "protocol" },
            { "*3\r\n*4000\r\n*100\r\n", "protocol" },
        }
        for i = 1, #cases do
            local reply = cases[i][1]
            -- (one hostile server per case: the GET of each gets that reply)
            local hs = redis.hostile { GET = reply:sub(1, 1) == "$" and { stream = reply, fill = "y",
                total = 2 * 1024 * 1024 } or reply }
            finally(function() hs:stop() end)
            local code = string.format([[
                local conn = assert(require("wolkvox.redis").connect("127.0.0.1", %d, 2))
                local r, err, kind = conn:command("GET", "x")
                if type(r) == "table" then
                    r = "{" .. tostring(r[1]) .. "," .. tostring(r[2]) .. "}"
                end
                local again, err2, kind2 = conn:command("PING")
                io.write(tostring(r), "|", tostring(kind), "|", tostring(conn:broken()), "|",
                    tostring(again), "|", tostring(kind2), "|", tostring(err), "\n")
                conn:close()
                io.write("done\n")
            ]], hs.port)
            local p = io.popen(support.timed(support.checked_command(code), 300) .. " 2>&1; echo exit=$?")
            local out = p:read("*a")
            p:close()
            assert.truthy(out:find("done\nexit=0", 1, true), string.format("%q: ", reply) .. out)
            if cases[i][2] == nil then
                assert.truthy(out:find("^{false,0}|nil|false|PONG|nil|"), out)
            else
                assert.truthy(out:find("^nil|protocol|true|nil|io|"), string.format("%q: ", reply) .. out)
            end
            hs:stop()
        end
    end)

    it("bounds a command by its deadline however the reply is dripped, and exposes its caps", function()
        assert.equal(1024 * 1024, client.max_reply_bytes)
        assert.equal(4096, client.max_reply_elements)
        local h = redis.hostile { PING = { drip = "+PONG-PONG-PONG-PONG\r\n", every = 0.4, limit = 20 } }
        finally(function() h:stop() end)
        local conn = assert(client.connect("127.0.0.1", h.port, 1))
        local t0 = core.now()
        local r, err, kind = conn:command("PING")
        local took = core.now() - t0
        assert.is_nil(r)
        assert.equal("timeout", kind, err)
        assert.truthy(err:find("within 1 s", 1, true), err)
        assert.is_true(took < 8, "took " .. took .. " s")
        assert.is_true(conn:broken())
        conn:close()
        -- conn:deadline(at) cuts every command shorter, until forgotten.
        conn = assert(client.connect("127.0.0.1", h.port, 30))
        assert.has_error(function() conn:deadline(0 / 0) end)
        conn:deadline(client.clock() + 0.5)
        conn:deadline()
        conn:deadline(client.clock() + 1)
        t0 = core.now()
        r, err, kind = conn:command("PING")
        took = core.now() - t0
        assert.is_nil(r)
        assert.equal("timeout", kind, err)
        assert.truthy(err:find("by its deadline", 1, true), err)
        assert.is_true(took < 8, "took " .. took .. " s")
        conn:close()
    end)
end)

describe("fleet mode on a real redis-server, with the reply caps #slow", function()
    local srv, rs
    redis.suite(nil, function(a, b) srv, rs = a, b end)
    before_each(function()
        srv:control("reset")
        rs:command("FLUSHALL")
    end)

    it("takes a reply under the cap, refuses one over it, then goes on with the calls", function()
        -- wolkvox.redis itself: 1 MiB - 1 kB comes back whole; 2 MiB is
        -- refused and the connection closed, the server none the worse.
        local conn = rs:connect()
        local big = ("v"):rep(1024 * 1024 - 1024)
        assert.equal("OK", conn:command("SET", "spec:big", big))
        assert.equal(big, conn:command("GET", "spec:big"))
        assert.equal("OK", conn:command("SET", "spec:huge", ("w"):rep(2 * 1024 * 1024)))
        local r, err, kind = conn:command("GET", "spec:huge")
        assert.is_nil(r)
        assert.equal("protocol", kind)
        assert.truthy(err:find("too large", 1, true), err)
        assert.is_true(conn:broken())
        conn:close()
        assert.equal(2, rs:command("DEL", "spec:big", "spec:huge"))

        -- A fleet host's calls, slots and count, in both failure modes.
        state.RETRY_AFTER = 0
        finally(function() state.RETRY_AFTER = 5 end)
        local count = 0
        for _, mode in ipairs(MODES) do
            local x, lines = fleet(srv, rs.url, mode)
            assert.is_table(call(x, "services"))
            assert.is_table(call(x, "services"))
            count = count + 2
            assert.same({}, warnings(lines))
            assert.equal(0, #rs:command("KEYS", "wolkvox:slot:*"))
            assert.equal(tostring(count), rs:command("GET", rs:command("KEYS", "wolkvox:calls:*")[1]))
            -- A measurement planted over the cap (a broken or hostile
            -- writer): a state error or this host's limits, not a raise;
            -- once it is gone, Redis is used again.
            local calls_key = rs:command("KEYS", "wolkvox:calls:*")[1]
            local measured = calls_key:gsub("^wolkvox:calls:", "wolkvox:measured:")
            assert.equal("OK", rs:command("SET", measured, ("9"):rep(2 * 1024 * 1024)))
            check_refused_or_local(srv, x, lines, mode, "too large", "planted measurement")
            assert.equal(1, rs:command("DEL", measured))
            assert.is_table(call(x, "services"))
            x:close()
            -- (the call made on this host's limits is counted in Redis too)
            count = count + (mode == "refuse" and 1 or 2)
            assert.equal(tostring(count), rs:command("GET", calls_key))
        end
    end)

    it("refuses, or falls back to this host's limits, when today's count is not a count", function()
        -- Read as 0, a planted or broken count would let the day be spent twice.
        state.RETRY_AFTER = 0
        finally(function() state.RETRY_AFTER = 5 end)
        for _, mode in ipairs(MODES) do
            for _, planted in ipairs { "abc", "-5", "1e9", "0x10", " 7", "3.5" } do
                rs:command("FLUSHALL")
                local x, lines = fleet(srv, rs.url, mode)
                assert.is_table(call(x, "services"))
                local calls_key = rs:command("KEYS", "wolkvox:calls:*")[1]
                assert.equal("OK", rs:command("SET", calls_key, planted))
                if mode == "refuse" then
                    check_refused_or_local(srv, x, lines, mode, "for today's calls, not a count", planted)
                    local _, err = call(x, "services")
                    assert.truthy(tostring(err):find("holds '" .. planted .. "'", 1, true), tostring(err))
                else
                    -- The call is made on this host's limits, said in a warning
                    -- (and counting it in Redis fails too, said in another).
                    local before = srv:control("stats").requests
                    assert.is_table(call(x, "services"))
                    assert.equal(before + 1, srv:control("stats").requests)
                    local w = table.concat(warnings(lines), " / ")
                    assert.truthy(w:find("holds '" .. planted .. "' for today's calls, not a count; this host "
                        .. "falls back", 1, true), planted .. ": " .. w)
                end
                -- Once it is a count again, Redis is used again.
                assert.equal("OK", rs:command("SET", calls_key, "1"))
                assert.is_table(call(x, "services"))
                x:close()
            end
        end
    end)
end)
