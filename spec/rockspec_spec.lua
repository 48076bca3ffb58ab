-- The rockspecs: they list every Lua file of the tree and agree with each
-- other; the rock depends on Lua only, installs quietly, and works with
-- neither lua-cjson nor LuaSocket reachable; `make install` installs what the
-- rock installs; `make rock` packs the committed tree, tagged, as a source
-- rock that installs on a clean tree.
local support = require "support"

local LUAVER = jit and "5.1" or "5.4"
local INTERP = jit and "luajit" or "lua5.4"
local EXTRA = jit and " LUA_INCDIR=/usr/include/luajit-2.1" or ""

-- Run `cmd` through sh: true when it exited 0, and its output.  (The exit
-- status is read from the output: LuaJIT's p:close() does not report it.)
local function run(cmd)
    local p = assert(io.popen("{ " .. cmd .. "\n} 2>&1; echo \"exit=$?\"", "r"))
    local out = p:read("*a")
    p:close()
    local status = tonumber(out:match("exit=(%d+)%s*$"))
    return status == 0, (out:gsub("exit=%d+%s*$", ""))
end

local read = support.read

local function q(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function tmpdir()
    local ok, dir = run("mktemp -d")
    assert(ok, dir)
    return (dir:gsub("%s+$", ""))
end

-- The fields a rockspec sets (it is a chunk of Lua assignments).
local function rockspec_fields(path)
    local env = {}
    assert(load(read(path), "@" .. path, "t", env))()
    return env
end

-- The rockspecs of the tree: the development one (the only one at the top,
-- so that `luarocks make` takes it with no argument) and the release of
-- lua/wolkvox/version.lua (in rockspecs/).
local VERSION = dofile("lua/wolkvox/version.lua")
local ROCKSPECS = { "lua-wolkvox-scm-1.rockspec", "rockspecs/lua-wolkvox-" .. VERSION .. "-1.rockspec" }

-- Files under `dir`, relative, sorted.
local function files(dir)
    local ok, out = run("cd " .. q(dir) .. " && find . -type f")
    assert(ok, out)
    local list = {}
    for f in out:gmatch("[^\n]+") do
        list[#list + 1] = f:gsub("^%./", "")
    end
    table.sort(list)
    return list
end

-- The environment of a child that sees the modules in `lmod` and `cmod`
-- only: not the source tree, and not the system's Lua directories (so not
-- Debian's lua-cjson and LuaSocket either) unless `system` is true.
local function only(lmod, cmod, system)
    local tail = system and ";;" or ""
    local path = string.format("%s/?.lua;%s/?/init.lua%s", lmod, lmod, tail)
    local cpath = string.format("%s/?.so%s", cmod, tail)
    local sfx = jit and "" or "_5_4"
    return string.format("env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 LUA_PATH%s=%s LUA_CPATH%s=%s ",
        sfx, q(path), sfx, q(cpath))
end

-- What the installed module prints for the fake's services(), in a child
-- that can reach neither lua-cjson nor LuaSocket.
local function licenses(lmod, cmod, srv)
    local code = string.format([[
for _, m in ipairs { "cjson", "cjson.safe", "socket", "ltn12" } do
    assert(not pcall(require, m), m .. " is reachable")
end
assert(require("wolkvox.version") == %q, "version " .. require("wolkvox.version"))
print(require"wolkvox".new{base_url=%q, token=%q}:services()[1].licenses)]], VERSION, srv.url, srv.token)
    local _, answer = run(only(lmod, cmod) .. INTERP .. " -e " .. q(code))
    return answer
end

-- Tagged #packaging: the ASan run leaves it out, since its LD_PRELOAD would
-- reach luarocks, the compiler and the shell tools this spec starts.
describe("the rockspecs #packaging", function()
    it("name every Lua module of lua/ and every C source of src/", function()
        local ok, paths = run("find lua -name '*.lua' | sort")
        assert.is_truthy(ok, paths)
        local _, sources = run("ls src/*.c")
        for _, rockspec in ipairs(ROCKSPECS) do
            local text = read(rockspec)
            for path in paths:gmatch("[^\n]+") do
                local module = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
                local entry = string.format('["%s"] = "%s"', module, path)
                assert.is_truthy(text:find(entry, 1, true), rockspec .. " lacks " .. entry)
            end
            for path in sources:gmatch("[^\n]+") do
                assert.is_truthy(text:find('"' .. path .. '"', 1, true), rockspec .. " lacks " .. path)
            end
        end
    end)

    it("agree on everything but the version and the source; the release's source is its tag", function()
        local dev, rel = rockspec_fields(ROCKSPECS[1]), rockspec_fields(ROCKSPECS[2])
        assert.equal("scm-1", dev.version)
        assert.equal(VERSION .. "-1", rel.version)
        assert.same({ url = "git+https://github.com/lua-wolkvox/lua-wolkvox.git", tag = "v" .. VERSION }, rel.source)
        assert.equal(rel.source.url, dev.source.url)
        dev.version, dev.source, rel.version, rel.source = nil, nil, nil, nil
        assert.same(dev, rel)
    end)

    -- lua-cjson and LuaSocket are optional (README, Install): the rock must
    -- not name them, and the library outside the places that may use them
    -- must not require them.
    it("depend on Lua only, and the library requires lua-cjson and LuaSocket only where the README says", function()
        for _, rockspec in ipairs(ROCKSPECS) do
            assert.same({ "lua >= 5.1" }, rockspec_fields(rockspec).dependencies)
        end
        local may = {
            cjson = { "^lua/wolkvox/fake/", "^lua/wolkvox/transport/ngx[%w_]*%.lua$" },
            socket = { "^lua/wolkvox/fake/" },
            ltn12 = { "^lua/wolkvox/fake/" },
        }
        local _, paths = run("find lua bin -type f | sort")
        for path in paths:gmatch("[^\n]+") do
            local text = read(path)
            for name in text:gmatch("require%s*%(?%s*[\"']([%w_]+)[%.\"']") do
                local places = may[name]
                if places then
                    local allowed = false
                    for _, p in ipairs(places) do
                        allowed = allowed or path:find(p) ~= nil
                    end
                    assert.is_true(allowed, path .. " requires " .. name
                        .. ": list it in the rockspecs' dependencies or keep it out of the library")
                end
            end
        end
    end)

    it("luarocks make installs quietly a module that works without lua-cjson and LuaSocket; "
        .. "make install installs the same files and make uninstall removes them", function()
        local ok, out = run("command -v luarocks")
        assert(ok, "luarocks is not installed: " .. out)
        local tree, src, dest = tmpdir(), tmpdir(), tmpdir()
        finally(function()
            run("rm -rf " .. q(tree) .. " " .. q(src) .. " " .. q(dest))
        end)
        -- Build in a copy: luarocks make leaves its objects in the source tree.
        assert(run("cp -r Makefile " .. ROCKSPECS[1] .. " src lua bin examples man completion " .. src))
        ok, out = run(string.format("cd %s && luarocks --lua-version=%s make --deps-mode=none --tree=%s %s%s",
            src, LUAVER, tree, ROCKSPECS[1], EXTRA))
        assert.is_truthy(ok and out:find("is now installed", 1, true), out)
        assert.is_nil(out:find("Missing dependencies", 1, true), out)

        local srv = support.fake()
        local lmod, cmod = tree .. "/share/lua/" .. LUAVER, tree .. "/lib/lua/" .. LUAVER
        local answer = licenses(lmod, cmod, srv)
        srv:stop()
        assert.equal("25\n", answer)
        -- Its wolkvox-fake runs (with the system's LuaSocket and lua-cjson).
        ok, out = run(only(lmod, cmod, true) .. tree .. "/bin/wolkvox-fake --help")
        assert.is_truthy(ok and out:find("usage: wolkvox-fake", 1, true), out)

        -- make install, laid out as the rock tree, installs the same files
        -- (without the optional wolkvox.redis, wolkvox.xlsx and wolkvox.pg,
        -- which have rockspecs of their own).
        ok, out = run(string.format("cd %s && make -s install REDIS=no XLSX=no PG=no LUA=%s BUILD=%s/build "
            .. "DESTDIR=%s PREFIX=/p LUA_LMOD=/p/share/lua/%s LUA_CMOD=/p/lib/lua/%s DOCDIR=/p/doc",
            src, INTERP, src, dest, LUAVER, LUAVER))
        assert.is_truthy(ok, out)
        -- The man page and the completion, where man(1) and bash-completion look under the prefix.
        assert.equal(read("man/wolkvox.1"), read(dest .. "/p/share/man/man1/wolkvox.1"))
        assert.equal(read("completion/wolkvox.bash"), read(dest .. "/p/share/bash-completion/completions/wolkvox"))
        local rocks = "^lib/luarocks/rocks%-" .. LUAVER:gsub("%.", "%%.") .. "/lua%-wolkvox/scm%-1/"
        local from_rock, from_make = {}, {}
        for _, f in ipairs(files(tree)) do
            if f:find(rocks .. "examples/") then
                from_rock[#from_rock + 1] = f:gsub(rocks, "doc/")
            elseif f:find(rocks .. "man/wolkvox%.1$") then -- make install puts them where man and bash look
                from_rock[#from_rock + 1] = "share/man/man1/wolkvox.1"
            elseif f:find(rocks .. "completion/wolkvox%.bash$") then
                from_rock[#from_rock + 1] = "share/bash-completion/completions/wolkvox"
            elseif not f:find("^lib/luarocks/") then  -- luarocks' own records
                from_rock[#from_rock + 1] = f
            end
        end
        for _, f in ipairs(files(dest)) do
            from_make[#from_make + 1] = f:gsub("^p/", "")
        end
        table.sort(from_rock)
        table.sort(from_make)
        assert.same(from_rock, from_make)
        -- The installed script names the interpreter it was installed for.
        assert.equal("#!/usr/bin/env " .. INTERP .. "\n", read(dest .. "/p/bin/wolkvox-fake"):match("^[^\n]*\n"))
        ok, out = run(only(dest .. "/p/share/lua/" .. LUAVER, dest .. "/p/lib/lua/" .. LUAVER, true)
            .. dest .. "/p/bin/wolkvox-fake --help")
        assert.is_truthy(ok and out:find("usage: wolkvox-fake", 1, true), out)

        ok, out = run(string.format("cd %s && make -s uninstall REDIS=no LUA=%s BUILD=%s/build DESTDIR=%s PREFIX=/p "
            .. "LUA_LMOD=/p/share/lua/%s LUA_CMOD=/p/lib/lua/%s DOCDIR=/p/doc",
            src, INTERP, src, dest, LUAVER, LUAVER))
        assert.is_truthy(ok, out)
        assert.same({}, files(dest))
    end)

    -- The release as luarocks makes it from the public repository, offline:
    -- make rock clones this repository as committed, tags HEAD v<version> in
    -- that clone and sends luarocks' git clone of the rockspec's URL there.
    it("make rock packs the committed tree at its tag; the source rock installs quietly on a clean tree", function()
        local ok, root = run("git rev-parse --show-toplevel")
        assert(ok, root)
        root = root:gsub("%s+$", "")
        local out_dir, tree = tmpdir(), tmpdir()
        finally(function()
            run("rm -rf " .. q(out_dir) .. " " .. q(tree))
        end)
        local out
        ok, out = run("make -s -C " .. q(root) .. " rock ROCK_DIR=" .. q(out_dir))
        local rock = out:match("(%S+%.src%.rock)%s*$")
        assert.is_truthy(ok and rock, out)
        assert.equal(out_dir .. "/lua-wolkvox-" .. VERSION .. "-1.src.rock", rock)
        ok, out = run(string.format("cd %s && luarocks --lua-version=%s install --deps-mode=none --tree=%s %s%s",
            out_dir, LUAVER, tree, rock, EXTRA))
        assert.is_truthy(ok and out:find("lua-wolkvox " .. VERSION .. "-1 is now installed", 1, true), out)
        assert.is_nil(out:find("Missing dependencies", 1, true), out)
        local srv = support.fake()
        local answer = licenses(tree .. "/share/lua/" .. LUAVER, tree .. "/lib/lua/" .. LUAVER, srv)
        srv:stop()
        assert.equal("25\n", answer)
    end)
end)
