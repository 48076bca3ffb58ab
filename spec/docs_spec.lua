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
        assert.equal(read("lua/wolkvox/api/endpoints.lua"), read(tmp))
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

describe("docs/development.md's 'Where to change what'", function()
    local text = read("docs/development.md")
    local section = text:match("\n## Where to change what\n(.-)\n## ") or text:match("\n## Where to change what\n(.*)$")

    it("is there", function()
        assert.is_truthy(section)
    end)

    it("names only paths that exist", function()
        local missing, seen = {}, 0
        for path in section:gmatch("`([%w_%-%./]+)`") do
            -- A path: a folder or a file of the tree (module names have no slash).
            if path:find("/", 1, true) and not path:find("^wolkvox") then
                seen = seen + 1
                local f = io.open(path, "rb")
                if f then
                    f:close()
                else
                    missing[#missing + 1] = path
                end
            end
        end
        assert.is_true(seen > 40, "paths seen: " .. seen)
        assert.same({}, missing)
    end)

    it("names every folder of lua/wolkvox/", function()
        local p = io.popen("find lua/wolkvox -mindepth 1 -maxdepth 1 -type d | sort")
        for dir in p:lines() do
            assert.is_truthy(section:find("`" .. dir .. "/`", 1, true), dir .. " is not named")
        end
        p:close()
    end)
end)
