-- docs/fake.md is the fake's interface: it names every setting, every
-- fault field and every control endpoint the fake has.
local api = require "wolkvox.fake.api"

local read = require("support").read

describe("docs/fake.md", function()
    local doc = read("docs/fake.md")

    it("names every setting", function()
        for k in pairs(api.DEFAULTS) do
            assert.truthy(doc:find("| `" .. k .. "` |", 1, true), "setting " .. k)
        end
        for k in pairs(api.SCENARIO_KEYS) do
            assert.truthy(doc:find("`" .. k .. "`", 1, true), "scenario key " .. k)
        end
    end)

    it("names every fault field", function()
        for _, k in ipairs(api.FAULT_FIELDS) do
            assert.truthy(doc:find("`" .. k .. "`", 1, true), "fault field " .. k)
        end
    end)

    it("names every control endpoint, and each one answers", function()
        local fake = require "wolkvox.transport.fake"
        local srv = fake.server()
        for _, name in ipairs(api.CONTROL) do
            assert.truthy(doc:find("/__fake/" .. name .. "`", 1, true), "control endpoint " .. name)
            assert.is_table(srv:control(name, {}), name)
        end
        assert.has_error(function() srv:control("nope", {}) end)
    end)
end)
