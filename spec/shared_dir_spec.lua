-- Outputs in a directory others can write to (issue #20): a sticky,
-- world-writable directory like /tmp, a victim (uid nobody) exporting there
-- and another local user (uid daemon) planting files first.  Nothing the
-- other user planted is ever written through or into: a link at FILE.part,
-- a world-writable FILE.part or FILE, a FIFO under the final name.  Needs
-- root to act as both users (setpriv); pending otherwise.
local support = require "support"
local core = require "wolkvox.core"

local VICTIM, MALLORY = 65534, 1 -- nobody, daemon

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local sh = support.sh

-- `cmd` run as `uid` (its own group, no others).
local function as(uid, cmd)
    return sh("setpriv --reuid=" .. uid .. " --regid=" .. uid .. " --clear-groups -- sh -c " .. q(cmd))
end

local function size(path)
    local st = core.stat(path)
    return st and st.size
end

describe("an output in a shared sticky directory", function()
    local srv, shared, code_dir, token_file
    local _, id = sh("id -u")
    local usable = id:match("^0%s*$") ~= nil and sh("command -v setpriv >/dev/null") == 0

    setup(function()
        if not usable then
            return
        end
        srv = support.fake()
        -- The victim's copy of the code (the checkout may sit where nobody
        -- cannot read), and its token, readable by it alone.
        -- Directly under /tmp: the suite's own TMPDIR may be private to root.
        code_dir = select(2, sh("mktemp -d /tmp/wv-code.XXXXXX")):match("^(%S+)")
        local so = "build/5.4" -- the victim runs lua5.4 (every flavour builds it)
        assert(sh("cp -r lua " .. q(code_dir) .. "/ && mkdir -p " .. q(code_dir .. "/build/wolkvox")
            .. " && cp " .. q(so .. "/wolkvox/core.so") .. " " .. q(code_dir .. "/build/wolkvox/")
            .. " && chmod -R a+rX " .. q(code_dir)) == 0)
        local home = code_dir .. "/home"
        sh("mkdir -p " .. q(home) .. " && chown " .. VICTIM .. ":" .. VICTIM .. " " .. q(home) .. " && chmod 700 "
            .. q(home))
        token_file = home .. "/token"
        as(VICTIM, "printf '%s\\n' " .. q(srv.token) .. " > " .. q(token_file) .. " && chmod 600 " .. q(token_file))
        shared = select(2, sh("mktemp -d /tmp/wv-shared.XXXXXX")):match("^(%S+)")
        sh("chmod 1777 " .. q(shared) .. " && chmod 755 " .. q(code_dir))
    end)

    teardown(function()
        if srv then
            srv:stop()
            sh("rm -rf " .. q(shared) .. " " .. q(code_dir))
        end
    end)

    -- The victim exports January to `opts` (a Lua table text: output=...,
    -- checkpoint=...): "ok N" or "err KIND MESSAGE".
    local function victim_export(opts)
        local script = ([[
            package.path = %q .. "/lua/?.lua;" .. %q .. "/lua/?/init.lua;" .. package.path
            package.cpath = %q .. "/build/?.so;" .. package.cpath
            local c = assert(require("wolkvox").new { base_url = %q, token_file = %q, state_dir = false,
                spool_dir = false })
            local n, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-31" }, %s)
            io.write(n and ("ok " .. n) or ("err " .. err.kind .. " " .. tostring(err)), "\n")
        ]]):format(code_dir, code_dir, code_dir, srv.url, token_file, opts)
        local path = code_dir .. "/victim.lua"
        local f = assert(io.open(path, "wb"))
        f:write(script)
        f:close()
        sh("chmod a+r " .. q(path))
        -- (Bounded: a FIFO opened for writing waits for a reader forever.)
        local rc, out = as(VICTIM, "cd " .. q(code_dir) .. " && env -u LD_PRELOAD -u TMPDIR timeout 60 lua5.4 "
            .. q(path))
        assert.equal(0, rc, out)
        return out
    end

    it("never writes through a link another user planted at FILE.part", function()
        if not usable then
            pending("needs root and setpriv to act as two users")
            return
        end
        local precious = shared .. "/precious.txt"
        as(VICTIM, "printf 'mine\\n' > " .. q(precious))
        local out = shared .. "/a.csv"
        assert.equal(0, (as(MALLORY, "ln -s " .. q(precious) .. " " .. q(out .. ".part"))))
        local said = victim_export(("{ output = %q, checkpoint = %q }"):format(out, shared .. "/a.ckpt"))
        assert.equal("mine\n", support.slurp(precious))
        assert.matches("^err output .*cannot write .*a%.csv%.part: Operation not permitted", said)
        assert.is_nil(core.stat(out))
    end)

    it("never writes into a world-writable FILE.part or FILE another user made", function()
        if not usable then
            pending("needs root and setpriv to act as two users")
            return
        end
        local b, c = shared .. "/b.csv", shared .. "/c.csv"
        as(MALLORY, "touch " .. q(b .. ".part") .. " " .. q(c) .. " && chmod 666 " .. q(b .. ".part") .. " " .. q(c))
        victim_export(("{ output = %q, checkpoint = %q }"):format(b, shared .. "/b.ckpt"))
        assert.equal(0, size(b .. ".part"))
        local said = victim_export(("{ output = %q }"):format(c))
        assert.equal(0, size(c))
        assert.matches("^err output .*cannot write .*c%.csv: Operation not permitted", said)
    end)

    it("never hands rows to a FIFO another user put under the final name", function()
        if not usable then
            pending("needs root and setpriv to act as two users")
            return
        end
        local d = shared .. "/d.csv"
        assert.equal(0, (as(MALLORY, "mkfifo -m 666 " .. q(d))))
        local said = victim_export(("{ output = %q }"):format(d))
        assert.matches("^err output", said)
        assert.matches("belongs to uid 1", said, 1, true)
    end)

    it("resumes its own FILE.part, and writes where nobody planted anything", function()
        if not usable then
            pending("needs root and setpriv to act as two users")
            return
        end
        local e = shared .. "/e.csv"
        local said = victim_export(("{ output = %q, checkpoint = %q }"):format(e, shared .. "/e.ckpt"))
        assert.matches("^ok %d+", said)
        local st = core.stat(e)
        assert.equal(VICTIM, st.uid)
        -- Nobody else may write it (group and others' write bits, 020 and 02).
        assert.equal(0, math.floor(st.mode / 16) % 2)
        assert.equal(0, math.floor(st.mode / 2) % 2)
    end)
    it("writes a device of its own or root's where it is, where it may not create files (/dev/null)", function()
        if not usable then
            pending("needs root and setpriv to act as two users")
            return
        end
        local path = code_dir .. "/device.lua"
        support.spit(path, ([[
            package.path = %q .. "/lua/?.lua;" .. %q .. "/lua/?/init.lua;" .. package.path
            package.cpath = %q .. "/build/?.so;" .. package.cpath
            local file = require "wolkvox.out.file"
            assert(file.check("/dev/null", "the output"))
            local h = file.new("/dev/null")
            h.file:write("x")
            assert(h:commit())
            io.write("ok")
        ]]):format(code_dir, code_dir, code_dir))
        sh("chmod a+r " .. q(path))
        local rc, out = as(VICTIM, "cd " .. q(code_dir) .. " && env -u LD_PRELOAD -u TMPDIR timeout 60 lua5.4 "
            .. q(path))
        assert.equal(0, rc, out)
        assert.equal("ok", out)
    end)
end)
