-- Hardening of the public API (issue #9): where the token may go, what may
-- reach a header or the query string, programming errors that point at the
-- caller, a ceiling on the calls one plan may spend, and error messages.
local support = require "support"
local wolkvox = require "wolkvox"

-- The line of the caller (for "the error points at my line" checks).
local function here()
    return debug.getinfo(2, "l").currentline
end

local SPEC = "hardening_api_spec.lua"

-- `msg` names the spec's `line` as where it happened, and no other place.
local function points_at(line, msg)
    local where, rest = tostring(msg):match("^(.-%.lua:%d+): (.*)$")
    assert.equal(SPEC .. ":" .. line, where and where:match("[%w_]+%.lua:%d+$"), msg)
    assert.is_nil(rest:find("%.lua:%d+:"), msg)
end

-- The error of new(opts), which must refuse them (kind `kind`).
local function refused(opts, kind)
    opts.state_dir = opts.state_dir == nil and false or opts.state_dir
    if opts.token == nil then
        opts.token = "t"
    end
    local x, err = wolkvox.new(opts)
    if x then
        x:close()
    end
    assert.is_nil(x, "accepted: " .. tostring(opts.server or opts.base_url))
    assert.equal(kind or "params", err.kind)
    return err
end

local function accepted(opts)
    opts.state_dir = opts.state_dir == nil and false or opts.state_dir
    opts.token = opts.token or "t"
    local x, err = wolkvox.new(opts)
    assert.is_table(x, tostring(err))
    x:close()
    return x
end

describe("hardening", function()
    local srv, c
    support.suite(nil, nil, function(s, x) srv, c = s, x end)

    describe("server and base_url", function()
        it("refuse user info: the token must go to the host named", function()
            local port = srv.url:match(":(%d+)$")
            local err = refused { server = "http://wv0031.wolkvox.com@127.0.0.1:" .. port, token = srv.token }
            assert.matches("@", err.message, 1, true)
            refused { server = "https://wv0031.wolkvox.com@evil.example.com" }
            refused { base_url = "http://user:pass@127.0.0.1:" .. port }
            refused { base_url = "https://wv0031.wolkvox.com@evil.example.com/" }
            refused { base_url = "https://evil.example.com/@wv0031.wolkvox.com" }
            assert.equal(0, #srv:log())
        end)

        it("take a server as a code, wvNNNN or an https URL of a wolkvox.com host", function()
            local o = require "wolkvox.options"
            assert.equal("https://wv0031.wolkvox.com", o.base_url("0031"))
            assert.equal("https://wv0031.wolkvox.com", o.base_url("https://wv0031.wolkvox.com/"))
            assert.equal("https://wv0031.wolkvox.com", o.base_url("HTTPS://WV0031.Wolkvox.com"))
            accepted { server = "https://wv0031.wolkvox.com" }
            accepted { server = "https://api.eu.wolkvox.com:8443/base" }
            accepted { server = "wv0031" }
            for _, bad in ipairs {
                "https://evil.example.com",           -- another host: that is what base_url is for
                "https://wv0031.wolkvox.com.evil.com",
                "https://evilwolkvox.com",
                "https://wolkvox.com.evil.com",
                "wv0031.wolkvox.com",                  -- no scheme
                "wv-0031", "0031x", "",
            } do
                local err = refused { server = bad }
                assert.is_string(err.message)
            end
            local err = refused { server = "https://evil.example.com" }
            assert.matches("base_url", err.message)
        end)

        it("refuse anything but scheme://host[:port][/path] with sane characters", function()
            for _, bad in ipairs {
                "ftp://127.0.0.1", "https://", "https:///x", "//127.0.0.1", "127.0.0.1:80",
                "http://127.0.0.1/x?api=token_info", "http://127.0.0.1/x#y", "http://127.0.0.1/a b",
                "http://127.0.0.1/%2e%2e", "http://127.0.0.1:0", "http://127.0.0.1:65536", "http://127.0.0.1:8x",
                "http://a..b", "http://-a.b", "http://a.b.", "http://127.0.0.1\r\nX: y", "http://127.0.0.1/\0",
                "http://[::1", "http://exa_mple.com", "http://127.0.0.1/caf\195\169", "http://127.0.0.1\\@x",
            } do
                refused { base_url = bad }
            end
            accepted { base_url = "http://127.0.0.1:8089/some/path_1.2~x/" }
            accepted { base_url = "https://reports.example.com:8443/wolkvox" }
        end)

        it("need insecure = true for plain http or verify = false beyond loopback", function()
            local err = refused { base_url = "http://reports.example.com" }
            assert.matches("insecure = true", err.message)
            err = refused { base_url = "https://reports.example.com", verify = false }
            assert.matches("insecure = true", err.message)
            refused { server = "http://wv0031.wolkvox.com" }
            refused { server = "0031", verify = false }
            refused { base_url = "http://127.0.0.1.example.com" }
            refused { base_url = "http://0.0.0.0:8089" }
            refused { base_url = "http://128.0.0.1" }
            -- Through a proxy that is not on this machine, plain http shows the token to the proxy.
            refused { base_url = "http://127.0.0.1:8089", proxy = "http://proxy.example.com:3128" }
            accepted { base_url = "http://127.0.0.1:8089", proxy = "http://127.0.0.1:3128" }
            accepted { base_url = "http://reports.example.com", insecure = true }
            accepted { base_url = "https://reports.example.com", verify = false, insecure = true }
            accepted { server = "http://wv0031.wolkvox.com", insecure = true }
            accepted { server = "0031", verify = false, insecure = true }
            -- Loopback stays open: every test server lives there.
            for _, url in ipairs { "http://127.0.0.1:8089", "http://127.9.8.7", "http://localhost:1",
                "http://LOCALHOST", "http://[::1]:8089/x" } do
                accepted { base_url = url }
                accepted { base_url = url:gsub("^http:", "https:"), verify = false }
            end
            accepted { server = srv.url }   -- the examples pass the fake's URL as server
            local ok, msg = pcall(wolkvox.new, { base_url = srv.url, token = "t", insecure = "yes" })
            assert.is_false(ok)
            assert.matches("option 'insecure' must be a boolean", msg)
        end)

        it("still talk to the loopback fake", function()
            local x = assert(wolkvox.new { server = srv.url, token = srv.token, state_dir = false })
            assert.equal("25", x:services()[1].licenses)
            x:close()
        end)
    end)

    describe("parameter names with unchecked = true", function()
        it("are percent-encoded like values: no second api=, no cut query", function()
            local rows = c:call("information", "services", { ["x&api"] = "token_info", ["a#b c"] = "1" },
                { unchecked = true })
            assert.is_table(rows)
            local log = srv:log()
            assert.equal(1, #log)
            assert.equal("services", log[1].api)
            assert.equal("token_info", log[1].params["x&api"])
            assert.equal("1", log[1].params["a#b c"])
            assert.matches("x%%26api=token_info", log[1].line)
            assert.matches("a%%23b%%20c=1", log[1].line)
        end)

        it("must be strings", function()
            local _, err = c:call("information", "services", { "x" }, { unchecked = true })
            assert.equal("params", err.kind)
            _, err = c:call("information", "services", { [true] = "x" }, { unchecked = true })
            assert.equal("params", err.kind)
            assert.equal(0, #srv:log())
        end)
    end)

    describe("headers", function()
        it("refuse control characters in user_agent, proxy, cainfo and capath at new()", function()
            for _, k in ipairs { "user_agent", "proxy", "cainfo", "capath" } do
                local err = refused { base_url = srv.url, [k] = "x\r\nX-Injected: 1" }
                assert.matches(k, err.message)
                assert.is_nil(err.message:find("Injected", 1, true))
                refused { base_url = srv.url, [k] = "x\0y" }
                refused { base_url = srv.url, [k] = "x\ty" }
            end
            assert.equal(0, #srv:log())
        end)

        it("refuse control characters and quotes in multipart names, filenames and types", function()
            local up = function(file)
                return c:call("configuration", "upload_file", { file = file })
            end
            for _, file in ipairs {
                { data = "abc", filename = "a\"b.txt" },
                { data = "abc", filename = "a\r\nContent-Type: text/html\r\n\r\nx" },
                { data = "abc", filename = "ok.txt", name = "file\"; filename=\"x" },
                { data = "abc", filename = "ok.txt", name = "a\nb" },
                { data = "abc", filename = "ok.txt", content_type = "text/plain\r\nX-Injected: 1" },
                { data = "abc", filename = 12 },
                { data = "abc", filename = "ok.txt", content_type = {} },
                { data = "abc", filename = "ok.txt", content_type = 'text/plain; charset="utf-8"' },
            } do
                local _, err = up(file)
                assert.equal("params", err and err.kind)
            end
            -- A path whose own name has a quote needs an explicit filename.
            local dir = support.tmpdir()
            local path = dir .. "/a\"b.txt"
            local f = assert(io.open(path, "wb"))
            f:write("abc")
            f:close()
            local _, err = up(path)
            assert.equal("params", err.kind)
            assert.matches("filename", err.message)
            assert.equal(0, #srv:log())
            assert(up { path = path, filename = "ab.txt", content_type = "text/plain; charset=utf-8" })
            assert.equal(1, #srv:log())
            os.remove(path)
            os.remove(dir)
        end)
    end)

    describe("the ceiling on calls", function()
        local century = { from = "2000-01-01", to = "2099-12-31" }

        it("refuses a plan beyond 1,000 calls when no daily limit is known, with 0 calls sent", function()
            local x = support.client(srv, { state_dir = false })
            local rows, err = x:report("cdr_1", century)
            assert.is_nil(rows)
            assert.equal("params", err.kind)
            assert.equal(0, err.calls)
            assert.matches("1%d%d%d calls", err.message)
            assert.matches("max_calls", err.message)
            local it_ok, it_err = pcall(function()
                for _ in x:each("cdr_1", century) do end
            end)
            assert.is_false(it_ok)
            assert.equal("params", it_err.kind)
            assert.equal(0, #srv:log())
            assert.equal(0, x:stats().calls)
            -- plan() still answers, and says the call would be refused.
            local p = assert(x:plan("cdr_1", century))
            assert.is_true(p.calls > 1000)
            assert.equal(1000, p.max_calls)
            assert.matches("max_calls", p.refused)
            x:close()
        end)

        it("lets the caller raise the ceiling, per client or per call", function()
            local x = support.client(srv, { state_dir = false, max_calls = 5000 })
            local p = assert(x:plan("cdr_1", century))
            assert.is_true(p.calls > 1000)
            assert.equal(5000, p.max_calls)
            assert.is_nil(p.refused)
            x:close()
            local params = { from = century.from, to = century.to, max_calls = 2000 }
            p = assert(c:plan("cdr_1", params))
            assert.is_nil(p.refused)
            assert.equal(2000, p.max_calls)
            assert.equal(0, #srv:log())
        end)

        it("can lower the ceiling below a plan", function()
            local x = support.client(srv, { state_dir = false })
            local rows, err = x:report("cdr_1", { from = "2026-01-01", to = "2026-03-31", max_calls = 2 })
            assert.is_nil(rows)
            assert.equal("params", err.kind)
            assert.matches("3 calls", err.message)
            assert.equal(0, #srv:log())
            assert(x:report("cdr_1", { from = "2026-01-01", to = "2026-03-31", max_calls = 3 }))
            assert.equal(3, #srv:log())
            x:close()
        end)

        it("is the day's remaining quota when the ledger knows the limit", function()
            local x = support.client(srv, { state_dir = false, daily_limit = 2 })
            local p = assert(x:plan("cdr_1", { from = "2026-01-01", to = "2026-03-31" }))
            assert.equal(3, p.calls)
            assert.is_string(p.refused)
            local rows, err = x:report("cdr_1", { from = "2026-01-01", to = "2026-03-31", max_calls = 10 })
            assert.is_nil(rows)
            assert.equal("quota", err.kind)
            assert.equal(0, #srv:log())
            x:close()
        end)

        it("checks its option", function()
            local ok = pcall(wolkvox.new, { base_url = srv.url, token = "t", max_calls = "9" })
            assert.is_false(ok)
            local msg
            ok, msg = pcall(wolkvox.new, { base_url = srv.url, token = "t", max_calls = 0 })
            assert.is_false(ok)
            assert.matches("option 'max_calls' must be a number of at least 1", msg)
            local _, err = c:report("cdr_1", { from = "2026-01-01", to = "2026-01-02", max_calls = -1 })
            assert.equal("params", err.kind)
            assert.matches("max_calls must be a number of at least 1", err.message)
            assert.equal(0, #srv:log())
        end)
    end)

    describe("programming errors point at the caller", function()
        it("an unknown option to new", function()
            local line
            local ok, msg = pcall(function()
                line = here(); local x = wolkvox.new { base_url = srv.url, token = "t", tiemout = 5 }
                return x
            end)
            assert.is_false(ok)
            assert.matches("option 'tiemout' is unknown", msg)
            points_at(line, msg)
            ok, msg = pcall(function()
                line = here(); local x = wolkvox.new { base_url = srv.url, token = "t", timeout = "5" }
                return x
            end)
            assert.is_false(ok)
            points_at(line, msg)
            ok, msg = pcall(function()
                line = here(); local x = wolkvox.new("0031")
                return x
            end)
            assert.is_false(ok)
            points_at(line, msg)
        end)

        it("a method called with a dot", function()
            local line
            local ok, msg = pcall(function()
                line = here(); local r = c.services()
                return r
            end)
            assert.is_false(ok)
            assert.matches("use c:services(), not c.services()", msg, 1, true)
            points_at(line, msg)
            ok, msg = pcall(function()
                line = here(); local r = c.call("information", "services")
                return r
            end)
            assert.is_false(ok)
            assert.matches("use c:call(), not c.call()", msg, 1, true)
            points_at(line, msg)
            for _, name in ipairs { "report", "each", "plan", "quota", "stats", "close", "closed" } do
                ok, msg = pcall(function() local r = c[name]() return r end)
                assert.is_false(ok)
                assert.matches("use c:" .. name .. "()", msg, 1, true)
            end
            ok, msg = pcall(function()
                line = here(); local r = c.real_time.agents()
                return r
            end)
            assert.is_false(ok)
            assert.matches("use c.real_time:agents(), not c.real_time.agents()", msg, 1, true)
            points_at(line, msg)
            assert.equal(0, #srv:log())
        end)

        it("a misspelt method, with the names it may have meant", function()
            local line
            local ok, msg = pcall(function()
                line = here(); local r = c:servcies()
                return r
            end)
            assert.is_false(ok)
            assert.matches("unknown method 'servcies' (did you mean 'services'?)", msg, 1, true)
            points_at(line, msg)
            ok, msg = pcall(function() local r = c:stat() return r end)
            assert.is_false(ok)
            assert.matches("'stats'", msg, 1, true)
            ok, msg = pcall(function()
                line = here(); local r = c.real_time:agnets()
                return r
            end)
            assert.is_false(ok)
            assert.matches("unknown method 'real_time:agnets' (did you mean 'agents'?)", msg, 1, true)
            points_at(line, msg)
            ok, msg = pcall(function() local r = c.real_tme:agents() return r end)
            assert.is_false(ok)
            assert.matches("'real_time'", msg, 1, true)
            -- Names far from every method stay nil; families and methods work.
            assert.is_nil(c.no_such_method)
            assert.is_nil(c._private)
            assert.equal("real_time/agents", select(2, c.real_time:agents()).endpoint)
            assert.equal("25", c:services()[1].licenses)
        end)

        it("an unknown record field lists the accepted ones", function()
            local _, err = c:add_record { type_campaign = "preview", campaign_id = "1",
                records = { { customer_id = "1", custumer_name = "Ana" } } }
            assert.equal("params", err.kind)
            assert.matches("unknown field 'custumer_name'", err.message)
            assert.matches("did you mean 'customer_name'", err.message, 1, true)
            assert.matches("accepted: customer_name, customer_last_name, ", err.message, 1, true)
            assert.matches("agent_id", err.message)
            _, err = c:services { limt = 5 }
            assert.matches("unknown parameter 'limt' (accepted: none)", err.message, 1, true)
            assert.equal(0, #srv:log())
        end)
    end)

    describe("the schedule's handlers", function()
        it("carry the job's deadline and pass on what release is told", function()
            local x = support.client(srv, { state_dir = false, deadline = 30 })
            local ctx = rawget(x, "_ctx")
            -- A spy around the real pacer: it records, then lets the pacer work.
            local real = ctx.pacer
            local released = {}
            ctx.pacer = setmetatable({
                release = function(_, slot, abandoned)
                    released[#released + 1] = { slot = slot, abandoned = abandoned }
                    return real:release(slot, abandoned)
                end,
            }, { __index = function(_, k)
                local v = real[k]
                if type(v) == "function" then
                    return function(_, ...) return v(real, ...) end
                end
                return v
            end })
            local iter = x:each("cdr_1", { from = "2026-01-01", to = "2026-03-31" })
            local h = ctx:running().active.h
            assert.is_number(h.deadline)
            local slot = h.acquire({})
            assert.is_not_nil(slot)
            h.release(slot, true)
            assert.equal(true, released[#released].abandoned)
            assert.equal(slot, released[#released].slot)
            for _ in iter do end
            ctx.pacer = real
            x:close()
        end)
    end)

    describe("the token", function()
        it("from token_file: the first line, trimmed, and nothing else kept", function()
            local path = os.tmpname()
            local f = assert(io.open(path, "wb"))
            f:write("  ", srv.token, " \r\n")
            f:close()
            local x = assert(wolkvox.new { base_url = srv.url, token_file = path, state_dir = false })
            assert.equal("25", x:services()[1].licenses)
            x:close()
            for _, s in ipairs(support.strings(x)) do
                assert.is_nil(s:find(srv.token, 1, true))
            end
            f = assert(io.open(path, "wb"))
            f:write("\n", srv.token, "\n")
            f:close()
            local y, err = wolkvox.new { base_url = srv.url, token_file = path, state_dir = false }
            assert.is_nil(y)
            assert.equal("auth", err.kind)
            assert.matches("first line", err.message)
            os.remove(path)
            y, err = wolkvox.new { base_url = srv.url, token_file = path, state_dir = false }
            assert.is_nil(y)
            assert.equal("auth", err.kind)
        end)
    end)

    describe("error messages", function()
        it("cap long server messages", function()
            local long = string.rep("x", 5000)
            support.faults(srv, { { status = 500, body = '{"code":500,"msg":"' .. long .. '"}' } })
            local x = support.client(srv, { retries = 0, state_dir = false })
            local _, err = x:services()
            x:close()
            assert.equal("http", err.kind)
            assert.is_true(#err.message < 400, #err.message)
            assert.matches("^xxxx", err.message)
            assert.matches("more bytes", err.message)
        end)

        it("cap without splitting a UTF-8 character", function()
            local errors = require "wolkvox.errors"
            local s = errors.snippet(string.rep("ñ", 400), 301)
            assert.is_nil(s:find("[\195][^\128-\191]"))
            assert.equal(150, select(2, s:gsub("ñ", "")))
            assert.equal("short", errors.snippet("short", 300))
        end)

        it("hooks and log lines hold no token", function()
            local secret = srv.token
            local lines, infos = {}, {}
            local x = support.client(srv, { retries = 1, retry_base = 0.01, state_dir = false,
                logger = function(_, line) lines[#lines + 1] = line end,
                on_request = function(i) infos[#infos + 1] = i end,
                on_response = function(i) infos[#infos + 1] = i end,
                on_retry = function(i) infos[#infos + 1] = i end })
            -- A proxy page that echoes the request headers, token included, then a 500.
            support.faults(srv, { { echo = true }, { status = 500, msg = "boom" } })
            local _, err = x:services()
            assert.equal("http", err.kind)
            assert(x:services())
            x:close()
            assert.is_true(#lines >= 5)
            infos[#infos + 1] = err
            for _, s in ipairs(support.strings({ lines, infos })) do
                assert.is_nil(s:find(secret, 1, true))
            end
        end)
    end)
end)

describe("pacing and quota options reach the pacer and the ledger", function()
    local srv
    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)

    it("server_limit: calls given up on keep their slots that long, not 60 s", function()
        local now = require("wolkvox.core").now
        -- The server takes 1 s over each call; the client gives up at 0.3 s.
        srv:control("config", { latency = 1 })
        local dir = support.tmpdir()
        local x = support.client(srv, { state_dir = dir, retries = 0, timeout = 0.3, server_limit = 1.5 })
        -- Two calls the client gives up on: both slots of the token stay busy.
        for _ = 1, 2 do
            local _, err = x:services()
            assert.equal("timeout", err.reason)
        end
        srv:control("config", { latency = 0 })
        -- Another client of the token (same state directory) waits for them.
        local y = support.client(srv, { state_dir = dir, retries = 0, server_limit = 1.5 })
        local t0 = now()
        assert(y:services())
        local waited = now() - t0
        assert.is_true(waited > 0.3 and waited < 10, "waited " .. waited)
        x:close()
        y:close()
        assert.has_error(function() wolkvox.new { base_url = srv.url, token = srv.token, server_limit = 0 } end)
    end)

    it("prefer_measured: the limit token_info says wins over licenses", function()
        local x = support.client(srv, { state_dir = support.tmpdir(), licenses = 5 })
        local q = assert(x:quota())
        assert.equal(5000, q.limit)
        x:close()
        local y = support.client(srv, { state_dir = support.tmpdir(), licenses = 5, prefer_measured = true })
        q = assert(y:quota())
        assert.equal(25000, q.limit)
        assert.equal("measured", q.limit_source)
        y:close()
    end)
end)
