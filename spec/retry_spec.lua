-- Retries (issue #21: every retry spec is here): which failures are tried
-- again, how many times, and never past the deadline; each attempt counted;
-- writes that reached the server never again; how long each wait is
-- (Retry-After up to retry_cap, the concurrency 403's backoff in whole
-- seconds).  Backoffs are kept tiny (retry_base) so the specs run fast; time
-- is read from the fake's log, not asserted.
local support = require "support"

describe("retries", function()
    local srv, c
    support.suite(nil, { retry_base = 0.01, retry_cap = 0.05 }, function(s, x) srv, c = s, x end)

    describe("what is tried again, and what is not", function()
        it("500, 500, 200: succeeds with 3 attempts, all counted", function()
            support.faults(srv, { { status = 500 }, { status = 500 } })
            local before = c:stats().calls
            local rows, meta = c:routing_points()
            assert.equal(4, #rows)
            assert.equal(3, meta.attempts)
            assert.equal(2, meta.retries)
            assert.equal(3, meta.calls)
            assert.equal(before + 3, c:stats().calls)
            assert.equal(3, #srv:log())
        end)

        it("a reset is retried", function()
            local x = support.client(srv, { retry_base = 0.01 })   -- a fresh connection: libcurl does not re-send
            support.faults(srv, { { reset = true } })
            local rows, meta = x:routing_points()
            assert.equal(4, #rows)
            assert.equal(2, meta.attempts)
            assert.equal(2, #srv:log())
            x:close()
        end)

        it("403 TOKEN LIMIT EXCEEDED is not retried and comes back typed", function()
            support.faults(srv, { { forbidden = "quota" } })
            local rows, err = c:routing_points()
            assert.is_nil(rows)
            assert.equal("quota", err.kind)
            assert.equal(1, err.attempts)
            assert.equal(1, #srv:log())
        end)

        it("403 SIMULTANEOUS REQUESTS is retried after a backoff, once nothing else is in flight", function()
            support.faults(srv, { { forbidden = "concurrency" } })
            local rows, meta = c:routing_points()
            assert.equal(4, #rows)
            assert.equal(2, meta.attempts)
            local log = srv:log()
            assert.equal(2, #log)
            assert.is_true(log[2].t_start >= log[1].t_end)
        end)

        it("a range that meets the concurrency 403 goes on one window at a time", function()
            srv:control("config", { latency = 0.05, max_rows = 60000 })
            support.faults(srv, { { match = "cdr_1", forbidden = "concurrency" } })
            local rows, meta = c:cdr_1 { from = "2026-01-01", to = "2026-04-30" }
            assert.equal(120 * 100, #rows)
            assert.equal(1, meta.retries)
            -- After the refusal, no two requests overlap at the server.
            local log = srv:log()
            local refused
            for i, e in ipairs(log) do
                if e.status == 403 then
                    refused = i
                end
            end
            for i = refused + 2, #log do
                assert.is_true(log[i].t_start >= log[i - 1].t_end, "overlap at request " .. i)
            end
        end)

        it("403 maintenance is retried", function()
            support.faults(srv, { { forbidden = "maintenance" } })
            local x = support.client(srv, { retry_base = 0.001, retry_cap = 0.01 })
            local rows, meta = x:routing_points()
            assert.equal(4, #rows)
            assert.equal(2, meta.attempts)
            x:close()
        end)

        it("an HTML page from a proxy and a garbled body are retried", function()
            support.faults(srv, { { html = 502 }, { bad_json = true } })
            local rows, meta = c:routing_points()
            assert.equal(4, #rows)
            assert.equal(3, meta.attempts)
        end)

        it("auth, params, not found and a 400 are not retried", function()
            local faults = {
                { forbidden = "token" }, { status = 401, msg = "PLEASE ENTER THE WOLKVOX-TOKEN" },
                { status = 400, msg = "SOME PARAMETERS ARE REQUIRED" }, { html = 404 },
            }
            for _, f in ipairs(faults) do
                srv:control("reset")
                support.faults(srv, { f })
                local rows, err = c:routing_points()
                assert.is_nil(rows)
                assert.equal(1, err.attempts)
                assert.equal(1, #srv:log())
            end
        end)
    end)

    describe("attempts: counted, bounded by retries, their history in the error", function()
        it("says how many attempts were made and why each failed", function()
            -- (No resets here: libcurl re-sends a request by itself on each idle
            -- keep-alive connection that turns out dead, which would eat faults.)
            support.faults(srv, { { status = 500 }, { cut = 10 }, { status = 503 } })
            local rows, err = c:routing_points()
            assert.is_nil(rows)
            assert.equal(3, err.attempts)
            assert.same({ "http 500", "transport partial", "http 503" }, err.history)
            assert.matches("attempts: http 500; transport partial; http 503", err.message, 1, true)
            assert.matches("3 attempts", tostring(err))
        end)

        it("takes retries from the call: retries = 0 is one attempt", function()
            support.faults(srv, { { status = 500 } })
            local rows, err = c:call("information", "routing_points", { retries = 0 })
            assert.is_nil(rows)
            assert.equal(1, err.attempts)
            assert.equal(1, #srv:log())
        end)
    end)

    describe("writes: never sent twice", function()
        it("never retries a write that reached the server", function()
            support.faults(srv, { { status = 500 } })
            local data, err = c:add_ip { ip = "203.0.113.9", description = "x" }
            assert.is_nil(data)
            assert.equal("http", err.kind)
            assert.equal(1, err.attempts)
            assert.equal(1, #srv:log())
            srv:control("reset")
            support.faults(srv, { { reset = true } })
            data, err = c:add_ip { ip = "203.0.113.9", description = "x" }
            assert.is_nil(data)
            assert.equal("transport", err.kind)
            assert.equal(1, #srv:log())
        end)

        it("retries a write whose connection never came up", function()
            local x = assert(require("wolkvox").new { base_url = "http://127.0.0.1:1", token = "t",
                retry_base = 0.001, connect_timeout = 1, state_dir = false })
            local data, err = x:add_ip { ip = "203.0.113.9", description = "x" }
            assert.is_nil(data)
            assert.equal("connect", err.reason)
            assert.equal(3, err.attempts)
            assert.equal(0, x:stats().calls)   -- nothing left: no call spent
            x:close()
        end)
    end)

    describe("waits and the deadline", function()
        it("honours a Retry-After header", function()
            support.faults(srv, { { status = 503, retry_after = "0.3" } })
            -- The hint is honoured up to retry_cap (this suite's client has 0.05).
            local rows = assert(c:call("information", "routing_points", { retry_cap = 1 }))
            assert.equal(4, #rows)
            local log = srv:log()
            -- the first request arrived before its answer left: a safe origin
            assert.is_true(log[2].t_start - log[1].t_start >= 0.3)
        end)

        it("never starts an attempt past the deadline", function()
            -- Each attempt takes 0.25 s and fails; the deadline is 0.6 s.
            support.faults(srv, { { status = 500, delay = 0.25, times = 10 } })
            local x = support.client(srv, { retries = 10, retry_base = 0.01, retry_cap = 0.02, deadline = 0.6 })
            local rows, err = x:routing_points()
            assert.is_nil(rows)
            -- the last attempt fails by its 500, or by a timeout cut to the deadline
            assert.is_true(err.kind == "http" or err.reason == "timeout", tostring(err))
            local log = srv:log()
            assert.is_true(#log >= 2 and #log < 10)
            for _, e in ipairs(log) do
                assert.is_true(e.t_start - log[1].t_start < 0.6)
            end
            x:close()
        end)

        it("cuts the last attempt's timeout to what the deadline leaves", function()
            support.faults(srv, { { delay = 2 } })
            local x = support.client(srv, { deadline = 0.5, retries = 0 })
            local rows, err = x:routing_points()
            assert.is_nil(rows)
            assert.equal("timeout", err.reason)
            local log = srv:log()
            -- the fake saw the client give up long before its 2-second delay ended
            assert.equal(1, #log)
            x:close()
        end)
    end)
end)

describe("retry waits: Retry-After up to retry_cap, the concurrency 403's backoff", function()
    local retry = require "wolkvox.call.retry"
    local srv
    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    local policy = { retries = 2, retry_base = 1, retry_cap = 30 }
    local function rand(x) return function() return x end end

    it("a Retry-After hint is honoured up to retry_cap, never beyond", function()
        assert.equal(30, retry.wait({ kind = "http", retry_after = "99999999" }, 1, policy))
        assert.equal(30, retry.wait({ kind = "maintenance", retry_after = "99999999" }, 1, policy))
        assert.equal(30, retry.wait({ kind = "http", retry_after = "Fri, 31 Dec 2100 23:59:59 GMT" }, 1, policy,
            nil, os.time()))
        assert.equal(3, retry.wait({ kind = "http", retry_after = "3" }, 1, policy))
        assert.equal(0.5, retry.wait({ kind = "http", retry_after = "99" }, 1,
            { retry_base = 0.1, retry_cap = 0.5 }))
    end)

    it("against the fake: Retry-After: 99999999 waits retry_cap", function()
        support.faults(srv, { { status = 503, retry_after = "99999999" } })
        local x = support.client(srv, { state_dir = support.tmpdir(), retry_cap = 0.2 })
        local rows, meta = x:routing_points()
        assert.equal(4, #rows)
        assert.equal(2, meta.attempts)
        assert.equal(0.2, meta.waited)
        local log = srv:log()
        assert.is_true(log[2].t_start - log[1].t_end < 1.5)   -- not 2 s (10 x retry_cap), nor days
        x:close()
    end)

    it("a concurrency 403 backs off by whole seconds, at least 1, growing", function()
        local tiny = { retry_base = 0.01, retry_cap = 0.05 }
        local e = { kind = "concurrency" }
        for _, r in ipairs { 0, 0.5, 0.999 } do
            assert.equal(1, retry.wait(e, 1, tiny, rand(r)))   -- not retry_base fractions
            assert.equal(1, retry.wait(e, 1, policy, rand(r)))
        end
        local last = 0
        for attempts = 1, 8 do
            for _, r in ipairs { 0, 0.5, 0.999 } do
                local w = retry.wait(e, attempts, policy, rand(r))
                assert.equal(math.floor(w), w)
                assert.is_true(w >= 1 and w <= policy.retry_cap)
            end
            local low = retry.wait(e, attempts, policy, rand(0))
            assert.is_true(low >= last)
            last = low
        end
        assert.equal(2, retry.wait(e, 2, policy, rand(0)))
        assert.equal(4, retry.wait(e, 3, policy, rand(0)))
        assert.equal(30, retry.wait(e, 8, policy, rand(0.999)))
    end)

    it("against the fake: a concurrency 403 waits a second before the next attempt", function()
        support.faults(srv, { { forbidden = "concurrency" } })
        local x = support.client(srv, { state_dir = support.tmpdir(), retry_base = 0.01, retry_cap = 0.05 })
        local rows, meta = x:routing_points()
        assert.equal(4, #rows)
        assert.equal(2, meta.attempts)
        assert.equal(1, meta.waited)
        local log = srv:log()
        assert.equal(2, #log)
        assert.is_true(log[2].t_start - log[1].t_end >= 0.9)
        x:close()
    end)
end)
