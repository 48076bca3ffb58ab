-- One version: lua/wolkvox/version.lua is the Lua side's only copy of it.
-- The C core (WV_VERSION in src/wolkvox.h, which cannot read that file), the
-- library's _VERSION, both transports' user agents, the release rockspec and
-- the top entry of CHANGELOG.md agree with it.
local version = require "wolkvox.version"

local read = require("support").read

describe("the version", function()
    it("is one MAJOR.MINOR.PATCH string, in wolkvox.version", function()
        assert.equal("string", type(version))
        assert.truthy(version:match("^%d+%.%d+%.%d+$"), version)
    end)

    it("is the C core's and the library's _VERSION", function()
        assert.equal("wolkvox.core " .. version, require("wolkvox.core")._VERSION)
        assert.equal("wolkvox " .. version, require("wolkvox")._VERSION)
    end)

    it("is in both transports' user agents, and no other file of lua/ or bin/ spells it out", function()
        local curl_ua = require("wolkvox.transport.curl").USER_AGENT
        assert.equal("lua-wolkvox/" .. version .. " ", curl_ua:sub(1, #version + 13))
        assert.equal("lua-wolkvox/" .. version .. " ngx_lua", require("wolkvox.transport.ngx").USER_AGENT)
        -- (without the sanitizer run's preload, which is for this process only)
        local p = assert(io.popen("env -u LD_PRELOAD find lua bin -type f | sort"))
        for path in p:lines() do
            if path ~= "lua/wolkvox/version.lua" then
                local text = read(path)
                local copy = text:match("wolkvox[ /]%d+%.%d+%.%d+")
                assert.is_nil(copy, path .. " spells out a version (" .. tostring(copy)
                    .. "): derive it from wolkvox.version")
            end
        end
        p:close()
    end)

    it("is the release rockspec's, whose source is the tag v<version>", function()
        local path = "rockspecs/lua-wolkvox-" .. version .. "-1.rockspec"
        local env = {}
        assert(load(read(path), "@" .. path, "t", env))()
        assert.equal("lua-wolkvox", env.package)
        assert.equal(version .. "-1", env.version)
        assert.equal("v" .. version, env.source.tag)
    end)

    it("heads CHANGELOG.md, with a date", function()
        local top, date
        for line in read("CHANGELOG.md"):gmatch("[^\n]+") do
            local v, rest = line:match("^## %[([^%]]+)%](.*)$")
            if v and v ~= "Unreleased" then
                top, date = v, rest:match("^ %- (%d%d%d%d%-%d%d%-%d%d)$")
                break
            end
        end
        assert.equal(version, top)
        assert.truthy(date, "the entry's heading is ## [" .. version .. "] - YYYY-MM-DD")
    end)
end)
