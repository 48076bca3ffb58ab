-- Generated files stay true to their sources, and regenerating them is safe.
local function run(cmd)
    local p = io.popen("env -u LD_PRELOAD " .. cmd .. " 2>&1; echo status=$?")
    local out = p:read("*a")
    p:close()
    return out, tonumber(out:match("status=(%d+)%s*$"))
end

local read = require("support").read

describe("generated files", function()
    it("docs/endpoints.md is the registry's table", function()
        local out, status = run("lua5.4 tools/gen-docs.lua --check")
        assert.equal(0, status, out)
        assert.matches("| `c:cdr_1` | GET | detail |", read("docs/endpoints.md"), 1, true)
    end)

    it("the registry is what the generator makes from the project's own catalog", function()
        local tmp = os.tmpname()
        local out, status = run("lua5.4 tools/gen-endpoints.lua -o " .. tmp)
        assert.equal(0, status, out)
        assert.equal(read("lua/wolkvox/endpoints.lua"), read(tmp))
        os.remove(tmp)
    end)

    it("a failed regeneration leaves the registry as it was", function()
        local tmp = os.tmpname()
        local f = assert(io.open(tmp, "wb"))
        f:write("return 'the registry before'\n")
        f:close()
        local out, status = run("lua5.4 tools/gen-endpoints.lua -o " .. tmp .. " /nonexistent/catalog.json")
        assert.not_equal(0, status, out)
        assert.equal("return 'the registry before'\n", read(tmp))
        os.remove(tmp)
    end)
end)
