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

-- The C core holds the collector while a session waits (the rows it is
-- making are all live), and gives it back as it was, an interrupt too.
describe("the curl transport's wait", function()
    local hostile = require "hostile"
    local curl = require "wolkvox.transport.curl"

    local function transport(url)
        return curl.new({ timeout = 10, max_bytes = 1048576, max_concurrent = 2, verify = true }, "token-12345678"),
            url .. "/x"
    end

    it("gives the collector back running, or stopped as it was", function()
        local h = hostile.start { default = hostile.json(200, '{"data":[{"a":"1"}]}') }
        local t, url = transport(h.url)
        for _, stopped in ipairs { false, true } do
            if stopped then
                collectgarbage("stop")
            end
            t:start { url = url }
            local id, res = t:wait()
            assert.is_number(id)
            assert.equal("1", res.value.data[1].a)
            assert.equal(not stopped, collectgarbage("isrunning"))
            collectgarbage("restart")
        end
        t:close()
        h:stop()
    end)

    -- The collector takes up its own pacing after a held wait: nothing is
    -- collected at once when it owed nothing before (a restart would run a
    -- collection at the first allocation after every wait: in Lua 5.4's
    -- generational mode a major one over everything live), and garbage is
    -- still collected as the program goes on.
    it("keeps the collector's pacing across held waits", function()
        local rows = {}
        for i = 1, 300 do
            rows[i] = string.format('{"id":"%d","name":"agent %d"}', i, i % 7)
        end
        local h = hostile.start { default = hostile.json(200, '{"data":[' .. table.concat(rows, ",") .. ']}') }
        local t, url = transport(h.url)
        local modes = _VERSION == "Lua 5.4" and { "generational", "incremental" } or { false }
        for _, mode in ipairs(modes) do
            local was = mode and collectgarbage(mode)
            local pause = collectgarbage("setpause", 200) -- (the sanitizer run sets 0)
            collectgarbage()
            collectgarbage()
            local collected = false
            local proxy = rawget(_G, "newproxy") -- (LuaJIT finalizes userdata only)
            if proxy then
                getmetatable(proxy(true)).__gc = function() collected = true end
            else
                setmetatable({}, { __gc = function() collected = true end })
            end
            t:start { url = url }
            local id, res = t:wait()
            assert.is_number(id)
            assert.equal(300, #res.value.data)
            res = nil -- luacheck: ignore 311
            local keep = {}
            for i = 1, 20 do
                keep[i] = { i }
            end
            assert.equal(20, #keep)
            if mode then
                assert.is_false(collected, mode)
            end
            -- Garbage made after the waits (and the answers' rows) is
            -- collected as allocation goes on.
            for _ = 1, 20 do
                t:start { url = url }
                assert.is_number((t:wait()))
            end
            for i = 1, 200000 do
                keep[i % 100 + 1] = { i }
            end
            assert.equal(100, #keep)
            assert.is_true(collected, mode or "")
            collectgarbage("setpause", pause)
            if was then
                collectgarbage(was)
            end
        end
        t:close()
        h:stop()
    end)

    it("gives it back when the wait is cut short (an interrupt)", function()
        local h = hostile.start { default = hostile.hold(3, hostile.json(200, '{"data":[]}')) }
        local t, url = transport(h.url)
        t:start { url = url }
        -- What Ctrl-C does in the interpreter: a hook that raises in the
        -- next Lua code run (here once the wait has run its first slices).
        local fired, t0 = false, require("wolkvox.core").now()
        if jit then
            jit.off() -- (a hook does not run inside a compiled loop)
            jit.flush()
        end
        debug.sethook(function()
            if not fired and require("wolkvox.core").now() - t0 > 0.3 then
                fired = true
                error("interrupted!")
            end
        end, "", 100)
        local ok, err = pcall(t.wait, t)
        debug.sethook()
        if jit then
            jit.on()
        end
        assert.is_false(ok)
        assert.matches("interrupted!", tostring(err))
        assert.is_true(fired)
        assert.is_true(collectgarbage("isrunning"))
        t:close()
        h:stop()
    end)
end)
