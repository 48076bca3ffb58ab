-- The OpenResty example (examples/openresty/wallboard.lua) in a real nginx
-- against the fake: it answers, and asks wolkvox once per TTL however many
-- requests come.  Tagged #nginx: the LuaJIT pass runs it.
local cjson = require "cjson"
local support = require "support"
local nginx = require "nginx"

describe("the OpenResty example #nginx", function()
    local srv, ngx1
    local root = io.popen("pwd"):read("*l")
    if not nginx.suite(nil, function(s)
        return { workers = 2, http = string.format([[
  lua_shared_dict wallboard 1m;
  init_by_lua_block { package.path = %q .. package.path }
]], root .. "/examples/openresty/?.lua;"), locations = string.format([[
    location = /wallboard { content_by_lua_block {
      require("wallboard").handle { base_url = %q, token = %q }
    } }
]], s.url, s.token) }
    end, function(s, n) srv, ngx1 = s, n end) then
        return
    end

    it("serves the numbers and calls wolkvox once for many requests", function()
        for _ = 1, 12 do
            local status, body = ngx1:get("/wallboard")
            assert.equal(200, status, body .. ngx1:errors())
            local numbers = cjson.decode(body)
            assert.equal(4, numbers.routing_points)
            assert.is_number(numbers.active)
        end
        assert.equal(1, #support.calls(srv, "routing_points"))
    end)

    -- examples/openresty/run.sh, as the docs run it: one command, as a user
    -- that is not root (nobody), from a copy of the tree nobody may read.
    it("runs by examples/openresty/run.sh PORT as nobody, answers, and stops on SIGTERM", function()
        -- In /tmp itself: spec/run's TMPDIR is a 0700 directory nobody may
        -- not pass through.
        local _, made = support.sh("mktemp -d /tmp/wolkvox-openresty.XXXXXX")
        local dir = assert(made:match("^(%S+)"), "mktemp")
        finally(function()
            support.sh("rm -rf " .. support.q(dir))
        end)
        local copy = dir .. "/tree"
        local code, out = support.sh("chmod 0755 " .. support.q(dir) .. " && mkdir -p " .. support.q(copy .. "/build")
            .. " && cp -r lua bin examples " .. support.q(copy)
            .. " && cp -r build/luajit " .. support.q(copy .. "/build/")
            .. " && chmod -R a+rX " .. support.q(copy))
        assert.equal(0, code, out)
        local port = nginx.free_port()
        code, out = support.sh("setpriv --reuid=nobody --regid=nogroup --clear-groups env -i PATH=/usr/bin:/bin "
            .. "HOME=/nonexistent sh " .. support.q(copy .. "/examples/openresty/run.sh") .. " " .. port
            .. " >" .. support.q(dir .. "/out") .. " 2>&1 & echo $!")
        assert.equal(0, code, out)
        local pid = out:match("%d+")
        local stopped = false
        finally(function()
            if not stopped then
                support.sh("kill -TERM " .. pid)
            end
        end)
        -- (a busy machine: nginx and the fake start in a few seconds at worst)
        local ok = pcall(support.wait_for, function()
            return (support.slurp(dir .. "/out") or ""):find("/wallboard", 1, true) ~= nil
        end, 60, "run.sh prints the URL")
        assert(ok, "run.sh did not print its URL within 60 s; it printed: " .. tostring(support.slurp(dir .. "/out")))
        local text = support.read(dir .. "/out")
        local url = text:match("(http://127%.0%.0%.1:%d+/wallboard)")
        assert.equal("http://127.0.0.1:" .. port .. "/wallboard", url, text)
        local http = require "socket.http"
        local body, status = http.request(url)
        assert.equal(200, status, tostring(body) .. text)
        assert.equal(4, cjson.decode(body).routing_points)
        assert.equal("nobody", select(2, support.sh("ps -o user= -p " .. pid)):match("%S+"))
        support.sh("kill -TERM " .. pid)
        support.wait_for(function()
            return not support.alive(pid)
        end, 10, "run.sh stops")
        stopped = true
        -- nginx and the fake are gone, and so is the temporary prefix.
        assert.is_nil(http.request(url))
        out = select(2, support.sh("ls -d /tmp/wallboard.* 2>/dev/null | xargs -r stat -c %U | grep -c nobody"))
        assert.equal("0", out:match("%d+"), out)
    end)
end)
