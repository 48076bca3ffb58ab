-- The lookup cache (`cache = { ttl = ... }`): the same lookup within the TTL
-- spends no call (the fake's log counts them), says so in meta, and is
-- asked again once the TTL has passed; failures, writes and reports are
-- never kept; tokens never share answers.  Per process (curl), per fake
-- server (in-process transport), and in a lua_shared_dict inside nginx.
local support = require "support"
local wolkvox = require "wolkvox"
local inproc = require "wolkvox.transport.fake"
local nginx = require "nginx"

local sleep = inproc.clock.sleep

describe("the lookup cache", function()
    local srv
    setup(function()
        srv = support.fake { tokens = { "tok-one", "tok-two" } }
    end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    local function client(opts)
        local o = { token = "tok-one", retries = 0, cache = { ttl = 60 } }
        for k, v in pairs(opts or {}) do
            o[k] = v
        end
        return support.client(srv, o)
    end

    it("answers a repeated lookup without a call, and says so", function()
        local c = client()
        local rows, meta = assert(c:routing_points())
        assert.is_nil(meta.cached)
        assert.equal(1, meta.calls)
        for _ = 1, 5 do
            local again, m = assert(c:routing_points())
            assert.same(rows, again)
            assert.is_true(m.cached)
            assert.equal(0, m.calls)
        end
        assert.equal(1, #support.calls(srv, "routing_points"))
        assert.equal(1, c:stats().calls)
        assert.equal(5, c:stats().cache_hits)
        -- other parameters are another answer
        assert(c:routing_points { routing = "1001" })
        assert.equal(2, #support.calls(srv, "routing_points"))
        -- what the caller does to an answer does not change the kept one
        local got = assert(c:routing_points())
        got[1].rp_name = "changed"
        assert.equal("IVR Principal", assert(c:routing_points())[1].rp_name)
        c:close()
    end)

    it("asks again once the TTL has passed", function()
        -- A TTL a loaded machine (or valgrind) cannot outlast between two calls.
        local c = client { cache = { ttl = 1 } }
        assert(c:skills())
        assert(c:skills())
        assert.equal(1, #support.calls(srv, "skills"))
        sleep(1.2)
        local _, meta = assert(c:skills())
        assert.is_nil(meta.cached)
        assert.equal(2, #support.calls(srv, "skills"))
        c:close()
    end)

    it("keeps no failure, no write, no report, and nothing without the option", function()
        local c = client()
        support.faults(srv, { { match = "agents", status = 500 } })
        assert.is_nil((c:agents()))
        assert(c:agents())
        assert(c:agents())
        assert.equal(2, #support.calls(srv, "agents"))
        assert(c:send_sms { telephone = "573001234567", message = "hola" })
        assert(c:send_sms { telephone = "573001234567", message = "hola" })
        assert.equal(2, #support.calls(srv, "send_sms"))
        assert(c:cdr_1 { from = "2026-01-05", to = "2026-01-05" })
        assert(c:cdr_1 { from = "2026-01-05", to = "2026-01-05" })
        assert.equal(2, #support.calls(srv, "cdr_1"))
        c:close()
        local plain = client { cache = false }
        assert(plain:campaigns())
        assert(plain:campaigns())
        assert.equal(2, #support.calls(srv, "campaigns"))
        plain:close()
    end)

    it("never gives one token's answer to another", function()
        local a, b = client(), client { token = "tok-two" }
        assert(a:rec_screen())
        local _, meta = assert(b:rec_screen())
        assert.is_nil(meta.cached)
        assert.equal(2, #support.calls(srv, "rec_screen"))
        local _, m2 = assert(b:rec_screen())
        assert.is_true(m2.cached)
        a:close()
        b:close()
    end)

    it("refuses a malformed cache option at the caller's line", function()
        assert.has_error(function() wolkvox.new { base_url = srv.url, token = "x", cache = { ttl = 0 } } end)
        assert.has_error(function() wolkvox.new { base_url = srv.url, token = "x", cache = { ttl = 5, tll = 1 } } end)
    end)
end)

describe("the lookup cache of the in-process fake transport", function()
    it("is the fake server's: its clients share it, the fake's log counts the calls", function()
        local fsrv = inproc.server()
        local function client()
            return assert(wolkvox.new { transport = "fake", fake = fsrv, server = "0031", token = "test-token",
                state_dir = false, cache = { ttl = 60 } })
        end
        local a, b = client(), client()
        assert(a:campaigns())
        local _, meta = assert(b:campaigns())
        assert.is_true(meta.cached)
        assert.equal(1, #fsrv:log())
        -- pages of a cached lookup are cached too: the second walk is free
        assert(a:all_pages("list_files", { limit = 10 }))
        local _, m = assert(b:all_pages("list_files", { limit = 10 }))
        assert.equal(0, m.calls)
        assert.equal(3, m.cached)
        assert.equal(4, #fsrv:log())
        a:close()
        b:close()
    end)
end)

describe("the lookup cache inside nginx #nginx", function()
    local srv, ngx1
    nginx.suite({ tokens = { "nginx-cache-secret-9d1" } }, function(s)
        return { workers = 2, http = "  lua_shared_dict lookups 1m;\n", locations = string.format([[
    location = /agents { content_by_lua_block {
      local c = assert(require("wolkvox").new { base_url = %q, token = %q, retries = 0,
          cache = { ttl = 60, dict = "lookups" } })
      local rows, meta = assert(c:agents())
      c:close()
      ngx.say(#rows, " ", tostring(meta.cached))
    } }
    location = /keys { content_by_lua_block {
      local keys = ngx.shared.lookups:get_keys(0)
      local leak = false
      for _, k in ipairs(keys) do
        leak = leak or k:find("nginx-cache-secret", 1, true) ~= nil
          or (ngx.shared.lookups:get(k) or ""):find("nginx-cache-secret", 1, true) ~= nil
      end
      ngx.say(#keys, " ", tostring(leak))
    } }
]], s.url, "nginx-cache-secret-9d1") }
    end, function(s, n) srv, ngx1 = s, n end)

    it("spends one call per TTL for every request of every worker", function()
        local cached = 0
        for i = 1, 12 do
            local status, body = ngx1:get("/agents")
            assert.equal(200, status, tostring(body) .. ngx1:errors())
            if i == 1 then
                assert.equal("3 nil", body:match("^(.-)%s*$"))
            end
            cached = cached + (body:find("true", 1, true) and 1 or 0)
        end
        assert.equal(11, cached)
        assert.equal(1, #support.calls(srv, "agents"))
        local _, keys = ngx1:get("/keys")
        assert.equal("1 false", keys:match("^(.-)%s*$"))
    end)
end)
