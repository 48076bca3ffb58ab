-- Metrics inside a real nginx (issue #23): every worker's calls counted in
-- the shared dict by endpoint and outcome, with retries, bytes, rows and
-- calls in flight, and the day's quota from the shared ledger, answered by
-- the handler users mount (`wolkvox.out.metrics`'s serve_ngx) in the
-- Prometheus text format; promtool checks it when installed.  Tagged
-- #nginx: spec/run runs it in the LuaJIT pass.
local socket = require "socket"
local support = require "support"
local nginx = require "nginx"

local function http_block(srv)
    return string.format([[
  init_by_lua_block {
    function wv_client(extra)
      local o = { base_url = %q, token = %q, retry_base = 0.01, retry_cap = 0.01, licenses = 2 }
      for k, v in pairs(extra or {}) do o[k] = v end
      return assert(require("wolkvox").new(o))
    end
  }
]], srv.url, srv.token)
end

local LOCATIONS = [[
    location = /rp { content_by_lua_block {
      local rows, err = wv_client():routing_points()
      ngx.say(rows and ("ok " .. #rows) or err.kind)
    } }
    location = /slow { content_by_lua_block {
      local rows, err = wv_client { retries = 0 }:services()
      ngx.say(rows and "ok" or err.kind)
    } }
    location = /metrics { content_by_lua_block { require("wolkvox.out.metrics").serve_ngx() } }
    location = /metrics_nodict { content_by_lua_block {
      require("wolkvox.out.metrics").serve_ngx { dict = "no_such_dict" }
    } }
]]

local value = support.metric

local function curl(url)
    local p = assert(io.popen("env -u LD_PRELOAD curl -s -D - " .. url, "r"))
    local out = p:read("*a")
    p:close()
    local head, body = out:match("^(.-)\r\n\r\n(.*)$")
    return head or "", body or out
end

describe("metrics inside nginx #nginx", function()
    local srv, ngx2
    if not nginx.suite(nil, function(s) return { workers = 2, http = http_block(s), locations = LOCATIONS } end,
            function(s, n) srv, ngx2 = s, n end) then
        return
    end

    it("counts every worker's calls in the shared dict and serves them with the shared quota", function()
        for _ = 1, 8 do
            local _, body = curl(ngx2.url .. "/rp")
            assert.truthy(body:match("^ok %d+"), body)
        end
        support.faults(srv, { { match = "routing_points", forbidden = "quota" } })
        local _, body = curl(ngx2.url .. "/rp")
        assert.equal("quota\n", body)
        support.faults(srv, { { match = "routing_points", status = 500 } })
        _, body = curl(ngx2.url .. "/rp")
        assert.truthy(body:match("^ok"), body)
        local head, text = curl(ngx2.url .. "/metrics")
        assert.truthy(head:find("Content-Type: text/plain; version=0.0.4", 1, true), head)
        local rp = "information/routing_points"
        assert.equal(9, value(text, "wolkvox_calls_total", { endpoint = rp, outcome = "ok" }), text)
        assert.equal(1, value(text, "wolkvox_calls_total", { endpoint = rp, outcome = "quota" }), text)
        assert.equal(1, value(text, "wolkvox_calls_total", { endpoint = rp, outcome = "http" }), text)
        assert.equal(1, value(text, "wolkvox_retries_total"))
        assert.is_true(value(text, "wolkvox_response_bytes_total") > 0)
        assert.is_true(value(text, "wolkvox_rows_total") >= 9)
        assert.equal(0, value(text, "wolkvox_calls_in_flight"))
        -- the shared ledger: 11 calls of 2,000 (licenses = 2)
        assert.equal(11, value(text, "wolkvox_quota_used_calls"))
        assert.equal(2000, value(text, "wolkvox_quota_limit_calls"))
        assert.equal(1989, value(text, "wolkvox_quota_remaining_calls"))
        assert.is_nil(text:find(srv.token, 1, true))
        assert.is_nil(ngx2:errors():find("[error]", 1, true), ngx2:errors())
        if (support.sh("command -v promtool")) == 0 then
            local path = os.tmpname()
            support.spit(path, text)
            local code, said = support.sh("promtool check metrics < " .. support.q(path))
            os.remove(path)
            assert.equal(0, code, said)
            assert.equal("", said)
        else
            pending("promtool is not installed (Debian package prometheus; tools/install-deps installs it)")
        end
    end)

    it("says the calls in flight now, in any worker", function()
        support.faults(srv, { { match = "services", delay = 2 } })
        local slow = assert(io.popen("env -u LD_PRELOAD curl -s " .. ngx2.url .. "/slow", "r"))
        local seen = 0
        for _ = 1, 150 do
            local _, text = curl(ngx2.url .. "/metrics")
            seen = value(text, "wolkvox_calls_in_flight") or 0
            if seen == 1 then
                break
            end
            socket.sleep(0.02)
        end
        assert.equal(1, seen)
        assert.equal("ok\n", slow:read("*a"))
        slow:close()
        local _, text = curl(ngx2.url .. "/metrics")
        assert.equal(0, value(text, "wolkvox_calls_in_flight"))
    end)

    it("answers 500 naming a shared dict that is not declared", function()
        local head, body = curl(ngx2.url .. "/metrics_nodict")
        assert.truthy(head:match("^HTTP/1.1 500"), head)
        assert.truthy(body:find("lua_shared_dict no_such_dict", 1, true), body)
    end)
end)
