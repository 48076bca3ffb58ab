-- Hooks and the logger see every step, and never the token.
local support = require "support"

describe("hooks and logging", function()
    local srv
    local SECRET = "hooks-spec-secret-token-5b1f9e"

    setup(function() srv = support.fake { tokens = { SECRET } } end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    local function no_token_in(v, where)
        for _, s in ipairs(support.strings(v)) do
            assert.is_nil(s:find(SECRET, 1, true), "token in " .. where .. ": " .. s)
        end
    end

    it("calls each hook with a table that holds no token", function()
        local seen, lines = {}, {}
        local opts = { token = SECRET, state_dir = support.tmpdir(), retry_base = 0.001, daily_limit = 4,
            logger = function(level, line) lines[#lines + 1] = level .. " " .. line end }
        for _, name in ipairs { "on_request", "on_response", "on_retry", "on_throttle", "on_quota" } do
            opts[name] = function(info)
                seen[name] = seen[name] or {}
                table.insert(seen[name], info)
                no_token_in(info, name)
            end
        end
        local x = support.client(srv, opts)
        support.faults(srv, { { status = 500 } })
        assert(x:services())                             -- request, response, retry
        assert(x:services { max_concurrent = 1 })
        local _, err = x:cdr_1 { from = "2026-01-01", to = "2026-03-31" }   -- refused by the ledger
        assert.equal("quota", err.kind)
        assert.equal(3, #seen.on_request)
        assert.equal(3, #seen.on_response)
        assert.equal(1, #seen.on_retry)
        assert.equal(1, #seen.on_quota)
        local r = seen.on_request[1]
        assert.equal("information/services", r.endpoint)
        assert.equal("GET", r.method)
        assert.matches("^http://127%.0%.0%.1:%d+/api/v2/information%.php%?api=services$", r.url)
        assert.equal(1, r.attempt)
        assert.equal(500, seen.on_response[1].status)
        assert.equal("http", seen.on_response[1].error.kind)
        assert.is_number(seen.on_retry[1].wait)
        assert.is_true(#lines >= 7)
        for _, line in ipairs(lines) do
            assert.is_nil(line:find(SECRET, 1, true), line)
        end
        x:close()
    end)

    it("tells on_throttle when a call waits for a slot", function()
        local throttled = {}
        local dir = support.tmpdir()
        local x = support.client(srv, { token = SECRET, state_dir = dir,
            on_throttle = function(info) throttled[#throttled + 1] = info end })
        -- Another holder takes both of the token's slots for a moment.
        local core = require "wolkvox.core"
        local ids = {}
        for name in io.popen("env -u LD_PRELOAD ls " .. dir .. "/tokens"):lines() do
            ids[#ids + 1] = name
        end
        assert.equal(1, #ids)
        local slot_dir = dir .. "/tokens/" .. ids[1]
        local a, b = core.lock(slot_dir .. "/slot1"), core.lock(slot_dir .. "/slot2")
        -- Free them from the hook: the call is waiting on them then.
        x._ctx.hooks.on_throttle = function(info)
            throttled[#throttled + 1] = info
            a:release()
            b:release()
        end
        assert.is_table(x:services())
        assert.equal(1, #throttled)
        assert.equal("a free slot of the token", throttled[1].reason)
        x:close()
        assert.is_nil(ids[1]:find(SECRET, 1, true))
    end)

    it("logs a hook that raises and goes on with the call", function()
        local lines = {}
        local x = support.client(srv, { token = SECRET,
            on_request = function() error("hook bug") end,
            logger = function(level, line) lines[#lines + 1] = level .. " " .. line end })
        local rows = assert(x:services())
        assert.equal(1, #rows)
        local found = false
        for _, l in ipairs(lines) do
            if l:find("hook on_request failed", 1, true) then
                found = true
            end
        end
        assert.is_true(found)
        x:close()
    end)

    it("lets Ctrl-C through a hook or a logger: the call stops, nothing is logged as failed", function()
        -- (The standalone interpreter's SIGINT hook raises "interrupted!" at
        -- the next call: inside a hook or a logger, the progress line's for
        -- one.  Taken for a failed hook, the Ctrl-C was lost.)
        for _, where in ipairs { "on_request", "on_progress", "logger" } do
            srv:control("reset")
            local lines = {}
            local opts = { token = SECRET, logger = function(level, line) lines[#lines + 1] = level .. " " .. line end }
            if where == "logger" then
                opts.logger = function() error("interrupted!") end
            else
                opts[where] = function() error("interrupted!") end
            end
            local x = support.client(srv, opts)
            local ok, err = pcall(x.cdr_1, x, { from = "2026-01-01", to = "2026-02-28" })
            x:close()
            assert.is_false(ok, where)
            assert.matches("interrupted!", tostring(err), 1, true)
            assert.is_string(err, where)   -- as it was raised, not made a wolkvox error
            for _, l in ipairs(lines) do
                assert.is_nil(l:find("failed", 1, true), l)
            end
            -- The progress hook comes after the first window: one call at most was spent then.
            assert.is_true(srv:control("stats").requests <= (where == "on_progress" and 2 or 1), where)
        end
    end)

    it("writes log lines to stderr when logger = \"stderr\"", function()
        local code = string.format([[
            local c = assert(require("wolkvox").new { base_url = %q, token = %q, logger = "stderr",
                state_dir = false })
            assert(c:services())
        ]], srv.url, SECRET)
        local p = io.popen(support.lua_command(code) .. " 2>&1 >/dev/null")
        local err = p:read("*a")
        p:close()
        assert.matches("wolkvox %[debug%] GET information/services attempt 1", err)
        assert.is_nil(err:find(SECRET, 1, true))
    end)
end)
