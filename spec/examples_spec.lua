-- The examples run as the README says, against the bundled fake server.
local support = require "support"

local function run(script, args)
    local code = string.format("arg = { %s }; dofile(%q)", args or "", script)
    local p = assert(io.popen(support.lua_command(code) .. " 2>/dev/null", "r"))
    local out = p:read("*a")
    local ok = p:close()
    return out, ok
end

describe("examples", function()
    it("seed_report.lua prints the five seed reads", function()
        local out = run("examples/seed_report.lua")
        assert.matches("Services %(1 rows%)", out)
        assert.matches("Routing points %(4 rows%)", out)
        assert.matches("Billing: screen recording %(1 rows%)", out)
        assert.matches("Billing: chat licences %(2 rows%)", out)
        assert.matches("Billing: interactions %(1 rows%)", out)
        assert.matches("5 calls spent", out)
    end)

    it("cdr_to_csv.lua writes a header and one line per row", function()
        local out = run("examples/cdr_to_csv.lua", '"2026-01-01", "2026-01-10"')
        local lines = {}
        for line in out:gmatch("[^\n]+") do
            lines[#lines + 1] = line
        end
        assert.equal(1001, #lines)
        assert.matches("^agent_name,date,", lines[1])
        assert.matches("2026%-01%-10 23:45:36", lines[#lines])
    end)
end)
