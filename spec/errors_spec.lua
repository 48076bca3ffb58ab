-- Every failure comes back as nil, err with the right kind; none crashes.
local errors = require "wolkvox.errors"
local support = require "support"

describe("errors", function()
    local srv, c
    local SECRET = "tk-errors-spec-0e4d1f"
    -- One attempt per call: these specs read how a single answer is classified.
    support.suite({ tokens = { SECRET } }, { token = SECRET, timeout = 1, max_bytes = 4096, retries = 0 },
        function(s, x) srv, c = s, x end)

    -- One call with `fault` queued: returns the error (and checks the shape).
    local function fail_with(fault)
        support.faults(srv, { fault })
        local rows, err = c:routing_points()
        assert.is_nil(rows)
        assert.is_true(errors.is(err))
        assert.equal("information/routing_points", err.endpoint)
        assert.is_string(err.message)
        assert.is_boolean(err.retryable)
        local text = tostring(err)
        assert.matches("^wolkvox " .. err.kind:gsub("_", "%%_"), text)
        assert.matches("information/routing_points", text, 1, true)
        for _, s in ipairs(support.strings(err)) do
            assert.is_nil(s:find(SECRET, 1, true), "token leaked into " .. s)
        end
        return err
    end

    local cases = {
        { "HTTP 500", { status = 500 }, "http", true, 500 },
        { "HTML 502 page", { html = 502 }, "http", true, 502 },
        { "HTML 503 page", { html = 503 }, "http", true, 503 },
        { "403 TOKEN LIMIT EXCEEDED", { forbidden = "quota" }, "quota", false, 403 },
        { "403 SIMULTANEOUS REQUESTS", { forbidden = "concurrency" }, "concurrency", true, 403 },
        { "403 PLEASE VALIDATE TOKEN", { forbidden = "token" }, "auth", false, 403 },
        { "403 with another message", { forbidden = "maintenance" }, "maintenance", true, 403 },
        { "403 maintenance page in HTML", { html = 403 }, "maintenance", true, 403 },
        { "401", { status = 401, msg = "PLEASE ENTER THE WOLKVOX-TOKEN" }, "auth", false, 401 },
        { "400 missing parameters", { status = 400, msg = "SOME PARAMETERS ARE REQUIRED" },
            "params", false, 400 },
        { "400 unknown api", { status = 400, msg = "THE API YOU WANT TO CONSULT DOES NOT EXIST" },
            "not_found", false, 400 },
        { "404 endpoint not enabled", { html = 404 }, "not_found", false, 404 },
        { "406 invalid input", { status = 406, msg = "invalid IP" }, "params", false, 406 },
        { "302 redirect", { redirect = "http://127.0.0.2:9/elsewhere" }, "http", false, 302 },
        { "200 with broken JSON", { bad_json = true }, "decode", true, 200 },
        { "200 with code 403 quota inside", { code_in_200 = 403, msg = "TOKEN LIMIT EXCEEDED" },
            "quota", false, 200 },
        { "200 with code 400 inside", { code_in_200 = 400, msg = "SOME PARAMETERS ARE REQUIRED" },
            "params", false, 200 },
        { "200 with code 500 inside", { code_in_200 = 500, msg = "internal" }, "http", true, 200 },
        { "answer over max_bytes", { big = 20000 }, "too_large", false, 200 },
        { "chunked answer over max_bytes", { big = 20000, chunked = true }, "too_large", false, 200 },
    }

    for _, case in ipairs(cases) do
        local name, fault, kind, retryable, status = case[1], case[2], case[3], case[4], case[5]
        it(name .. " -> " .. kind, function()
            local err = fail_with(fault)
            assert.equal(kind, err.kind)
            assert.equal(retryable, err.retryable)
            assert.equal(status, err.status)
        end)
    end

    it("a code inside a 200 envelope is reported as code, with the message", function()
        local err = fail_with { code_in_200 = 403, msg = "EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)" }
        assert.equal("concurrency", err.kind)
        assert.equal(403, err.code)
        assert.matches("HTTP 200, code 403", tostring(err))
    end)

    -- libcurl re-sends once when a reused connection dies before answering,
    -- so these faults are queued twice (times = 2).
    local transport = {
        { "connection reset", { reset = true, times = 2 }, "reset" },
        { "empty reply", { close = true, times = 2 }, "reset" },
        { "body cut short", { cut = 30 }, "partial" },
        { "no answer before the timeout", { delay = 2 }, "timeout" },
    }
    for _, case in ipairs(transport) do
        it(case[1] .. " -> transport/" .. case[3], function()
            local err = fail_with(case[2])
            assert.equal("transport", err.kind)
            assert.equal(case[3], err.reason)
            assert.is_true(err.retryable)
            assert.matches("transport %(" .. case[3] .. "%)", tostring(err))
        end)
    end

    it("a reset on a reused connection is re-sent once by libcurl, and both sends count", function()
        c:routing_points()              -- leaves a keep-alive connection
        local before = c:stats().calls
        support.faults(srv, { { reset = true } })
        local rows, meta = c:routing_points()
        assert.equal(4, #rows)
        assert.equal(2, meta.calls)
        assert.equal(before + 2, c:stats().calls)
        assert.equal(3, #srv:log())
    end)

    it("a reset on a fresh connection is not re-sent", function()
        local x = support.client(srv, { token = SECRET, retries = 0 })
        support.faults(srv, { { reset = true } })
        local rows, err = x:routing_points()
        assert.is_nil(rows)
        assert.equal("reset", err.reason)
        assert.equal(1, err.calls)
        assert.equal(1, #srv:log())
        x:close()
    end)

    it("connection refused -> transport/connect, nothing sent", function()
        local x = assert(require("wolkvox").new { base_url = "http://127.0.0.1:1", token = SECRET,
            connect_timeout = 1, retries = 0, state_dir = false })
        local rows, err = x:services()
        assert.is_nil(rows)
        assert.equal("transport", err.kind)
        assert.equal("connect", err.reason)
        assert.is_false(err.sent)
        assert.equal(0, x:stats().calls)   -- nothing left: no call spent
        x:close()
    end)

    it("404 'Validate dates entered' is an empty result, not an error", function()
        support.faults(srv, { { empty = true } })
        local rows, meta = c:routing_points()
        assert.same({}, rows)
        assert.is_true(meta.empty)
        assert.equal(404, meta.status)
    end)

    it("the client stays usable after every kind of failure", function()
        support.faults(srv, { { reset = true, times = 2 }, { cut = 5 }, { bad_json = true }, { big = 20000 } })
        for _ = 1, 4 do
            assert.is_nil(c:routing_points())
        end
        assert.equal(4, #c:routing_points())
    end)

    it("the structured error has the documented fields and kinds", function()
        local e = errors.new("quota", { message = "TOKEN LIMIT EXCEEDED", status = 403, code = 403,
            endpoint = "information/services" })
        assert.equal("wolkvox quota error on information/services: TOKEN LIMIT EXCEEDED (HTTP 403)",
            tostring(e))
        assert.is_false(e.retryable)
        assert.has_error(function() errors.new("nonsense", {}) end)
        for _, kind in ipairs { "transport", "http", "decode", "too_large", "auth", "quota", "concurrency",
            "maintenance", "params", "not_found", "truncated", "closed" } do
            assert.is_not_nil(errors.kinds[kind], kind)
        end
    end)

    it("protect() turns raised errors into nil, err and lets bugs through", function()
        local f = errors.protect(function(x)
            if x == 1 then
                errors.throw("params", { message = "bad" })
            elseif x == 2 then
                error("a bug")
            end
            return "ok", x
        end)
        local v, err = f(1)
        assert.is_nil(v)
        assert.equal("params", err.kind)
        assert.has_error(function() f(2) end, "a bug")
        assert.same({ "ok", 3 }, { f(3) })
    end)
    -- The rule of each 403 is data in one place (wolkvox.errors.statuses and
    -- .waits): what a message means, whether it may pass, how long to wait.
    describe("the 403 family as data", function()
        local response = require "wolkvox.api.response"
        local retry = require "wolkvox.call.retry"
        local e = { name = "information/routing_points" }
        local function kind(status, msg)
            local ok, err = pcall(response.interpret, { status = status, value = { code = status, msg = msg } }, e)
            assert.is_false(ok)
            return err.kind, err.retryable
        end

        it("tells each 403 apart by its message, with whether it may pass", function()
            assert.same({ "quota", false }, { kind(403, "TOKEN LIMIT EXCEEDED") })
            assert.same({ "concurrency", true }, { kind(403, "Simultaneous requests exceeded") })
            assert.same({ "auth", false }, { kind(403, "Invalid token") })
            assert.same({ "maintenance", true }, { kind(403, "Server in backup") })
            assert.equal("params", errors.kind_of(400, "BAD DATE"))
            assert.equal("not_found", errors.kind_of(400, "API DOES NOT EXIST"))
            assert.equal("empty", errors.kind_of(404, "VALIDATE DATES ENTERED"))
            assert.equal("http", errors.kind_of(502, ""))
        end)

        it("a rule changed in the table changes what a call does", function()
            local rules = errors.statuses[403]
            table.insert(rules, 1, { "BACKUP", "quota" })
            local k, r = kind(403, "Server in backup")
            table.remove(rules, 1)
            assert.same({ "quota", false }, { k, r })
            assert.same({ "maintenance", true }, { kind(403, "Server in backup") })
        end)

        it("a maintenance 403 waits longer than a blip, a concurrency 403 whole seconds", function()
            local policy = { retry_base = 0.1, retry_cap = 5 }
            local one = function() return 0.999 end
            local blip = retry.wait({ kind = "transport" }, 1, policy, one)
            local maint = retry.wait({ kind = "maintenance" }, 1, policy, one)
            assert.near(blip * errors.waits.maintenance.factor, maint, 1e-9)
            local w = retry.wait({ kind = "concurrency" }, 1, policy, one)
            assert.equal(math.floor(w), w)
            assert.is_true(w >= errors.waits.concurrency.min)
        end)
    end)
end)
