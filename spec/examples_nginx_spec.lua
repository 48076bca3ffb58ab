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
end)
