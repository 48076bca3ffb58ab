-- No C state shared between lua_States or threads: a host program embeds Lua
-- twice (spec/c/states.c) and runs requests in each, then in two threads.
local support = require "support"

describe("wolkvox.core in several lua_States", function()
    it("serves two states in one thread and two threads at once", function()
        local flavour = jit and "luajit" or "5.4"
        local host = "build/" .. flavour .. "/states"
        local f = io.open(host, "rb")
        assert.is_not_nil(f, host .. " is missing: run `make spec-tools`")
        f:close()
        local srv = support.fake { tokens = { "state-one", "state-two" } }
        local cmd = string.format("%s 'build/%s/?.so' '%s/api/v2/information.php?api=services' %s 2>&1",
            host, flavour, srv.url, "state-one state-two")
        local p = assert(io.popen(cmd, "r"))
        local out = p:read("*a")
        local ok = p:close()
        srv:stop()
        assert.is_truthy(ok, out)
        assert.matches("ok %- thread 1", out)
        assert.matches("ok %- thread 2", out)
        assert.matches("ok %- two lua_States in one thread", out)
        assert.is_nil(out:find("not ok", 1, true), out)
    end)
end)
