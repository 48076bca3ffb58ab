-- The public client: the five seed endpoints, call(), options, close.
local wolkvox = require "wolkvox"
local support = require "support"

describe("wolkvox client", function()
    local srv, c
    support.suite(nil, nil, function(s, x) srv, c = s, x end)

    describe("seed endpoints", function()
        it("services: information.php?api=services", function()
            local rows, meta = c:services()
            assert.equal(1, #rows)
            assert.equal("25", rows[1].licenses)
            assert.equal("yes", rows[1].pbx)
            assert.equal(200, meta.status)
            assert.equal(200, meta.code)        -- the fake sends "200": normalised
            assert.equal("1 records were found", meta.msg)
            assert.equal(1, meta.calls)
            assert.equal("information/services", meta.endpoint)
            assert.is_true(meta.bytes > 0)
            if math.type then
                assert.equal("integer", math.type(meta.code))
            end
            local entry = srv:log()[1]
            assert.equal("GET", entry.method)
            assert.equal("information", entry.family)
            assert.equal("services", entry.api)
        end)

        it("routing_points: information.php?api=routing_points", function()
            local rows = c:routing_points()
            assert.equal(4, #rows)
            for _, row in ipairs(rows) do
                assert.matches("^%d+$", row.rp_id)
                assert.is_string(row.rp_name)
                assert.matches("^[yn][eo]s?$", row.ivr_active)
                assert.is_string(row.chat_active)
                assert.is_string(row.interaction_active)
                assert.is_string(row.crm_active)
                assert.matches("^%d%d%d%d%-%d%d%-%d%d ", row.last_use)
            end
            assert.equal("Ventas Bogotá", rows[2].rp_name)
        end)

        it("rec_screen, chat_licenses and interactions: billing.php rows", function()
            local expect = { rec_screen = 1, chat_licenses = 2, interactions = 1 }
            for name, count in pairs(expect) do
                local rows, meta = c[name](c)
                assert.equal(count, #rows, name)
                for _, row in ipairs(rows) do
                    assert.equal("demo_operation", row.operation)
                    assert.is_string(row.description)
                    assert.matches("^%d+$", row.items)
                    assert.matches("^%d%d%d%d%-%d%d%-01$", row.date)
                end
                assert.equal("billing/" .. name, meta.endpoint)
                assert.equal("Information found for the current month", meta.msg)
            end
            local families = {}
            for _, entry in ipairs(srv:log()) do
                families[#families + 1] = entry.family
            end
            assert.same({ "billing", "billing", "billing" }, families)
        end)

        it("rows hold only row fields: metadata stays in meta", function()
            local rows = c:routing_points()
            for _, row in ipairs(rows) do
                for key in pairs(row) do
                    assert.is_true(key == "rp_id" or key == "rp_name" or key:match("_active$") ~= nil
                        or key == "last_use", key)
                end
            end
            assert.is_nil(rows.code)
            assert.is_nil(rows.msg)
        end)
    end)

    describe("call()", function()
        it("reaches any registered endpoint", function()
            local rows, meta = c:call("information", "services", {})
            assert.equal("25", rows[1].licenses)
            assert.equal("information/services", meta.endpoint)
        end)

        it("refuses an unknown endpoint or family without spending a call", function()
            local rows, err = c:call("information", "no_such_api")
            assert.is_nil(rows)
            assert.equal("params", err.kind)
            assert.equal("information/no_such_api", err.endpoint)
            rows, err = c:call("nosuchfamily", "x")
            assert.is_nil(rows)
            assert.equal("params", err.kind)
            assert.matches("unknown family", err.message)
            assert.equal(0, #srv:log())
        end)

        it("sends an unknown endpoint when told to, and reads the 400", function()
            local rows, err = c:call("information", "no_such_api", nil, { unchecked = true })
            assert.is_nil(rows)
            assert.equal("not_found", err.kind)
            assert.equal(400, err.status)
            assert.equal("THE API YOU WANT TO CONSULT DOES NOT EXIST", err.message)
            assert.equal(1, #srv:log())
        end)

        it("refuses parameters an endpoint does not take", function()
            local _, err = c:services { limit = 5 }
            assert.equal("params", err.kind)
            assert.matches("unknown parameter 'limit'", err.message)
            _, err = c:routing_points { routing = {} }
            assert.equal("params", err.kind)
            _, err = c:routing_points("x")
            assert.equal("params", err.kind)
            assert.equal(0, #srv:log())
        end)

        it("sends optional parameters, escaped", function()
            local rows = c:routing_points { routing = "IVR 1&2" }
            assert.is_table(rows)
            local entry = srv:log()[1]
            assert.equal("IVR 1&2", entry.params.routing)
            assert.matches("routing=IVR%%201%%262", entry.line)
        end)
    end)

    describe("families and shared names", function()
        it("binds a bare name to the documented family and keeps the others reachable", function()
            assert.equal("billing/interactions", select(2, c:interactions()).endpoint)
            local _, meta = c.real_time:interactions()
            assert.equal("real_time/interactions", meta.endpoint)
            _, meta = c.information:agents()
            assert.equal("information/agents", meta.endpoint)
            _, meta = c:agents()
            assert.equal("information/agents", meta.endpoint)
            assert.is_nil(c.no_such_method)
            assert.is_nil(c.billing.no_such_api)
        end)
    end)

    describe("options", function()
        it("accepts a server code, wvNNNN or a URL", function()
            local o = require "wolkvox.options"
            assert.equal("https://wv0031.wolkvox.com", o.base_url("0031"))
            assert.equal("https://wv0031.wolkvox.com", o.base_url("wv0031"))
            assert.equal("https://wv0031.wolkvox.com", o.base_url("WV0031"))
            assert.equal("http://127.0.0.1:8089", o.base_url("http://127.0.0.1:8089/"))
            assert.is_nil(o.base_url("wolkvox"))
            local x = assert(wolkvox.new { server = "0031", token = "t" })
            assert.matches("https://wv0031.wolkvox.com", tostring(x))
            x:close()
        end)

        it("lets base_url override server", function()
            local x = assert(wolkvox.new { server = "0031", base_url = srv.url, token = srv.token })
            assert.equal("25", x:services()[1].licenses)
            x:close()
        end)

        it("fails at new() without a token, with a clear error", function()
            local saved = os.getenv("WOLKVOX_TOKEN")
            if saved then
                pending("WOLKVOX_TOKEN is set in this environment")
                return
            end
            local x, err = wolkvox.new { base_url = srv.url }
            assert.is_nil(x)
            assert.equal("auth", err.kind)
            assert.matches("no token", tostring(err))
        end)

        it("refuses a token with CR or LF, without echoing it", function()
            local x, err = wolkvox.new { base_url = srv.url, token = "abc\r\nX-Injected: 1" }
            assert.is_nil(x)
            assert.equal("auth", err.kind)
            assert.is_nil(tostring(err):find("Injected", 1, true))
            x, err = wolkvox.new { base_url = srv.url, token = "abc\n" }
            assert.is_nil(x)
            assert.equal("auth", err.kind)
        end)

        it("reads the token from a file", function()
            local path = os.tmpname()
            local f = assert(io.open(path, "w"))
            f:write(srv.token, "\n")
            f:close()
            local x = assert(wolkvox.new { base_url = srv.url, token_file = path })
            os.remove(path)
            assert.equal("25", x:services()[1].licenses)
            x:close()
        end)

        it("raises on wrong option types and unknown names", function()
            assert.has_error(function() wolkvox.new { base_url = srv.url, token = "t", timeout = "5" } end,
                nil)
            local ok, msg = pcall(wolkvox.new, { base_url = srv.url, token = "t", timeout = "5" })
            assert.is_false(ok)
            assert.matches("option 'timeout' must be a number", msg)
            ok, msg = pcall(wolkvox.new, { base_url = srv.url, token = "t", tiemout = 5 })
            assert.is_false(ok)
            assert.matches("option 'tiemout' is unknown", msg)
            ok, msg = pcall(wolkvox.new, { base_url = srv.url, token = "t", max_concurrent = 3 })
            assert.is_false(ok)
            assert.matches("max_concurrent", msg)
            ok = pcall(wolkvox.new, "0031")
            assert.is_false(ok)
        end)

        it("refuses a missing or malformed server", function()
            local saved = os.getenv("WOLKVOX_SERVER")
            if not saved then
                local x, err = wolkvox.new { token = "t" }
                assert.is_nil(x)
                assert.equal("params", err.kind)
                assert.matches("no server", err.message)
            end
            local x, err = wolkvox.new { server = "wv-abc", token = "t" }
            assert.is_nil(x)
            assert.equal("params", err.kind)
        end)

        it("applies the timeout", function()
            support.faults(srv, { { delay = 2 } })
            local x = support.client(srv, { timeout = 0.5, retries = 0 })
            local rows, err = x:services()
            assert.is_nil(rows)
            assert.equal("transport", err.kind)
            assert.equal("timeout", err.reason)
            assert.is_true(err.retryable)
            x:close()
        end)

        it("sends the user agent asked for", function()
            local x = support.client(srv, { user_agent = "report-bot/1.0" })
            x:services()
            x:close()
            assert.equal("report-bot/1.0", srv:log()[1].headers["user-agent"])
            c:services()
            assert.matches("^lua%-wolkvox/%d", srv:log()[2].headers["user-agent"])
        end)
    end)

    describe("lifecycle", function()
        it("reuses one connection across calls", function()
            local x = support.client(srv)
            x:services()
            x:routing_points()
            x:rec_screen()
            local log = srv:log()
            assert.equal(log[1].conn, log[2].conn)
            assert.equal(log[2].conn, log[3].conn)
            assert.equal(1, x:stats().connects)
            assert.equal(3, x:stats().calls)
            x:close()
        end)

        it("closes twice, then answers kind 'closed' without sending", function()
            local x = support.client(srv)
            x:close()
            x:close()
            assert.is_true(x:closed())
            local rows, err = x:services()
            assert.is_nil(rows)
            assert.equal("closed", err.kind)
            assert.equal(0, #srv:log())
            assert.matches("closed", tostring(x))
        end)

        it("works with two clients at once", function()
            local a, b = support.client(srv), support.client(srv)
            assert.equal("25", a:services()[1].licenses)
            assert.equal(4, #b:routing_points())
            a:close()
            assert.equal(1, #b:rec_screen())
            b:close()
        end)

        it("closes through __close on Lua 5.4", function()
            if _VERSION ~= "Lua 5.4" then
                pending("to-be-closed variables need Lua 5.4")
                return
            end
            local chunk = load([[
                local support, srv = ...
                local x <close> = support.client(srv)
                x:services()
                return x
            ]])
            local x = chunk(support, srv)
            assert.is_true(x:closed())
        end)

        it("prints without the token", function()
            local secret = "tok-7c1e0f0a-secret"
            local x = assert(wolkvox.new { base_url = srv.url, token = secret })
            assert.is_nil(tostring(x):find(secret, 1, true))
            local _, err = x:services()
            assert.equal("auth", err.kind)
            for _, s in ipairs(support.strings(err)) do
                assert.is_nil(s:find(secret, 1, true))
            end
            for _, s in ipairs(support.strings(x)) do
                assert.is_nil(s:find(secret, 1, true))
            end
            x:close()
        end)
    end)
end)
