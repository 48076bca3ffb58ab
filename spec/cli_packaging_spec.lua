-- The installed command: `luarocks make` into a temporary tree, as a user
-- installs it, then `wolkvox` from that tree against the fake server.
-- Tagged #packaging (the ASan run leaves such specs out).
local support = require "support"

local LUAVER = jit and "5.1" or "5.4"
local EXTRA = jit and " LUA_INCDIR=/usr/include/luajit-2.1" or ""

-- `s` quoted for sh; `cmd` run by sh: its exit status and output (stdout
-- and stderr together).
local q, run = support.q, support.sh

describe("the installed wolkvox command #packaging", function()
    local srv, tree, src, state

    setup(function()
        srv = support.fake { rows_per_day = 4 }
        tree, src, state = support.tmpdir(), support.tmpdir(), support.tmpdir()
        local rockspec = "lua-wolkvox-scm-1.rockspec"
        -- The committed tree (what a user clones), not files being edited.
        local code, out = run("git archive HEAD Makefile " .. rockspec .. " src lua bin examples man completion "
            .. "| tar -x -C "
            .. q(src))
        assert(code == 0, out)
        code, out = run(string.format("cd %s && env -u LD_PRELOAD luarocks --lua-version=%s make --deps-mode=none "
            .. "--tree=%s %s%s", q(src), LUAVER, q(tree), rockspec, EXTRA))
        assert(code == 0, out)
    end)
    teardown(function()
        srv:stop()
        run("rm -rf " .. q(tree) .. " " .. q(src) .. " " .. q(state))
    end)

    -- The installed command, run outside the source tree with the tree's
    -- paths (what `luarocks path --tree` sets) and the token from the
    -- environment.
    local function wolkvox(argv, token)
        local sfx = jit and "" or "_5_4"
        local lmod, cmod = tree .. "/share/lua/" .. LUAVER, tree .. "/lib/lua/" .. LUAVER
        local paths = string.format("LUA_PATH%s=%s LUA_CPATH%s=%s", sfx,
            q(lmod .. "/?.lua;" .. lmod .. "/?/init.lua;;"), sfx, q(cmod .. "/?.so;;"))
        return run(string.format("cd %s && env -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 "
            .. "-u LUA_CPATH_5_4 -u WOLKVOX_CONFIG %s WOLKVOX_TOKEN=%s HOME=%s %s/bin/wolkvox --base-url %s "
            .. "--state-dir %s %s", q(state), paths, q(token or srv.token), q(state), q(tree), srv.url, q(state),
            argv))
    end

    it("is installed by the rock and exports a report", function()
        local code, out = wolkvox("report cdr_1 --from 2026-01-01 --to 2026-02-15 --format csv")
        assert.equal(0, code, out)
        local lines = select(2, out:gsub("\r\n", ""))
        assert.equal(1 + 46 * 4, lines)
        assert.matches("^agent_name,date,", out)
    end)

    it("lists endpoints, and exits 3 on a refused token", function()
        local code, out = wolkvox("endpoints information")
        assert.equal(0, code, out)
        assert.matches("information%s+services", out)
        code, out = wolkvox("call information services", "wrong-token")
        assert.equal(3, code)
        assert.matches("auth", out)
    end)
end)
