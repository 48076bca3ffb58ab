-- Fleet mode inside nginx: two nginx instances on different ports (two
-- "gateways") share one token's 2 slots and the day's count through
-- the Redis protocol on cosockets, and keep serving other requests meanwhile.
-- Tagged #nginx: spec/run runs it in the LuaJIT pass.
local support = require "support"
local nginx = require "nginx"
local redis = require "redis"

local function http_block(srv, url)
    return string.format([[
  init_by_lua_block {
    function wv_client(extra)
      local o = { base_url = %q, token = %q, retry_base = 0.01, retries = 0 }
      for k, v in pairs(extra or {}) do o[k] = v end
      return assert(require("wolkvox").new(o))
    end
    wv_fleet = %q
  }
]], srv.url, srv.token, url or "")
end

local LOCATIONS = [[
    location = /report2 { content_by_lua_block {
      local o = wv_fleet ~= "" and { redis = wv_fleet } or nil
      local rows, meta = wv_client(o):cdr_1 { from = "2026-01-01", to = "2026-02-28" }
      if not rows then ngx.say("error ", tostring(meta)) return end
      ngx.say(#rows, "|", meta.calls)
    } }
    location = /quota { content_by_lua_block {
      ngx.say(wv_client { redis = wv_fleet }:quota({ measure = false }).used)
    } }
    location = /ping { content_by_lua_block { ngx.say("pong") } }
]]

-- 8 requests to each of `a` and `b` at once (each makes 2 calls); a ping to
-- each while they run.  Returns the calls they report and the pings' answers.
-- Each request has 120 s (a lease that never ends fails it, with a line
-- saying so, instead of hanging the spec).
local function run(a, b)
    local pipes = {}
    for i = 1, 16 do
        local n = i % 2 == 0 and a or b
        pipes[i] = assert(io.popen("env -u LD_PRELOAD curl -s -m 120 " .. n.url
            .. "/report2 || echo \"no answer within 120 s (curl exit $?)\"", "r"))
    end
    local pings = { select(2, a:get("/ping")), select(2, b:get("/ping")) }
    local calls, bodies = 0, {}
    for i = 1, 16 do
        local body = pipes[i]:read("*a")
        pipes[i]:close()
        bodies[#bodies + 1] = body
        local n = body:match("^%d+|(%d+)")
        calls = calls + (tonumber(n) or 0)
    end
    return calls, pings, bodies
end

describe("fleet mode inside nginx #nginx", function()
    if not nginx.need() then
        return
    end
    if not redis.need() then
        return
    end
    local srv, rs
    redis.suite(nil, function(a, b) srv, rs = a, b end)
    before_each(function()
        srv:control("reset")
        srv:control("config", { latency = 0.1 })
    end)

    it("two gateways never have more than 2 calls in flight together, and count each call once", function()
        local a = nginx.start { http = http_block(srv, rs.url), locations = LOCATIONS }
        local b = nginx.start { http = http_block(srv, rs.url), locations = LOCATIONS }
        finally(function()
            a:stop()
            b:stop()
        end)
        local calls, pings, bodies = run(a, b)
        assert.same({ "pong\n", "pong\n" }, pings)
        for _, body in ipairs(bodies) do
            assert.equal("5900|2\n", body, a:errors() .. b:errors())
        end
        assert.equal(32, calls)
        local stats = srv:control("stats")
        assert.is_true(stats.max_inflight <= 2, "the fake saw " .. stats.max_inflight)
        for _, entry in ipairs(srv:log()) do
            assert.is_nil(entry.refused)
        end
        assert.equal(32, stats.requests)
        local _, used = a:get("/quota")
        assert.equal("32\n", used)
        assert.falsy(a:errors():find("[error]", 1, true), a:errors())
    end)

    it("(control) the same gateways without Redis exceed 2 in flight", function()
        local a = nginx.start { http = http_block(srv), locations = LOCATIONS }
        local b = nginx.start { http = http_block(srv), locations = LOCATIONS }
        finally(function()
            a:stop()
            b:stop()
        end)
        run(a, b)
        assert.is_true(support.exceeded(srv), "the fake never saw more than 2 in flight")
    end)
end)

describe("fleet mode inside nginx over TLS (rediss://) #nginx", function()
    if not nginx.need() or not redis.need() then
        return
    end
    local srv, rs
    redis.suite({ tls = true }, function(a, b) srv, rs = a, b end)

    local TLS_LOCATIONS = [[
    location = /tls { content_by_lua_block {
      local c = wv_client { redis = wv_fleet }
      local rows, err = c:services()
      if not rows then ngx.say(err.kind, " ", tostring(err)) return end
      ngx.say("ok ", c:quota({ measure = false }).used)
    } }
    location = /cafile { content_by_lua_block {
      local c, err = require("wolkvox").new { base_url = "http://127.0.0.1:9", token = "t",
        redis = wv_fleet, redis_cafile = "/etc/ssl/certs/ca-certificates.crt" }
      ngx.say(tostring(c), " ", err and err.kind, " ", tostring(err))
    } }
    location = /clientcert { content_by_lua_block {
      local c, err = require("wolkvox").new { base_url = "http://127.0.0.1:9", token = "t",
        redis = wv_fleet, redis_cert = "/tmp/c.pem", redis_key = "/tmp/k.pem" }
      ngx.say(tostring(c), " ", err and err.kind, " ", tostring(err))
    } }
]]

    it("verifies the server against lua_ssl_trusted_certificate, and refuses one it cannot verify", function()
        local a = nginx.start { http = http_block(srv, rs.url) .. "  lua_ssl_trusted_certificate " .. rs.cert .. ";\n",
            locations = TLS_LOCATIONS }
        local b = nginx.start { http = http_block(srv, rs.url), locations = TLS_LOCATIONS }
        finally(function()
            a:stop()
            b:stop()
        end)
        local _, body = a:get("/tls")
        assert.equal("ok 1\n", body, a:errors())
        _, body = a:get("/tls")
        assert.equal("ok 2\n", body, a:errors())
        -- Without the certificate: no call is made.
        _, body = b:get("/tls")
        assert.truthy(body:find("^state "), body .. b:errors())
        assert.equal(2, srv:control("stats").requests)
        -- redis_cafile would be ignored here: it is refused instead.
        _, body = a:get("/cafile")
        assert.truthy(body:find("^nil params .*lua_ssl_trusted_certificate"), body .. a:errors())
        -- A client certificate whose file is missing: refused when the client is made.
        _, body = a:get("/clientcert")
        assert.truthy(body:find("^nil params .*redis_cert: cannot read /tmp/c.pem"), body .. a:errors())
    end)
end)

describe("fleet mode inside nginx over TLS with client certificates #nginx", function()
    if not nginx.need() or not redis.need() then
        return
    end
    local srv, rs, gw
    redis.suite({ tls = true, client_auth = true }, function(a, b) srv, rs = a, b end)

    -- /call?cert=C&key=K: one call with that client certificate (none without).
    local CERT_LOCATIONS = [[
    location = /call { content_by_lua_block {
      local a = ngx.req.get_uri_args()
      local c, err = require("wolkvox").new { base_url = wv_base, token = wv_token, retries = 0,
        redis = wv_fleet, redis_cert = a.cert, redis_key = a.key, redis_failure = "refuse" }
      if not c then ngx.say("new ", err.kind, " ", tostring(err)) return end
      local rows
      rows, err = c:services()
      if not rows then ngx.say(err.kind, " ", tostring(err)) return end
      ngx.say("ok ", c:quota({ measure = false }).used)
    } }
]]

    setup(function()
        gw = nginx.start { http = http_block(srv, rs.url) .. string.format(
            "  lua_ssl_trusted_certificate %s;\n  init_worker_by_lua_block { wv_base = %q wv_token = %q }\n",
            rs.cert, srv.url, srv.token), locations = CERT_LOCATIONS }
    end)
    teardown(function() gw:stop() end)
    before_each(function()
        srv:control("reset")
        rs:command("FLUSHALL")
    end)

    local function call(cert, key)
        local q = cert and ("?cert=" .. cert .. "&key=" .. key) or ""
        local status, body = gw:get("/call" .. q)
        assert.equal(200, status, gw:errors())
        assert.is_nil(body:find(srv.token, 1, true))
        return body
    end

    it("shows redis_cert and redis_key to a server that asks, and counts in Redis", function()
        assert.equal("ok 1\n", call(rs.client_cert, rs.client_key))
        assert.equal("ok 2\n", call(rs.client_cert, rs.client_key))   -- a pooled connection: no new handshake needed
        assert.equal("2", rs:command("GET", rs:command("KEYS", "wolkvox:calls:*")[1]))
        assert.equal(2, srv:control("stats").requests)
    end)

    it("is refused without them, even after a client of the same worker pooled a connection with them", function()
        assert.equal("ok 1\n", call(rs.client_cert, rs.client_key))
        -- The same URL without a certificate: a pool of its own, so a new handshake, which the server refuses.
        local body = call()
        assert.truthy(body:find("^state "), body)
        assert.equal(1, srv:control("stats").requests)
    end)

    it("is refused with a key of another certificate, spending no call", function()
        local body = call(rs.client_cert, rs.dir .. "/key.pem")   -- the server's own key
        assert.truthy(body:find("^state .*TLS"), body .. gw:errors())
        assert.is_nil(body:find("BEGIN", 1, true))
        assert.equal(0, srv:control("stats").requests)
    end)

    it("refuses a missing file, or one that holds no PEM, when the client is made, naming the option", function()
        local missing = rs.dir .. "/none.pem"
        local body = call(rs.client_cert, missing)
        assert.truthy(body:find("^new params "), body)
        assert.truthy(body:find("redis_key: cannot read " .. missing .. ": No such file", 1, true), body)
        body = call(rs.dir .. "/ca.srl", rs.client_key)   -- a file that is not PEM
        assert.truthy(body:find("^new params .*redis_cert: .*ca%.srl holds no PEM certificate"), body)
        -- A private key given as the certificate, and the other way round.
        body = call(rs.client_key, rs.client_key)
        assert.truthy(body:find("^new params .*redis_cert: .*holds no PEM certificate"), body)
        body = call(rs.client_cert, rs.client_cert)
        assert.truthy(body:find("^new params .*redis_key: .*holds no PEM private key"), body)
        -- A key with a passphrase (PKCS#8 and the older PEM form): not parsed, so nothing asks for it.
        for i, form in ipairs { "", " -traditional" } do
            local enc = rs.dir .. "/encrypted" .. i .. ".key"
            assert.equal(0, (support.sh("openssl pkey -in " .. rs.client_key .. form
                .. " -aes256 -passout pass:secret-phrase -out " .. enc)))
            body = call(rs.client_cert, enc)
            assert.truthy(body:find("^new params .*redis_key: .*holds a key with a passphrase"), body)
        end
        assert.is_nil(body:find("BEGIN", 1, true))
        -- A FIFO (open() would wait for a writer, the worker with it) or a device: not read.
        local fifo = rs.dir .. "/fifo.pem"
        assert(os.execute("mkfifo " .. fifo))
        body = call(rs.client_cert, fifo)
        assert.truthy(body:find("^new params .*redis_key: .*fifo%.pem is not a regular file"), body)
        body = call("/dev/zero", rs.client_key)
        assert.truthy(body:find("^new params .*redis_cert: /dev/zero is not a regular file"), body)
        assert.equal(0, srv:control("stats").requests)
    end)
end)

-- A hostile or broken Redis inside nginx (issue #20): each command has the
-- timeout for all it reads however slowly the server drips, a reply is
-- capped, a reply that is none is a state error; the worker serves meanwhile.
describe("fleet mode inside nginx against a hostile Redis #nginx", function()
    if not nginx.need() then
        return
    end
    local srv
    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    -- A gateway whose /call makes one call with `redis_failure = refuse`
    -- and a 3 s timeout towards the fleet's Redis at `url`.
    local function gateway(url)
        return nginx.start { http = http_block(srv, url), locations = [[
    location = /call { content_by_lua_block {
      local t0 = ngx.now()
      local rows, err = wv_client { redis = wv_fleet, redis_failure = "refuse", connect_timeout = 3 }:services()
      ngx.say(rows and "rows" or (err.kind .. " " .. tostring(err)), "|", string.format("%.1f", ngx.now() - t0))
    } }
    location = /ping { content_by_lua_block { ngx.say("pong") } }
]] }
    end

    local GiB = 1024 * 1024 * 1024
    for _, case in ipairs {
        { "a reply dripped one byte every 2 s ends at the command's deadline",
            { drip = "$1000\r\n" .. ("x"):rep(1000) .. "\r\n", every = 2, limit = 30 }, "within 3 s" },
        { "a bulk string declaring 1 GiB is refused at its first MiB",
            { stream = "$" .. GiB .. "\r\n", fill = "x", total = GiB + 16 }, "too large (over 1048576 bytes)" },
        { "an array declaring 100 million elements is refused at its header",
            { stream = "*100000000\r\n", fill = ":1\r\n", total = 400000020 }, "too large (over 4096 elements)" },
        { "a reply that is no reply is a state error", "this is not RESP\r\n", "not a Redis reply" },
    } do
        it(case[1] .. "; nothing is sent, the worker keeps serving", function()
            local h = redis.hostile { ["EVALSHA take"] = case[2] }
            local g = gateway(h.url)
            finally(function()
                g:stop()
                h:stop()
            end)
            local p = assert(io.popen("env -u LD_PRELOAD curl -s -m 60 " .. g.url .. "/call", "r"))
            local _, ping = g:get("/ping")
            local body = p:read("*a")
            p:close()
            assert.equal("pong\n", ping)
            local kind, took = body:match("^(%S+) .*|([%d.]+)\n$")
            assert.equal("state", kind, body .. g:errors())
            assert.truthy(body:find(case[3], 1, true), body)
            assert.is_true(tonumber(took) < 12, "the call took " .. took .. " s")
            assert.equal(0, srv:control("stats").requests)
        end)
    end
end)
