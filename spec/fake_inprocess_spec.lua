-- The in-process transport (wolkvox.transport.fake): a user's client on the
-- fake's answers without a socket, through the public API.
local wolkvox = require "wolkvox"
local fake = require "wolkvox.transport.fake"
local support = require "support"

local function client(extra)
    local opts = { transport = "fake", server = "0031", token = "test-token", state_dir = false,
        retries = 0 }
    for k, v in pairs(extra or {}) do
        opts[k] = v
    end
    return wolkvox.new(opts)
end

describe("the in-process fake transport", function()
    it("is chosen by transport = \"fake\" and answers the seed endpoints", function()
        local c = client()
        local rows = assert(c:routing_points())
        assert.equal(4, #rows)
        assert.equal("IVR Principal", rows[1].rp_name)
        local svc = assert(c:services())
        assert.equal("25", svc[1].licenses)
        c:close()
    end)

    it("takes the fake's settings: tokens, rows per day, the row cap", function()
        local c = client { fake = { tokens = { "other" } } }
        local rows, err = c:routing_points()
        assert.is_nil(rows)
        assert.equal("auth", err.kind)
        c:close()
        c = client { fake = { rows_per_day = 24 } }
        local n = 0
        for _ in c:each("cdr_1", { from = "2026-01-01", to = "2026-01-03 23:59:59" }) do
            n = n + 1
        end
        assert.equal(72, n)
        c:close()
    end)

    it("shares a server between clients, which a test steers and reads", function()
        local srv = fake.server()
        local c = client { fake = srv }
        srv:control("faults", { faults = { { match = "services", forbidden = "quota" } } })
        local rows, err = c:services()
        assert.is_nil(rows)
        assert.equal("quota", err.kind)
        assert.truthy(c:services())
        local log = srv:log()
        assert.equal(2, #log)
        assert.equal("<redacted>", log[1].headers["wolkvox-token"])
        c:close()
    end)

    it("serves a fault's delay with the clock, and a delay past the timeout is a timeout", function()
        local srv = fake.server { faults = { { match = "services", delay = 0.2 },
            { match = "routing_points", delay = 5 } } }
        local c = client { fake = srv, timeout = 0.5 }
        local t0 = fake.clock.now()
        assert.truthy(c:services())
        assert.is_true(fake.clock.now() - t0 >= 0.2)
        local rows, err = c:routing_points()
        assert.is_nil(rows)
        assert.equal("transport", err.kind)
        assert.equal("timeout", err.reason)
        c:close()
    end)

    it("passes the transport contract without the C core (lua-cjson decodes, the token masked)", function()
        local code = [[
            package.preload["wolkvox.core"] = function() error("no C core here") end
            local contract = require "contract"
            local fake = require "wolkvox.transport.fake"
            assert(fake.decoder == "cjson")
            local server = fake.server { url = "http://fake.invalid", faults = contract.FAULTS }
            local mod = setmetatable({ new = function(opts, token)
                opts.fake = server
                return fake.new(opts, token)
            end }, { __index = fake })
            local failed = {}
            for _, r in ipairs(contract.run(mod, "http://fake.invalid", "test-token")) do
                if not r.ok then failed[#failed + 1] = r.name .. ": " .. r.err end
            end
            io.write(#failed == 0 and "ok" or table.concat(failed, "\n"))
        ]]
        -- LuaJIT: without the C core, the token's fingerprint comes from
        -- wolkvox.sha256, which needs its bit library.
        local p = io.popen("exec env -u LD_PRELOAD luajit -e 'package.path = \"lua/?.lua;lua/?/init.lua;spec/?.lua;\""
            .. " .. package.path' -e '" .. code:gsub("'", "'\\''") .. "'")
        local out = p:read("*a")
        p:close()
        assert.equal("ok", out)
    end)

    it("opens no socket", function()
        -- A child process without LuaSocket's C part: the fake transport still runs.
        local code = [[
            package.preload["socket.core"] = function() error("no sockets here") end
            local ok, err = pcall(function()
                local c = require("wolkvox").new { transport = "fake", server = "0031",
                    token = "test-token", state_dir = false }
                assert(#assert(c:routing_points()) == 4)
            end)
            io.write(ok and "ok" or tostring(err))
        ]]
        local p = io.popen(support.lua_command(code))
        local out = p:read("*a")
        p:close()
        assert.equal("ok", out)
    end)
end)

describe("the in-process fake transport's server", function()
    it("keeps the slot of a call given up on until its answer would have been ready", function()
        local srv = fake.server { faults = { { match = "services", delay = 0.6 } } }
        local a = fake.new({ fake = srv, timeout = 5 }, "test-token")
        local b = fake.new({ fake = srv, timeout = 5 }, "test-token")
        local url = "http://fake.invalid/api/v2/information.php?api="
        a:start { url = url .. "services" }
        assert.equal(1, (a:cancel()))
        b:start { url = url .. "routing_points" }
        b:start { url = url .. "routing_points" }
        local statuses = {}
        for _ = 1, 2 do
            local _, res = b:wait()
            statuses[#statuses + 1] = res.status
        end
        table.sort(statuses)
        assert.same({ 200, 403 }, statuses) -- the abandoned call still holds one of the 2 slots
        fake.clock.sleep(0.7)
        b:start { url = url .. "routing_points" }
        b:start { url = url .. "routing_points" }
        local _, r1 = b:wait()
        local _, r2 = b:wait()
        assert.same({ 200, 200 }, { r1.status, r2.status })
        a:close()
        b:close()
    end)
end)
