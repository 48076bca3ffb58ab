-- Every install line of the docs (README.md, docs/*.md), as written, from a clone: each one runs
-- in a copy of the committed tree (a directory not named lua-wolkvox, so
-- luarocks cannot guess the rockspec from it) into temporary directories,
-- and the `wolkvox` it installs then runs under cron's environment (env -i,
-- PATH=/usr/bin:/bin, no LUA_PATH) against the fake.  What stands in for the
-- machine: `sudo` is dropped (the spec's own user installs); the system tree
-- of LuaRocks is a temporary one (LUAROCKS_CONFIG names it); `make install`
-- without PREFIX gets DESTDIR; HOME is a temporary directory.  The lines of
-- this interpreter only (--lua-version=5.4 under Lua 5.4; 5.1 and
-- LUA=luajit under LuaJIT).  Tagged #packaging (the ASan run leaves it out).
local support = require "support"

local LUAVER = jit and "5.1" or "5.4"

-- `s` quoted for sh; `cmd` run by sh: its exit status and output (stdout
-- and stderr together).
local q, run = support.q, support.sh

-- The shell lines of the fenced code blocks of `text`, continuations joined,
-- comments dropped.
local function shell_lines(text)
    local lines, block, pending = {}, false, nil
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        if line:match("^%s*```") then
            block = not block
            pending = nil
        elseif block then
            line = (pending and pending .. " " or "") .. line:gsub("^%s+", "")
            if line:match("\\%s*$") then
                pending = line:gsub("%s*\\%s*$", "")
            else
                pending = nil
                line = line:gsub("%s+#.*$", ""):gsub("%s+$", "")
                lines[#lines + 1] = line
            end
        end
    end
    return lines
end

-- The README's install lines for this interpreter: luarocks make (system tree
-- or --tree) and make install.  (The release's `luarocks install ...src.rock`
-- needs `make rock` first: spec/rockspec_spec.lua runs that.)
local function install_lines(text)
    local found, seen = {}, {}
    for _, line in ipairs(shell_lines(text)) do
        local cmd = line:gsub("^sudo%s+", "")
        local version = cmd:match("^luarocks%s.*%-%-lua%-version[= ](%d%.%d)%s.*%f[%w]make%f[%W]")
        local make = cmd:match("^make%s+install%f[%W]") or cmd:match("^make%s.*%sinstall%f[%W]")
        if not seen[line] and ((version and version == LUAVER)
            or (make and (cmd:find("LUA=luajit", 1, true) ~= nil) == (jit ~= nil))) then
            seen[line] = true
            found[#found + 1] = line
        end
    end
    return found
end

describe("the README's install lines #packaging", function()
    local srv, work, lines
    -- README.md and docs/*.md ($WOLKVOX_DOCS: other files, a draft).
    local readme = {}
    local names = os.getenv("WOLKVOX_DOCS") or io.popen("ls README.md docs/*.md 2>/dev/null"):read("*a")
    for path in names:gmatch("%S+") do
        readme[#readme + 1] = support.read(path)
    end
    readme = table.concat(readme, "\n")

    setup(function()
        srv = support.fake { rows_per_day = 2 }
        work = support.tmpdir()
        lines = install_lines(readme)
    end)
    teardown(function()
        srv:stop()
        run("rm -rf " .. q(work))
    end)

    it("are there: into the system tree, into --tree DIR, and make install", function()
        local kinds = {}
        for _, line in ipairs(lines) do
            local cmd = line:gsub("^sudo%s+", "")
            kinds[cmd:find("%-%-tree") and "tree" or cmd:match("^make%s") and "make" or "system"] = true
        end
        assert.is_true(kinds.system and (jit ~= nil or (kinds.tree and kinds.make)) or false, table.concat(lines, "\n"))
    end)

    it("each install wolkvox, which runs with cron's environment from where it was installed", function()
        assert.is_true(#lines > 0)
        for i, line in ipairs(lines) do
            local dir = work .. "/" .. i
            local clone, home, sys, dest = dir .. "/clone", dir .. "/home", dir .. "/sys", dir .. "/dest"
            local code, out = run(string.format("mkdir -p %s %s %s %s && git archive HEAD | tar -x -C %s",
                q(clone), q(home), q(sys), q(dest), q(clone)))
            assert(code == 0, out)
            -- The system tree of LuaRocks, moved.
            local config = dir .. "/luarocks-config.lua"
            local f = assert(io.open(config, "w"))
            f:write(string.format("rocks_trees = { { name = \"system\", root = %q } }\n", sys))
            f:close()
            local cmd = line:gsub("^sudo%s+", "")
            if cmd:match("^make%s") and not cmd:find("PREFIX=", 1, true) then
                cmd = cmd .. " DESTDIR=" .. q(dest)
            end
            code, out = run(string.format("cd %s && env -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 "
                .. "-u LUA_CPATH_5_4 HOME=%s LUAROCKS_CONFIG=%s sh -c %s", q(clone), q(home), q(config), q(cmd)))
            assert(code == 0, line .. "\n" .. out)
            local _, found = run(string.format("find %s %s %s -path '*/bin/wolkvox' -not -path '*/lib/luarocks/*'",
                q(home), q(sys), q(dest)))
            local bins = {}
            for b in found:gmatch("[^\n]+") do
                bins[#bins + 1] = b
            end
            assert(#bins == 1, line .. ": installed " .. #bins .. " wolkvox: " .. found)
            -- cron's environment: no LUA_PATH, PATH=/usr/bin:/bin.
            local cron = string.format("cd / && env -i HOME=%s LOGNAME=nobody PATH=/usr/bin:/bin SHELL=/bin/sh ",
                q(home))
            code, out = run(cron .. q(bins[1]) .. " endpoints | head -n 3")
            assert(code == 0 and out:find("reports_manager", 1, true), line .. "\n" .. out)
            code, out = run(cron .. "WOLKVOX_TOKEN=" .. q(srv.token) .. " " .. q(bins[1]) .. " --base-url " .. srv.url
                .. " --state-dir " .. q(home .. "/state") .. " report cdr_1 --from 2026-01-01 --to 2026-01-02")
            assert.equal(0, code, line .. "\n" .. out)
            assert.matches("^agent_name,date,", out)
            run("rm -rf " .. q(dir))
        end
    end)
end)
