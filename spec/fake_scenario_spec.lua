-- Scenarios: one JSON file seeds the fake (tokens, licences, rows per day,
-- disabled endpoints, a fault script), loaded at start (spawn, the command
-- line, the in-process transport) or through POST /__fake/scenario; a
-- user's script runs against it as it would against wolkvox.
local cjson = require "cjson"
local wolkvox = require "wolkvox"
local support = require "support"

local SCENARIO = {
    name = "a small operation with a flaky cdr_1",
    tokens = { "ops-token-7f3a9c" },
    licenses = 2,
    rows_per_day = 48,
    disabled = { "reports_manager/chat_7" },
    faults = { { match = "cdr_1", call = 3, status = 502 } },
}

-- A JSON file of `t`.
local function write(t)
    local path = os.tmpname()
    support.spit(path, cjson.encode(t))
    return path
end

local function read(path)
    return support.slurp(path) or ""
end

-- The user's script: three days of cdr_1, day by day, then chat_7.
local function user_script(c)
    local out = {}
    for day = 1, 4 do
        local d = string.format("2026-01-%02d", day)
        local rows, err = c:cdr_1 { from = d, to = d .. " 23:59:59" }
        out[day] = rows and #rows or err.status
    end
    local _, err = c:chat_7 { from = "2026-01-01", to = "2026-01-01" }
    out.chat_7 = err and err.kind
    return out
end

describe("fake scenarios", function()
    local path
    setup(function() path = write(SCENARIO) end)
    teardown(function() os.remove(path) end)

    it("seed a spawned fake: tokens, licences, rows, disabled endpoints, the 3rd cdr_1 call answers 502", function()
        local srv = support.fake { scenario = path }
        finally(function() srv:stop() end)
        assert.equal("ops-token-7f3a9c", srv.token)
        -- The token never reaches the child's command line, nor the control answers.
        assert.falsy(read("/proc/" .. srv.pid .. "/cmdline"):find("ops-token", 1, true))
        local config = srv:control("config", {})
        assert.equal(1, config.token_count)
        assert.equal(2000, config.daily_limit)
        assert.falsy(cjson.encode(config):find("ops-token", 1, true))
        local c = support.client(srv, { retries = 0, state_dir = false })
        finally(function() c:close() end)
        assert.same({ 48, 48, 502, 48, chat_7 = "not_found" }, user_script(c))
        -- A reset starts the script again.
        srv:control("reset")
        local _, err = wolkvox.new { base_url = srv.url, token = "test-token", state_dir = false }:services()
        assert.equal("auth", err.kind)
        assert.same({ 48, 48, 502, 48, chat_7 = "not_found" }, user_script(c))
    end)

    it("load through POST /__fake/scenario, over the settings the server started with", function()
        local srv = support.fake { rows_per_day = 24 }
        finally(function() srv:stop() end)
        local c = support.client(srv, { retries = 0, state_dir = false })
        finally(function() c:close() end)
        assert.equal(24, #assert(c:cdr_1 { from = "2026-01-01", to = "2026-01-01 23:59:59" }))
        local config = srv:control("scenario", { disabled = { "cdr_1" }, licenses = 1 })
        assert.equal(1000, config.daily_limit)
        assert.equal(24, config.rows_per_day)
        local _, err = c:cdr_1 { from = "2026-01-01", to = "2026-01-01 23:59:59" }
        assert.equal("not_found", err.kind)
        assert.has_error(function() srv:control("scenario", { colour = "red" }) end)
    end)

    it("seed the in-process transport", function()
        local c = wolkvox.new { transport = "fake", fake = { scenario = path }, server = "0031",
            token = "ops-token-7f3a9c", state_dir = false, retries = 0 }
        finally(function() c:close() end)
        assert.same({ 48, 48, 502, 48, chat_7 = "not_found" }, user_script(c))
        local bad = write({ tokens = "not a list" })
        finally(function() os.remove(bad) end)
        assert.has_error(function()
            wolkvox.new { transport = "fake", fake = { scenario = bad }, server = "0031", token = "x",
                state_dir = false }
        end)
    end)

    it("load from the command line: wolkvox-fake --scenario FILE", function()
        local p = io.popen("exec env -u LD_PRELOAD lua5.4 bin/wolkvox-fake --port 0 --lifetime 20 --scenario "
            .. path .. " 2>&1")
        local line = p:read("*l")
        local url = line:match("listening on (http://%S+)")
        assert.truthy(url, line)
        assert.matches("1 token%(s%) given", line)
        local c = wolkvox.new { base_url = url, token = "ops-token-7f3a9c", state_dir = false, retries = 0 }
        local ok, res = pcall(user_script, c)
        c:close()
        require("socket.http").request(url .. "/__fake/shutdown", "{}")
        p:close()
        assert(ok, res)
        assert.same({ 48, 48, 502, 48, chat_7 = "not_found" }, res)
        local q = io.popen("env -u LD_PRELOAD lua5.4 bin/wolkvox-fake --scenario /nonexistent 2>&1; echo \"rc=$?\"")
        local out = q:read("*a")
        q:close()
        assert.matches("cannot read the scenario", out)
        assert.matches("rc=2", out)
    end)
end)
