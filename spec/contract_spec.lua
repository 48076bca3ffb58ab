-- Every transport passes the one contract (spec/contract.lua): the curl
-- transport here, the ngx transport inside a real nginx.
local contract = require "contract"
local support = require "support"

local function report(results)
    local failed = {}
    for _, r in ipairs(results) do
        if not r.ok then
            failed[#failed + 1] = r.name .. ": " .. tostring(r.err)
        end
    end
    return failed
end

describe("the transport contract", function()
    local srv

    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function()
        srv:control("reset")
        support.faults(srv, contract.FAULTS)
    end)

    it("holds for the curl transport", function()
        local results = contract.run(require "wolkvox.transport.curl", srv.url, srv.token)
        assert.equal(#contract.cases, #results)
        assert.same({}, report(results))
    end)

    it("holds for the in-process transport", function()
        -- No socket: one in-process fake that answers for one base URL only
        -- (the contract's refused connection goes to another), its faults
        -- queued as on the HTTP fake.
        local fake = require "wolkvox.transport.fake"
        local base = "http://fake.invalid"
        local server = fake.server { url = base, faults = contract.FAULTS }
        local mod = setmetatable({ new = function(opts, token)
            opts.fake = server
            return fake.new(opts, token)
        end }, { __index = fake })
        local results = contract.run(mod, base, "test-token")
        assert.equal(#contract.cases, #results)
        assert.same({}, report(results))
    end)

    describe("inside nginx #nginx", function()
        local nginx = require "nginx"
        if not nginx.need() then
            return
        end
        local ngx1
        setup(function()
            local root = io.popen("pwd"):read("*l")
            ngx1 = nginx.start { http = string.format([[
  init_by_lua_block { package.path = %q .. package.path }
]], root .. "/spec/?.lua;"), locations = string.format([[
    location = /contract { content_by_lua_block {
      local results = require("contract").run(require("wolkvox.transport.ngx"), %q, %q)
      ngx.say(require("cjson").encode(results))
    } }
]], srv.url, srv.token) }
        end)
        teardown(function()
            if ngx1 then
                ngx1:stop()
            end
        end)

        it("holds for the ngx transport", function()
            local status, body = ngx1:get("/contract")
            assert.equal(200, status, body .. ngx1:errors())
            local results = require("cjson").decode(body)
            assert.equal(#contract.cases, #results)
            assert.same({}, report(results))
        end)
    end)
end)
