-- Fleet mode: hosts (here processes with state directories of their own)
-- share one token's 2 slots and the day's count through Redis.  The spec
-- starts Debian's redis-server itself on a free loopback port.
local support = require "support"
local redis = require "redis"
local wolkvox = require "wolkvox"

if not (redis.binary() and redis.client_built()) then
    describe("fleet mode (Redis) #slow", function()
        redis.need()
    end)
    return
end

local core = require "wolkvox.core"
local pacer = require "wolkvox.limits.pacer"
local state = require "wolkvox.limits.shared"
local state_redis = require "wolkvox.limits.redis"

-- A child process ("a host") with its own state directory: a six-month
-- cdr_1 report through Redis; prints "<rows> <calls>" (or, killed after
-- 120 s, that it was: a lease that never ends fails the spec, not spec/run).
local function host(srv, url, extra)
    local code = string.format([[
        local wolkvox = require "wolkvox"
        local c = assert(wolkvox.new { base_url = %q, token = %q, state_dir = %q, retries = 0,
            redis = %q %s })
        local rows, meta = c:report("cdr_1", { from = "2026-01-01", to = "2026-06-30" })
        io.write(rows and #rows or tostring(meta), " ", c:stats().calls, "\n")
        c:close()
    ]], srv.url, srv.token, support.tmpdir(), url, extra or "")
    return assert(io.popen(support.timed(support.lua_command(code), 120) .. " 2>&1", "r"))
end

local read_all = support.read_all

-- A pacer on Redis alone (keys of token "k"), as a host's client makes it.
local function fleet_pacer(url, lease, failure)
    local cfg = assert(state_redis.parse(url))
    local b = state_redis.new { cfg = cfg, connect = assert(state_redis.connector(cfg)), prefix = "spec:" }
    return pacer.new { shared = state.guard(b, { failure = failure }), shared_key = "{k}", lease = lease,
        server_limit = 3, time = core.time }, b
end

describe("fleet mode (Redis) #slow", function()
    local srv, rs
    redis.suite(nil, function(a, b) srv, rs = a, b end)
    before_each(function()
        srv:control("reset")
        if not rs.pid then
            rs:start()
        end
        rs:command("FLUSHALL")
    end)

    it("keeps four hosts with one token to 2 calls in flight, and counts every call once", function()
        srv:control("config", { latency = 0.1, max_rows = 60000 })
        local out = read_all { host(srv, rs.url), host(srv, rs.url), host(srv, rs.url), host(srv, rs.url) }
        for _, line in ipairs(out) do
            assert.equal("18100 6\n", line)
        end
        local stats = srv:control("stats")
        assert.is_true(stats.max_inflight <= 2, "the fake saw " .. stats.max_inflight .. " in flight")
        for _, entry in ipairs(srv:log()) do
            assert.is_nil(entry.refused)
            assert.is_true(entry.inflight <= 2)
        end
        assert.equal(24, stats.requests)
        -- A fifth host, with a state directory of its own, reads the shared count.
        local x = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url })
        local q = x:quota { measure = false }
        assert.equal(24, q.used)
        assert.equal(0, q.calls)
        x:close()
    end)

    it("(control) the same four hosts without Redis exceed 2 in flight", function()
        srv:control("config", { latency = 0.1, max_rows = 60000 })
        local pipes = {}
        for i = 1, 4 do
            local code = string.format([[
                local wolkvox = require "wolkvox"
                local c = assert(wolkvox.new { base_url = %q, token = %q, state_dir = %q, retries = 0 })
                c:report("cdr_1", { from = "2026-01-01", to = "2026-06-30" })
            ]], srv.url, srv.token, support.tmpdir())
            pipes[i] = assert(io.popen(support.timed(support.lua_command(code), 120) .. " 2>&1", "r"))
        end
        read_all(pipes)
        assert.is_true(support.exceeded(srv), "the fake never saw more than 2 in flight")
    end)

    it("keys carry the prefix and fingerprints only, never the token", function()
        local x = support.client(srv, { state_dir = false, redis = rs.url, redis_prefix = "acme:" })
        assert(x:services())
        x:close()
        local keys = rs:command("KEYS", "*")
        assert.is_true(#keys >= 1)
        for _, k in ipairs(keys) do
            assert.truthy(k:find("^acme:"), k)
            assert.falsy(k:find(srv.token, 1, true), k)
        end
        local day = support.client(srv, { state_dir = false, redis = rs.url, redis_prefix = "acme:" })
        local q = day:quota { measure = false }
        day:close()
        -- The count lives a week.
        local calls = assert(rs:command("KEYS", "acme:calls:*"))[1]
        assert.truthy(calls:find(q.day, 1, true))
        local ttl = rs:command("TTL", calls)
        assert.is_true(ttl > 6 * 86400 and ttl <= 7 * 86400)
    end)

    it("frees the slots of a host killed with SIGKILL when their lease ends", function()
        local code = string.format([[
            local pacer = require "wolkvox.limits.pacer"
            local state = require "wolkvox.limits.shared"
            local sr = require "wolkvox.limits.redis"
            local cfg = sr.parse(%q)
            local b = sr.new { cfg = cfg, connect = sr.connector(cfg), prefix = "spec:" }
            local pc = pacer.new { shared = state.guard(b, {}), shared_key = "{k}", lease = 4 }
            assert(pc:acquire())
            assert(pc:acquire())
            io.write(io.open("/proc/self/stat"):read("*l"):match("^%%d+"), "\n")
            io.stdout:flush()
            require("wolkvox.core").sleep(60)
        ]], rs.url)
        local p = assert(io.popen(support.timed(support.lua_command(code), 90), "r"))
        local pid = assert(tonumber(p:read("*l")))
        local pc = fleet_pacer(rs.url, 4)
        local slot, wait, why = pc:acquire()
        assert.is_nil(slot)
        assert.equal("slot", why)
        assert.is_true(wait > 0)
        os.execute("kill -9 " .. pid)
        p:close()
        -- The lease (4 s) is all that is left of the dead holder (-2: over already).
        local ttl = rs:command("PTTL", "spec:slot:{k}:1")
        assert.is_true(ttl <= 4000)
        -- (at most 15 s: a lease that never ends fails here instead of hanging)
        slot = support.wait_for(function() return (pc:acquire()) end, 15,
            "a slot once the killed holder's 4 s lease ended")
        assert.is_table(slot)
        pc:release(slot)
    end)

    it("lets another host call once a client killed in the middle of two calls lost its leases", function()
        -- The killed client's two calls end at the fake after 1 s (its
        -- server_limit); its leases last max(timeout, server_limit) + 5 s.
        support.faults(srv, { { match = "cdr_1", delay = 1, times = 2 } })
        local code = string.format([[
            local wolkvox = require "wolkvox"
            local c = assert(wolkvox.new { base_url = %q, token = %q, state_dir = false, retries = 0,
                redis = %q, timeout = 1, server_limit = 1 })
            c:cdr_1 { from = "2026-01-01", to = "2026-02-28" }
        ]], srv.url, srv.token, rs.url)
        local p = assert(io.popen(support.lua_command(code) .. " & echo $!", "r"))   -- (not read: no wait)
        local pid = assert(tonumber(p:read("*l")))
        support.wait_for(function() return srv:control("stats").inflight == 2 end, 10,
            "the client's two calls at the fake")
        assert.equal(2, srv:control("stats").inflight)
        os.execute("kill -9 " .. pid)
        p:close()
        -- Both leases are still in Redis: this host waits for them, then calls.
        assert.equal(2, #rs:command("KEYS", "wolkvox:slot:*"))
        local throttled = 0
        -- (deadline: leases that never end are a slot timeout, not a hang)
        local x = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url, retries = 0, deadline = 30,
            on_throttle = function() throttled = throttled + 1 end })
        assert(x:services())
        x:close()
        assert.equal(1, throttled)
        for _, entry in ipairs(srv:log()) do
            assert.is_nil(entry.refused)
        end
        assert.equal(3, srv:control("stats").requests)
    end)

    it("keeps an abandoned call's slot until start + server_limit, frees a finished one at once", function()
        local pc = fleet_pacer(rs.url, 30)
        local a = assert(pc:acquire())
        local b = assert(pc:acquire())
        pc:release(a)
        assert.is_false(rs:command("GET", "spec:" .. a.shared_key))
        pc:release(b, true)
        assert.equal("~", rs:command("GET", "spec:" .. b.shared_key))
        local ttl = rs:command("PTTL", "spec:" .. b.shared_key)
        assert.is_true(ttl > 0 and ttl <= 3000)
        -- Both abandoned: the wait is what is left of them (server_limit =
        -- 3), not the 30 s lease of a live call.
        pc:release(assert(pc:acquire()), true)
        local d, wait, why = pc:acquire()
        assert.is_nil(d)
        assert.equal("slot", why)
        assert.is_true(wait > 0 and wait <= 3)
    end)

    it("spaces the starts of every host by min_interval", function()
        local p1 = fleet_pacer(rs.url, 30)
        local p2 = fleet_pacer(rs.url, 30)
        p1.min_interval, p2.min_interval = 30, 30
        local s1 = assert(p1:acquire())
        local s2, wait, why = p2:acquire()
        assert.is_nil(s2)
        assert.equal("interval", why)
        assert.is_true(wait > 29 and wait <= 30)
        p1:release(s1)
    end)

    it("refuses calls with a state error while Redis is down (the default)", function()
        rs:stop()
        local lines = {}
        local x = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url,
            logger = function(level, line) lines[#lines + 1] = level .. " " .. line end })
        local rows, err = x:services()
        assert.is_nil(rows)
        assert.equal("state", err.kind)
        assert.truthy(tostring(err):find(rs.url, 1, true))
        assert.equal(0, srv:control("stats").requests)
        assert.is_nil(x:stats().quota_used)
        rs:start()
        assert(x:services())
        assert.equal(1, x:quota({ measure = false }).used)
        x:close()
    end)

    it("adds a batch of counts sent again (its answer lost) once, and every new batch", function()
        local cfg = assert(state_redis.parse(rs.url))
        local b = state_redis.new { cfg = cfg, connect = assert(state_redis.connector(cfg)), prefix = "spec:" }
        assert.equal(2, b:add("calls:{op}:d", 2, 60, "host-a", 1))
        assert.equal(2, b:add("calls:{op}:d", 2, 60, "host-a", 1))   -- the same batch again
        assert.equal(5, b:add("calls:{op}:d", 3, 60, "host-b", 1))   -- another adder's first
        assert.equal(6, b:add("calls:{op}:d", 1, 60, "host-a", 2))
        assert.equal(6, b:add("calls:{op}:d", 1, 60, "host-a", 1))   -- an older one
        assert.equal(7, b:add("calls:{op}:d", 1, 60))                -- no adder: always added
        assert.equal("7", rs:command("GET", "spec:calls:{op}:d"))
        assert.is_true(rs:command("TTL", "spec:adds:calls:{op}:d") > 0)
        b:close()
    end)

    it("counts at close a call Redis missed, even within seconds of the outage", function()
        -- Redis goes away while the call is in flight: its count waits in
        -- this host; Redis is back, and the host closes at once (within
        -- RETRY_AFTER of the failure): the count must still reach Redis.
        srv:control("config", { latency = 1 })
        local x = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url })
        local pid = rs.pid
        os.execute("(sleep 0.3; kill " .. pid .. ") &")
        assert(x:services())
        support.wait_for(function() return not support.alive(pid) end, 20, "redis-server to stop")
        rs.pid = nil
        rs:start()
        x:close()
        srv:control("config", { latency = 0 })
        local y = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url })
        assert.equal(1, y:quota({ measure = false }).used)
        y:close()
    end)

    it("falls back to this host's limits with one warning (redis_failure = \"local\")", function()
        rs:stop()
        -- (Redis is asked again at every call, not after RETRY_AFTER seconds.)
        state.RETRY_AFTER = 0
        finally(function() state.RETRY_AFTER = 5 end)
        local lines = {}
        local dir = support.tmpdir()
        local x = support.client(srv, { state_dir = dir, redis = rs.url, redis_failure = "local",
            logger = function(level, line) lines[#lines + 1] = level .. " " .. line end })
        assert(x:services())
        assert(x:services())
        assert(x:services())
        local warns = 0
        for _, l in ipairs(lines) do
            if l:find("^warn ") then
                warns = warns + 1
                assert.truthy(l:find("falls back", 1, true))
            end
        end
        assert.equal(1, warns)
        assert.equal(3, srv:control("stats").requests)
        -- This host's own ledger counted them.
        local q = x:quota { measure = false }
        assert.equal(3, q.used)
        -- Back up: the calls Redis missed are added with the next one.
        rs:start()
        assert(x:services())
        x:close()
        local y = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url })
        assert.equal(4, y:quota({ measure = false }).used)
        y:close()
    end)

    it("shares token_info's measurement: another host's quota { measure = false } builds on it", function()
        srv:control("config", { daily_limit = 5000 })
        local a = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url })
        local b = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url })
        local m = assert(a:quota())
        assert.equal("measured", m.source)
        assert(b:services())
        local q = b:quota { measure = false }
        assert.equal("measured", q.source)
        assert.equal(5000, q.measured_limit)
        assert.equal(m.used + 1, q.used)
        a:close()
        b:close()
    end)

    it("is turned on by wolkvox --redis and by a profile's redis key", function()
        local function cli(env, argv)
            local vars = { "env -u LD_PRELOAD -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE HOME=" .. support.tmpdir(),
                "WOLKVOX_TOKEN=" .. srv.token }
            for k, v in pairs(env) do
                vars[#vars + 1] = k .. "=" .. v
            end
            local p = io.popen(support.timed(table.concat(vars, " ") .. " lua5.4 bin/wolkvox " .. argv, 60)
                .. " 2>&1; echo \"exit=$?\"")
            local out = p:read("*a")
            p:close()
            return tonumber(out:match("exit=(%d+)%s*$")), out
        end
        local code, out = cli({}, "--base-url " .. srv.url .. " --state-dir " .. support.tmpdir()
            .. " --redis " .. rs.url .. " call information services")
        assert.equal(0, code, out)
        local config = support.tmpdir() .. "/config"
        local f = assert(io.open(config, "w"))
        f:write("[default]\nbase_url = ", srv.url, "\nredis = ", rs.url, "\n")
        f:close()
        os.execute("chmod 600 " .. config)
        code, out = cli({ WOLKVOX_CONFIG = config }, "--state-dir " .. support.tmpdir() .. " call information services")
        assert.equal(0, code, out)
        -- Both counted in Redis (each host's own ledger has one).
        local x = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url })
        assert.equal(2, x:quota({ measure = false }).used)
        x:close()
        -- Redis down: exit code 5, the state error on stderr, nothing sent.
        rs:stop()
        code, out = cli({ WOLKVOX_CONFIG = config }, "--state-dir " .. support.tmpdir() .. " call information services")
        assert.equal(5, code, out)
        assert.truthy(out:find("state", 1, true), out)
        assert.equal(2, srv:control("stats").requests)
    end)

    it("works with the in-process fake transport too", function()
        local c = assert(wolkvox.new { transport = "fake", server = "0031", token = "test-token",
            state_dir = false, redis = rs.url })
        assert(c:services())
        assert(c:services())
        c:close()
        local x = assert(wolkvox.new { transport = "fake", server = "0031", token = "test-token",
            state_dir = false, redis = rs.url })
        assert.equal(2, x:quota({ measure = false }).used)
        x:close()
    end)

    it("does not let a program this host starts inherit its Redis connection", function()
        local c = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url })
        assert.is_table(c:services())
        assert.is_true(support.not_inherited(rs.port, "Redis") >= 1)
        c:close()
    end)

    it("survives a Redis restart in the middle of a run and loses no count", function()
        srv:control("config", { latency = 0.02 })
        local stop = support.tmpdir() .. "/stop"
        local pipes = {}
        for i = 1, 2 do
            local code = string.format([[
                local wolkvox = require "wolkvox"
                local core = require "wolkvox.core"
                local c = assert(wolkvox.new { base_url = %q, token = %q, state_dir = %q, retries = 0,
                    redis = %q, timeout = 5, server_limit = 1 })
                local ok, refused, other = 0, 0, {}
                local give_up = core.now() + 90   -- (the spec's stop file never made: ends anyway)
                while not io.open(%q) and core.now() < give_up do
                    local rows, err = c:services()
                    if rows then
                        ok = ok + 1
                    elseif err.kind == "state" then
                        refused = refused + 1
                        core.sleep(0.05)
                    else
                        other[#other + 1] = tostring(err)
                    end
                end
                c:close()
                io.write("ok ", ok, " other ", #other, " ", table.concat(other, "; "), "\n")
            ]], srv.url, srv.token, support.tmpdir(), rs.url, stop)
            pipes[i] = assert(io.popen(support.timed(support.lua_command(code), 120) .. " 2>&1", "r"))
        end
        -- The hosts end at once if this test fails before it makes the stop file.
        finally(function() io.open(stop, "w"):close() end)
        local function wait_requests(n)
            support.wait_for(function() return srv:control("stats").requests >= n end, 30,
                "the hosts to make " .. n .. " calls (no progress)")
        end
        wait_requests(6)
        rs:stop()
        local before = srv:control("stats").requests
        rs:start()
        wait_requests(before + 6)
        io.open(stop, "w"):close()
        local out = read_all(pipes)
        local total = 0
        for _, line in ipairs(out) do
            local ok, other = line:match("^ok (%d+) other (%d+)")
            assert.is_not_nil(ok, line)
            assert.equal("0", other, line)
            total = total + tonumber(ok)
        end
        local requests = srv:control("stats").requests
        assert.equal(requests, total)
        local x = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url })
        assert.equal(requests, x:quota({ measure = false }).used)
        x:close()
    end)
end)

describe("fleet mode (Redis) with AUTH #slow", function()
    local srv, rs
    local PASSWORD = "s3cret-fleet-pw"
    redis.suite({ password = PASSWORD }, function(a, b) srv, rs = a, b end)

    it("authenticates with a password, and never shows it", function()
        local url = "redis://:" .. PASSWORD .. "@127.0.0.1:" .. rs.port .. "/3"
        local x = support.client(srv, { state_dir = false, redis = url })
        assert(x:services())
        assert.equal(1, x:quota({ measure = false }).used)
        assert.falsy(tostring(x):find(PASSWORD, 1, true))
        x:close()
        -- A wrong one: a state error (or one warning) that does not show either.
        local wrong = "redis://:not-" .. PASSWORD .. "@127.0.0.1:" .. rs.port .. "/3"
        local y = support.client(srv, { state_dir = false, redis = wrong })
        local rows, err = y:services()
        assert.is_nil(rows)
        assert.equal("state", err.kind)
        assert.falsy(tostring(err):find(PASSWORD, 1, true))
        assert.truthy(tostring(err):find("authentication", 1, true))
        y:close()
        local lines = {}
        local z = support.client(srv, { state_dir = false, redis = wrong, redis_failure = "local",
            logger = function(_, line) lines[#lines + 1] = line end })
        assert(z:services())
        z:close()
        assert.is_true(#lines > 0)
        for _, l in ipairs(lines) do
            assert.falsy(l:find(PASSWORD, 1, true), l)
        end
    end)

    it("authenticates an ACL user", function()
        assert(rs:command("ACL", "SETUSER", "fleet", "on", ">fleet-pw", "~*", "+@all"))
        local x = support.client(srv, { state_dir = false, redis = "redis://fleet:fleet-pw@127.0.0.1:" .. rs.port })
        assert(x:services())
        x:close()
        local y = support.client(srv, { state_dir = false, redis = "redis://fleet:zq-other-9@127.0.0.1:" .. rs.port })
        local _, err = y:services()
        assert.equal("state", err.kind)
        assert.falsy(tostring(err):find("zq-other-9", 1, true))
        y:close()
    end)
end)

-- A client of `srv` with fleet options `o` whose first call is refused with
-- a state error; returns that error's text.
local function refused(srv, o)
    o.state_dir = false
    local x = support.client(srv, o)
    local rows, err = x:services()
    x:close()
    assert.is_nil(rows)
    assert.equal("state", err.kind)
    return tostring(err)
end

-- `wolkvox call information services` against `srv` with Redis `rs` and
-- more arguments: exit code, output.
local function cli_services(srv, rs, extra)
    local dir = support.tmpdir()
    support.spit(dir .. "/token", srv.token, "\n")
    local p = assert(io.popen(support.timed("env -u LD_PRELOAD -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE HOME=" .. dir
        .. " lua5.4 bin/wolkvox --base-url " .. srv.url .. " --token-file " .. dir .. "/token --state-dir "
        .. dir .. "/state --redis " .. rs.url .. extra .. " call information services", 60)
        .. " 2>&1; echo \"exit=$?\""))
    local out = p:read("*a")
    p:close()
    return out:match("exit=(%d+)%s*$"), out
end

-- A profile file holding `text`, readable by its owner only.
local function profile_file(text)
    local path = support.tmpdir() .. "/config"
    support.spit(path, "[default]\n", text)
    os.execute("chmod 600 " .. path)
    return path
end

describe("fleet mode (Redis) over TLS, outside nginx #slow", function()
    local srv, rs
    redis.suite({ tls = true }, function(a, b) srv, rs = a, b end)
    before_each(function()
        srv:control("reset")
        rs:command("FLUSHALL")
    end)

    it("verifies the server against redis_cafile, and shares the count", function()
        local x = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url, redis_cafile = rs.cert })
        assert(x:services())
        assert(x:services())
        x:close()
        assert.equal("2", rs:command("GET", rs:command("KEYS", "wolkvox:calls:*")[1]))
        local y = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url, redis_cafile = rs.cert })
        assert.equal(2, y:quota({ measure = false }).used)
        assert.is_true(support.not_inherited(rs.port, "Redis over TLS") >= 1)
        y:close()
    end)

    it("refuses a server it cannot verify, spending no call", function()
        -- The system's CAs do not know the spec's self-signed certificate.
        local why = refused(srv, { redis = rs.url })
        assert.truthy(why:find("certificate", 1, true), why)
        -- Nor with a name the certificate does not carry.
        why = refused(srv, { redis_cafile = rs.cert, redis = "rediss://localhost:" .. rs.port .. "/0" })
        assert.truthy(why:find("hostname mismatch", 1, true), why)
        -- Nor with a CA file that is not there.
        why = refused(srv, { redis = rs.url, redis_cafile = rs.dir .. "/none.pem" })
        assert.truthy(why:find("CA file", 1, true), why)
        assert.equal(0, srv:control("stats").requests)
    end)

    it("does not take a plain Redis for a TLS one", function()
        local plain = redis.start()
        finally(function() plain:stop() end)
        refused(srv, { redis_cafile = rs.cert, redis = "rediss://127.0.0.1:" .. plain.port .. "/0",
            connect_timeout = 2 })
        assert.equal(0, srv:control("stats").requests)
    end)

    it("gives up on a server that never answers the handshake, within its timeout", function()
        local socket = require "socket"
        local silent = assert(socket.bind("127.0.0.1", 0))   -- accepted by the kernel, never answered
        finally(function() silent:close() end)
        local _, port = silent:getsockname()
        local t0 = core.now()
        refused(srv, { redis_cafile = rs.cert, connect_timeout = 1, redis = "rediss://127.0.0.1:" .. port .. "/0" })
        local took = core.now() - t0
        assert.is_true(took < 30, "waited " .. took .. " s (a hang?)")
        assert.equal(0, srv:control("stats").requests)
    end)

    it("survives a Redis restart: the next command connects again", function()
        local x = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url, redis_cafile = rs.cert })
        assert(x:services())
        rs:stop()
        rs:start()
        assert(x:services())
        x:close()
        assert.equal("2", rs:command("GET", rs:command("KEYS", "wolkvox:calls:*")[1]))
    end)

    it("is turned on by --redis-cafile and by a profile's redis_cafile key", function()
        local code, out = cli_services(srv, rs, " --redis-cafile " .. rs.cert)
        assert.equal("0", code, out)
        code, out = cli_services(srv, rs, " --config " .. profile_file("redis_cafile = " .. rs.cert .. "\n"))
        assert.equal("0", code, out)
        code, out = cli_services(srv, rs, " --redis-cafile " .. rs.dir .. "/none.pem")
        assert.equal("5", code, out)
        assert.truthy(out:find("CA file", 1, true), out)
        assert.equal(2, srv:control("stats").requests)
    end)
end)

describe("fleet mode (Redis) over TLS with client certificates, outside nginx #slow", function()
    local srv, rs
    redis.suite({ tls = true, client_auth = true }, function(a, b) srv, rs = a, b end)
    before_each(function()
        srv:control("reset")
        rs:command("FLUSHALL")
    end)

    it("shows redis_cert and redis_key to a server that asks, and counts", function()
        local x = support.client(srv, { state_dir = support.tmpdir(), redis = rs.url, redis_cafile = rs.cert,
            redis_cert = rs.client_cert, redis_key = rs.client_key })
        assert(x:services())
        x:close()
        assert.equal("1", rs:command("GET", rs:command("KEYS", "wolkvox:calls:*")[1]))
    end)

    it("is refused without them, or with a key of another certificate, spending no call", function()
        refused(srv, { redis = rs.url, redis_cafile = rs.cert })
        -- The server's own key does not belong to the client certificate.
        local why = refused(srv, { redis = rs.url, redis_cafile = rs.cert, redis_cert = rs.client_cert,
            redis_key = rs.dir .. "/key.pem" })
        assert.truthy(why:find("client key", 1, true), why)
        why = refused(srv, { redis = rs.url, redis_cafile = rs.cert, redis_cert = rs.client_cert,
            redis_key = rs.dir .. "/none.key" })
        assert.truthy(why:find("client key", 1, true), why)
        assert.equal(0, srv:control("stats").requests)
    end)

    it("refuses an encrypted key, saying so, without asking for its passphrase on the terminal", function()
        -- (OpenSSL's default is to prompt on /dev/tty: a library must not, a
        -- cron job has none, and a prompt would wait past every deadline.)
        local enc = rs.dir .. "/encrypted.key"
        assert.equal(0, (support.sh("openssl pkey -in " .. rs.client_key .. " -aes256 -passout pass:secret-phrase -out "
            .. enc)))
        local why = refused(srv, { redis = rs.url, redis_cafile = rs.cert, redis_cert = rs.client_cert,
            redis_key = enc })
        assert.truthy(why:find("cannot read the Redis client key", 1, true), why)
        assert.truthy(why:find("passphrase", 1, true), why)
        assert.is_nil(why:find("secret-phrase", 1, true))
        assert.equal(0, srv:control("stats").requests)
        -- The same in a process with a terminal (script(1)) that would type the
        -- passphrase if asked: still refused, and nothing asked.
        local code = string.format([[
            local c = assert(require("wolkvox").new { base_url = %q, token = %q, state_dir = false,
                redis = %q, redis_cafile = %q, redis_cert = %q, redis_key = %q })
            local rows, err = c:services()
            io.write(rows and "OK" or ("REFUSED " .. tostring(err)), "\n")]],
            srv.url, srv.token, rs.url, rs.cert, rs.client_cert, enc)
        local status, out = support.sh("printf 'secret-phrase\\nsecret-phrase\\n' | script -qec "
            .. support.q(support.lua_command(code)) .. " /dev/null")
        assert.equal(0, status, out)
        assert.truthy(out:find("REFUSED", 1, true), out)
        assert.is_nil(out:find("pass phrase", 1, true), out)
        assert.equal(0, srv:control("stats").requests)
    end)

    it("takes them from --redis-cert and --redis-key, and from a profile", function()
        local ca = " --redis-cafile " .. rs.cert
        local code, out = cli_services(srv, rs, ca .. " --redis-cert " .. rs.client_cert .. " --redis-key "
            .. rs.client_key)
        assert.equal("0", code, out)
        code, out = cli_services(srv, rs, ca .. " --config " .. profile_file("redis_cert = " .. rs.client_cert
            .. "\nredis_key = " .. rs.client_key .. "\n"))
        assert.equal("0", code, out)
        code, out = cli_services(srv, rs, ca)
        assert.equal("5", code, out)
        assert.equal(2, srv:control("stats").requests)
    end)
end)

describe("wolkvox.redis", function()
    it("refuses an absurd timeout or port before connecting", function()
        local client = require "wolkvox.redis"
        for _, t in ipairs { 0, -1, 0 / 0, 1e12, math.huge } do
            local ok, err = pcall(client.connect, "127.0.0.1", 6379, t)
            assert.is_false(ok)
            assert.truthy(tostring(err):find("seconds between 0 and 86400 expected", 1, true), tostring(err))
        end
        assert.has_error(function() client.connect("127.0.0.1", 0, 1) end)
        assert.has_error(function() client.connect("127.0.0.1", 70000, 1) end)
        assert.has_error(function() client.connect("127.0.0.1", 6379, 1, "tls") end)
    end)

    it("fails a write to a connection the server reset with an io error, not SIGPIPE", function()
        local socket = require "socket"
        local server = assert(socket.bind("127.0.0.1", 0))
        local _, port = server:getsockname()
        -- The child does not load LuaSocket (which ignores SIGPIPE), and
        -- starts with the signal's default action whatever this process has.
        local code = string.format([[
            local conn = assert(require("wolkvox.redis").connect("127.0.0.1", %d, 2))
            require("wolkvox.core").sleep(0.5)   -- the server has closed by now
            local big = string.rep("x", 8 * 1024 * 1024)
            for _ = 1, 3 do
                local ok, err, kind = conn:command("SET", "k", big)
                io.write(tostring(ok), "|", tostring(err), "|", tostring(kind), "\n")
            end
            io.write("alive\n")
        ]], port)
        local p = assert(io.popen(support.timed("env --default-signal=PIPE "
            .. support.lua_command(code):gsub("^exec ", ""), 60) .. " 2>&1; echo exit=$?", "r"))
        server:settimeout(5)
        local peer = server:accept()
        if peer then
            peer:close()
        end
        local out = p:read("*a")
        p:close()
        server:close()
        assert.truthy(out:find("alive\nexit=0", 1, true), out)
        assert.truthy(out:find("^nil|[^|]+|io\n"), out)
    end)
end)

describe("fleet options", function()
    local function new(o)
        o.base_url, o.token = "http://127.0.0.1:9", "t"
        return wolkvox.new(o)
    end

    it("checks the URL without echoing it", function()
        local c, err = new { redis = "http://user:pw-xyz@host" }
        assert.is_nil(c)
        assert.equal("params", err.kind)
        assert.falsy(tostring(err):find("pw-xyz", 1, true))
        c, err = new { redis = "redis://u:pw-xyz@host:99999/0" }
        assert.is_nil(c)
        assert.falsy(tostring(err):find("pw-xyz", 1, true))
    end)

    it("takes redis_cafile, redis_cert and redis_key only with a rediss:// URL, and only paths", function()
        local ok, err = pcall(new, { redis = "redis://127.0.0.1:6380/0", redis_cafile = "/etc/ssl/ca.pem" })
        assert.is_false(ok)
        assert.truthy(tostring(err):find("needs a rediss:// URL", 1, true), tostring(err))
        assert.has_error(function() new { redis = "rediss://127.0.0.1:6380/0", redis_cafile = "" } end)
        assert.has_error(function() new { redis_cafile = "/etc/ssl/ca.pem" } end)
        assert.has_error(function() new { redis = "rediss://h", redis_cafile = 5 } end)
        -- A client certificate: both files, with a rediss:// URL.
        assert.has_error(function() new { redis = "rediss://h", redis_cert = "/c.pem" } end)
        assert.has_error(function() new { redis = "rediss://h", redis_key = "/k.pem" } end)
        assert.has_error(function() new { redis = "redis://h", redis_cert = "/c.pem", redis_key = "/k.pem" } end)
        assert.has_error(function() new { redis_cert = "/c.pem", redis_key = "/k.pem" } end)
        assert.is_true(require("wolkvox.redis").tls, "this build has no TLS: is libssl-dev installed?")
    end)

    it("raises on a wrong prefix, failure mode, or either without redis", function()
        assert.has_error(function() new { redis = "redis://h", redis_prefix = "a b" } end)
        assert.has_error(function() new { redis = "redis://h", redis_failure = "maybe" } end)
        assert.has_error(function() new { redis_prefix = "x:" } end)
        assert.has_error(function() new { redis_failure = "local" } end)
        assert.has_error(function() new { redis = 6379 } end)
    end)

    it("parses user, password, host, port and database", function()
        local cfg = assert(state_redis.parse("redis://fleet:p%40ss@[::1]:6390/4"))
        assert.same({ "fleet", "::1", 6390, 4, false, "p@ss" },
            { cfg.user, cfg.host, cfg.port, cfg.db, cfg.tls, cfg.password() })
        assert.equal("redis://[::1]:6390/4", cfg.where)
        cfg = assert(state_redis.parse("redis://pw@h"))
        assert.same({ "h", 6379, 0, "pw" }, { cfg.host, cfg.port, cfg.db, cfg.password() })
        assert.is_nil(cfg.user)
        for k, v in pairs(cfg) do
            if type(v) == "string" then
                assert.falsy(v:find("pw", 1, true), k)
            end
        end
    end)
end)
