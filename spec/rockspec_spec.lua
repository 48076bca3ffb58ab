-- The rockspec installs a working module, and lists every Lua file of the tree.
local support = require "support"

local function run(cmd)
    local p = assert(io.popen(cmd .. " 2>&1", "r"))
    local out = p:read("*a")
    local ok = p:close()
    return ok, out
end

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

-- Tagged #packaging: the ASan run leaves it out, since its LD_PRELOAD would
-- reach luarocks, the compiler and the shell tools this spec starts.
describe("the rockspec #packaging", function()
    local rockspec = "lua-wolkvox-scm-1.rockspec"

    it("names every Lua module of lua/ and every C source of src/", function()
        local text = read(rockspec)
        local ok, files = run("find lua -name '*.lua' | sort")
        assert.is_truthy(ok)
        for path in files:gmatch("[^\n]+") do
            local module = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
            local entry = string.format('["%s"] = "%s"', module, path)
            assert.is_truthy(text:find(entry, 1, true), "rockspec lacks " .. entry)
        end
        local _, sources = run("ls src/*.c")
        for path in sources:gmatch("[^\n]+") do
            assert.is_truthy(text:find('"' .. path .. '"', 1, true), "rockspec lacks " .. path)
        end
    end)

    it("installs with luarocks make, and the installed module talks to the fake", function()
        local ok, out = run("command -v luarocks")
        if not ok then
            error("luarocks is not installed: " .. out)
        end
        local luaver = jit and "5.1" or "5.4"
        local interp = jit and "luajit" or "lua5.4"
        local _, tree = run("mktemp -d")
        tree = tree:gsub("%s+$", "")
        local extra = jit and " LUA_INCDIR=/usr/include/luajit-2.1" or ""
        -- Build in a copy: luarocks make leaves its objects in the source tree.
        local _, src = run("mktemp -d")
        src = src:gsub("%s+$", "")
        assert(run("cp -r " .. rockspec .. " src lua bin examples " .. src))
        ok, out = run(string.format("cd %s && luarocks --lua-version=%s make --deps-mode=none --tree=%s %s%s",
            src, luaver, tree, rockspec, extra))
        run("rm -rf " .. src)
        assert.is_truthy(ok and out:find("is now installed", 1, true), out)
        local srv = support.fake()
        -- Only the rock tree and the system's own paths: not the source tree.
        local env = string.format("env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
            .. "LUA_PATH='%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua;;' LUA_CPATH='%s/lib/lua/%s/?.so;;' ",
            tree, luaver, tree, luaver, tree, luaver)
        if not jit then
            env = env:gsub("LUA_PATH=", "LUA_PATH_5_4="):gsub("LUA_CPATH=", "LUA_CPATH_5_4=")
        end
        local code = string.format([[print(require"wolkvox".new{base_url="%s", token="%s"}:services()[1].licenses)]],
            srv.url, srv.token)
        local _, answer = run(env .. interp .. " -e '" .. code .. "'")
        srv:stop()
        run("rm -rf " .. tree)
        assert.equal("25\n", answer)
    end)
end)
