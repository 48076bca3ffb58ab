-- Local hand-offs (issues #19 and #20): a full disk under state_dir, token
-- and config files that are no regular files, options `call` does not know,
-- a deadline's message, and answers whose data cannot be written as rows.
-- Real parts only: the fake server, a hostile server over loopback, real
-- files, a real tmpfs (mounting needs root: those tests are pending without).
local core = require "wolkvox.core"
local wolkvox = require "wolkvox"
local support = require "support"
local hostile = require "hostile"

local INTERP = jit and "luajit" or "lua5.4"
local TOKEN = "local-hardening-token-0123456789"

-- A shell-quoted string.
local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local sh = support.sh

-- Bounds of every child process here: killed after this many seconds (exit
-- 137), and at most 1 GiB of address space, so a file that never ends can
-- neither hang the suite nor take the machine's memory.
local BOUND = "ulimit -v 1048576; exec timeout -s KILL 20 "

-- Run Lua `code` in a bounded child of this flavour: exit code, output.
local function child(code)
    return sh(BOUND .. support.lua_command(code):gsub("^exec ", ""))
end

-- Run `wolkvox <argv>` in a bounded child, with a clean environment plus
-- `env`: exit code, output (stdout and stderr).
local function cli(argv, env)
    local home = support.tmpdir()
    local vars = { "HOME=" .. q(home), "XDG_CONFIG_HOME=" .. q(home .. "/.config"),
        "XDG_CACHE_HOME=" .. q(home .. "/.cache") }
    for k, v in pairs(env or {}) do
        vars[#vars + 1] = k .. "=" .. q(v)
    end
    local code, out = sh(BOUND .. "env -u WOLKVOX_TOKEN -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE -u WOLKVOX_SERVER "
        .. table.concat(vars, " ") .. " " .. INTERP .. " bin/wolkvox " .. argv)
    os.execute("rm -rf " .. q(home))
    return code, out
end

local function lines(s)
    return select(2, s:gsub("\n", ""))
end

local function escape(s)
    return (s:gsub("%p", "%%%0"))
end

describe("a full disk under state_dir", function()
    local srv
    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    it("is a local failure (kind output) naming the directory, as nil, err, spending no call", function()
        local dir = support.disk("size=1m", true, finally, pending)
        if not dir then
            return
        end
        local c = support.client(srv, { state_dir = dir })
        local ok, rows, err = pcall(c.call, c, "information", "services")
        assert.is_true(ok, tostring(rows))
        assert.is_nil(rows)
        assert.equal("output", err.kind, tostring(err))
        assert.is_false(err.retryable)
        assert.matches(escape(dir) .. "/tokens/%x+: No space left on device", err.message)
        ok, rows, err = pcall(c.report, c, "cdr_1", { from = "2026-01-01", to = "2026-02-28" })
        assert.is_true(ok, tostring(rows))
        assert.equal("output", err.kind, tostring(err))
        assert.equal(0, srv:control("stats").requests)
        -- Space again: the same client goes on (no slot was left held).
        os.remove(dir .. "/fill")
        assert(c:call("information", "services"))
        c:close()
    end)

    it("makes `wolkvox --state-dir DIR` exit 1 saying which directory is full", function()
        local dir = support.disk("size=1m", true, finally, pending)
        if not dir then
            return
        end
        local code, out = cli("--base-url " .. srv.url .. " --state-dir " .. q(dir) .. " call information services",
            { WOLKVOX_TOKEN = srv.token })
        assert.equal(1, code, out)
        assert.matches(escape(dir) .. "/tokens/%x+: No space left on device", out)
        assert.is_nil(out:find("internal error", 1, true), out)
        assert.equal(1, lines(out), out)
        assert.equal(0, srv:control("stats").requests)
    end)
end)

describe("token and config files that are no regular files", function()
    local dir
    setup(function()
        dir = support.tmpdir()
        -- (Through sh: the shell tools run without the sanitizer's preload.)
        assert.equal(0, (sh("mkfifo " .. q(dir .. "/fifo"))))
        assert.equal(0, (sh("mkdir " .. q(dir .. "/adir"))))
        -- 5 MB on one line: the first line is all of it.
        assert.equal(0, (sh("head -c 5000000 /dev/zero | tr '\\0' a > " .. q(dir .. "/huge"))))
        assert.equal(0, (sh("ln -s fifo " .. q(dir .. "/fifo-link"))))
    end)
    teardown(function() sh("rm -rf " .. q(dir)) end)

    -- What wolkvox.new says of `token_file = path`, from a bounded child:
    -- "kind|message", or the child's own failure.
    local function new_in_child(path)
        local code, out = child(string.format([[
            local wolkvox = require "wolkvox"
            local c, err = wolkvox.new { base_url = "http://127.0.0.1:9", token_file = %q, state_dir = false }
            io.write(c and "client" or (err.kind .. "|" .. err.message))
        ]], path))
        return code, out
    end

    it("token_file /dev/zero or a FIFO (or a link to one): params, at once, nothing read", function()
        for _, path in ipairs { "/dev/zero", dir .. "/fifo", dir .. "/fifo-link" } do
            local code, out = new_in_child(path)
            assert.equal(0, code, path .. ": " .. out)
            assert.matches("^params|token_file " .. escape(path) .. " is not a regular file", out)
        end
    end)

    it("token_file naming a directory says so; a huge file is refused by its size", function()
        local c, err = wolkvox.new { base_url = "http://127.0.0.1:9", token_file = dir .. "/adir", state_dir = false }
        assert.is_nil(c)
        assert.equal("params", err.kind)
        assert.matches("token_file " .. escape(dir) .. "/adir is a directory", err.message)
        c, err = wolkvox.new { base_url = "http://127.0.0.1:9", token_file = dir .. "/huge", state_dir = false }
        assert.is_nil(c)
        assert.equal("params", err.kind)
        assert.matches("is 5000000 bytes, more than the 4096 accepted", err.message)
        -- A missing one is still a missing token.
        c, err = wolkvox.new { base_url = "http://127.0.0.1:9", token_file = dir .. "/none", state_dir = false }
        assert.is_nil(c)
        assert.equal("auth", err.kind)
    end)

    it("the CLI exits 2 with one line for such a --token-file or --config, never hanging", function()
        local cases = {
            { "--token-file /dev/zero", "not a regular file" },
            { "--token-file " .. q(dir .. "/fifo"), "not a regular file" },
            { "--token-file " .. q(dir .. "/adir"), "is a directory" },
            { "--token-file " .. q(dir .. "/huge"), "more than the 4096 accepted" },
            { "--config /dev/zero", "not a regular file" },
            { "--config " .. q(dir .. "/fifo"), "not a regular file" },
            { "--config " .. q(dir .. "/adir"), "is a directory" },
            { "--config " .. q(dir .. "/huge"), "more than the 1048576 accepted" },
        }
        for _, case in ipairs(cases) do
            local code, out = cli("--base-url http://127.0.0.1:9 --state-dir " .. q(dir .. "/state") .. " "
                .. case[1] .. " call information services")
            assert.equal(2, code, case[1] .. ": " .. out)
            assert.matches(case[2], out)
            assert.equal(1, lines(out), case[1] .. ": " .. out)
        end
    end)

    it("warns of a token file that group or others can read, as of such a config file", function()
        local srv = support.fake()
        finally(function() srv:stop() end)
        local tok = dir .. "/token"
        support.spit(tok, srv.token, "\n")
        sh("chmod 640 " .. q(tok))
        local said = {}
        local function logger(level, line) said[#said + 1] = level .. ": " .. line end
        local c = assert(wolkvox.new { base_url = "http://127.0.0.1:9", token_file = tok, state_dir = false,
            logger = logger })
        c:close()
        assert.equal(1, #said, table.concat(said, "\n"))
        assert.equal("warn: the token file " .. tok .. " can be read by others (mode 640): chmod 600 it", said[1])
        -- The CLI says it on stderr (and -q keeps it quiet).
        local code, out = cli("--base-url " .. srv.url .. " --state-dir " .. q(dir .. "/state") .. " --token-file "
            .. q(tok) .. " call information services")
        assert.equal(0, code, out)
        assert.matches("the token file " .. escape(tok) .. " can be read by others %(mode 640%): chmod 600 it", out)
        code, out = cli("-q --base-url " .. srv.url .. " --state-dir " .. q(dir .. "/state") .. " --token-file "
            .. q(tok) .. " call information services")
        assert.equal(0, code, out)
        assert.is_nil(out:find("can be read by others", 1, true), out)
        sh("chmod 600 " .. q(tok))
        said = {}
        c = assert(wolkvox.new { base_url = "http://127.0.0.1:9", token_file = tok, state_dir = false,
            logger = logger })
        c:close()
        assert.same({}, said)
    end)
end)

describe("c:call and deadlines", function()
    local srv
    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    it("c:call refuses an option it does not know in opts (kind params, did you mean), spending nothing", function()
        local x = support.client(srv, { state_dir = support.tmpdir() })
        local rows, err = x:call("information", "services", {}, { deadline = 2 })
        assert.is_nil(rows)
        assert.equal("params", err.kind)
        assert.matches("unknown option 'deadline' in opts", err.message)
        assert.matches("pass it in params", err.message)
        rows, err = x:call("information", "services", nil, { uncheked = true })
        assert.is_nil(rows)
        assert.equal("params", err.kind)
        assert.matches("did you mean 'unchecked'", err.message)
        rows, err = x:call("information", "services", nil, "unchecked")
        assert.is_nil(rows)
        assert.equal("params", err.kind)
        assert.equal(0, #srv:log())
        assert(x:call("information", "services", nil, { unchecked = true }))
        assert(x:call("information", "services", { deadline = 5 }))
        x:close()
    end)

    it("a deadline's message says how much more was needed only when it is worth saying", function()
        local x = support.client(srv, { state_dir = support.tmpdir(), retries = 0 })
        -- Both slots of the token held (as by another process's calls).
        local dir = x._ctx.pacer.dir
        local a, b = assert(core.lock(dir .. "/slot1")), assert(core.lock(dir .. "/slot2"))
        local rows, err = x:call("information", "services", { deadline = 0.3 })
        a:release()
        b:release()
        assert.is_nil(rows)
        assert.equal("timeout", err.reason)
        assert.matches("while waiting for a free slot of the token", err.message)
        assert.is_nil(err.message:find("0.0 s", 1, true), err.message)
        local more = err.message:match("(%d+%.%d) s")
        assert.is_true(more == nil or tonumber(more) >= 0.1, err.message)
        -- A start far beyond the deadline (min_interval): how far is said.
        local y = support.client(srv, { state_dir = support.tmpdir(), min_interval = 30 })
        assert(y:call("information", "services"))
        rows, err = y:call("information", "services", { deadline = 1 })
        assert.is_nil(rows)
        assert.equal("timeout", err.reason)
        more = tonumber(err.message:match("its earliest start is (%d+%.%d) s after the deadline"))
        assert.is_true(more and more > 20, err.message)
        assert.equal(1, #srv:log())
        x:close()
        y:close()
    end)
end)

describe("answers whose data cannot be written as rows", function()
    local FEW_DAYS = { from = "2026-01-01", to = "2026-01-02" }
    local out
    before_each(function() out = support.tmpdir() .. "/out" end)

    local function client(h, opts)
        local o = { base_url = h.url, token = TOKEN, state_dir = support.tmpdir() }
        for k, v in pairs(opts or {}) do
            o[k] = v
        end
        return assert(wolkvox.new(o))
    end

    it("a window whose data is text or a number: a decode error from c:export and c:report, one call each", function()
        local bodies = {
            { '{"code":200,"msg":"ok","data":"No records for these dates"}', 'the text "No records for these dates"' },
            { '{"code":200,"msg":"ok","data":42}', "the number 42" },
        }
        for _, case in ipairs(bodies) do
            for _, spool in ipairs { true, false } do
                local h = hostile.start { responses = { hostile.json(200, case[1]), hostile.json(200, case[1]) } }
                local c = client(h, { spool_dir = not spool and false or nil })
                local ok, n, err = pcall(c.export, c, "cdr_1", FEW_DAYS, { format = "csv", output = out })
                assert.is_true(ok, tostring(n))
                assert.is_nil(n)
                assert.equal("decode", err.kind, tostring(err))
                assert.equal("reports_manager/cdr_1", err.endpoint)
                assert.matches("data is " .. escape(case[2]) .. " instead of a list of rows", err.message)
                local rows
                ok, rows, err = pcall(c.report, c, "cdr_1", FEW_DAYS)
                assert.is_true(ok, tostring(rows))
                assert.is_nil(rows)
                assert.equal("decode", err.kind, tostring(err))
                assert.matches("data is " .. escape(case[2]) .. " instead of a list of rows", err.message)
                c:close()
                assert.equal(2, h:connections())
                h:stop()
                os.remove(out)
            end
        end
    end)

    it("c:export of an endpoint without dates: its rows, or nil, err for text in their place", function()
        local srv = support.fake()
        finally(function() srv:stop() end)
        local x = support.client(srv, { state_dir = support.tmpdir() })
        local ok, n, err = pcall(x.export, x, "services", {}, { format = "ndjson", output = out })
        x:close()
        assert.is_true(ok, tostring(n))
        assert.is_number(n, tostring(err))
        assert.is_true(n > 0)
        local written = 0
        for _ in support.read(out):gmatch("[^\n]+") do
            written = written + 1
        end
        assert.equal(n, written)
        os.remove(out)
        local h = hostile.start { responses = { hostile.json(200, '{"code":200,"msg":"ok","data":"just text"}') } }
        local c = client(h)
        ok, n, err = pcall(c.export, c, "services", {}, { format = "csv", output = out })
        c:close()
        h:stop()
        assert.is_true(ok, tostring(n))
        assert.is_nil(n)
        assert.equal("decode", err.kind, tostring(err))
        assert.equal("information/services", err.endpoint)
        assert.matches('data is the text "just text" instead of a list of rows', err.message)
    end)

    it("NDJSON: a 400-digit number is nil, err naming the field; a null in a list is null", function()
        local big = '{"code":200,"msg":"ok","data":[{"agent_name":"a","cost":' .. ("9"):rep(400) .. '}]}'
        local nulls = '{"code":200,"msg":"ok","data":[{"agent_name":"a","tags":[1,null,2]}]}'
        for _, fmt in ipairs { "ndjson", "json" } do
            local h = hostile.start { responses = { hostile.json(200, big), hostile.json(200, nulls) } }
            local c = client(h)
            local ok, n, err = pcall(c.export, c, "cdr_1", FEW_DAYS, { format = fmt, output = out })
            assert.is_true(ok, tostring(n))
            assert.is_nil(n)
            assert.equal("output", err.kind, tostring(err))
            assert.matches("field 'cost' cannot be written as JSON: the server sent a number beyond what a "
                .. "Lua number holds", err.message)
            os.remove(out)
            ok, n = pcall(c.export, c, "cdr_1", FEW_DAYS, { format = fmt, output = out })
            assert.is_true(ok, tostring(n))
            assert.equal(1, n)
            assert.matches('"tags":%[1,null,2%]', support.read(out))
            os.remove(out)
            c:close()
            h:stop()
        end
    end)
end)

-- What an export killed while writing leaves: its temporary file beside the
-- output (`.NAME.tmp-` and 16 hex digits).  Its writer held the file's lock
-- from its creation to its rename; the next export of that path removes
-- such a file once nobody holds its lock and it is older than STALE, and
-- nothing else.
describe("temporary files of killed exports", function()
    local file_out = require "wolkvox.out.file"
    local HEX = "0123456789abcdef"

    -- `path` made a file (with `text`) `minutes` minutes old.
    local function aged(path, minutes, text)
        support.spit(path, text or "rows of a killed run\n")
        assert.equal(0, (sh("touch -d '" .. minutes .. " minutes ago' " .. q(path))))
    end

    local function exists(path)
        return (sh("test -e " .. q(path) .. " -o -L " .. q(path))) == 0
    end

    it("removes only an old one of this path whose lock nobody holds", function()
        local dir = support.tmpdir()
        local tmp = dir .. "/.cdr.csv.tmp-" .. HEX
        aged(tmp, 11)
        local keep = {
            young = dir .. "/.cdr.csv.tmp-" .. HEX:reverse(),
            short = dir .. "/.cdr.csv.tmp-" .. HEX:sub(2),
            upper = dir .. "/.cdr.csv.tmp-" .. HEX:upper(),
            other = dir .. "/.other.csv.tmp-" .. HEX,
            suffix = dir .. "/.cdr.csv.tmp-" .. HEX .. "x",
            linked = dir .. "/.cdr.csv.tmp-" .. ("1"):rep(16),
            link = dir .. "/.cdr.csv.tmp-" .. ("2"):rep(16),
            subdir = dir .. "/.cdr.csv.tmp-" .. ("3"):rep(16),
            fifo = dir .. "/.cdr.csv.tmp-" .. ("4"):rep(16),
        }
        aged(keep.young, 0)
        for _, k in ipairs { "short", "upper", "other", "suffix", "linked" } do
            aged(keep[k], 11)
        end
        assert.equal(0, (sh("ln " .. q(keep.linked) .. " " .. q(dir .. "/elsewhere"))))     -- two links
        local target = dir .. "/target.csv"
        aged(target, 11, "a file of the user's\n")
        assert.equal(0, (sh("ln -s target.csv " .. q(keep.link) .. " && touch -h -d '11 minutes ago' "
            .. q(keep.link))))
        assert.equal(0, (sh("mkdir " .. q(keep.subdir) .. " && touch -d '11 minutes ago' " .. q(keep.subdir))))
        assert.equal(0, (sh("mkfifo " .. q(keep.fifo) .. " && touch -d '11 minutes ago' " .. q(keep.fifo))))
        if (sh("id -u")) == 0 and select(2, sh("id -u")):match("^0") then
            keep.foreign = dir .. "/.cdr.csv.tmp-" .. ("5"):rep(16)
            aged(keep.foreign, 11)
            assert.equal(0, (sh("chown 65534 " .. q(keep.foreign))))
        end
        assert.equal(1, core.sweep_tmp(dir, "cdr.csv", file_out.STALE))
        assert.is_false(exists(tmp))
        for what, path in pairs(keep) do
            assert.is_true(exists(path), what)
        end
        assert.equal("a file of the user's\n", support.read(target))
        -- Nothing to do a second time; a directory that is not there is no error.
        assert.equal(0, core.sweep_tmp(dir, "cdr.csv", file_out.STALE))
        assert.equal(0, core.sweep_tmp(dir .. "/none", "cdr.csv", file_out.STALE))
        for _, bad in ipairs { { dir, "a/b", 600 }, { dir, "", 600 }, { dir, "cdr.csv", 0 },
                { dir, "cdr.csv", 0 / 0 }, { dir, "cdr.csv", "x" }, { nil, "cdr.csv", 600 } } do
            assert.has_error(function() core.sweep_tmp(bad[1], bad[2], bad[3]) end)
        end
        os.execute("rm -rf " .. q(dir))
    end)

    it("never removes the file of a writer that lives, however old", function()
        local dir = support.tmpdir()
        local out = dir .. "/live.csv"
        local w = file_out.new(out)
        w.file:write("rows so far\n")
        w.file:flush()
        assert.equal(0, (sh("touch -d '11 minutes ago' " .. q(w.tmp))))
        -- Another process's look, and this one's: the lock is held.
        local code, said = child(string.format("io.write(require('wolkvox.core').sweep_tmp(%q, 'live.csv', 600))",
            dir))
        assert.equal(0, code, said)
        assert.equal("0", said)
        assert.equal(0, core.sweep_tmp(dir, "live.csv", file_out.STALE))
        local w2 = file_out.new(out)   -- a second writer of the same path sweeps first
        assert.is_true(exists(w.tmp))
        w2:abort()
        assert(w:commit())
        assert.equal("rows so far\n", support.read(out))
        -- Committed: no temporary name left, and the lock let go.
        assert.equal("live.csv\n", select(2, sh("ls -A " .. q(dir))))
        os.execute("rm -rf " .. q(dir))
    end)

    it("lets Ctrl-C through while the command line opens its output", function()
        -- (lua.c's interrupt hook raises at the next call: here the sweep's)
        local output = require "wolkvox.cli.output"
        local dir = support.tmpdir()
        local ok, err = support.interrupted_at(core.sweep_tmp, function() return output.open(dir .. "/out.csv") end)
        assert.is_false(ok)
        assert.matches("interrupted!", tostring(err), 1, true)
        assert.equal("", select(2, sh("ls -A " .. q(dir))))
        os.execute("rm -rf " .. q(dir))
    end)

    it("a rerun of a killed command-line export removes what it left and finishes", function()
        local srv = support.fake()
        finally(function() srv:stop() end)
        local dir = support.tmpdir()
        local out = dir .. "/cdr.csv"
        srv:control("config", { latency = 0.5 })
        -- (the rerun paces with a state of its own: the killed run's calls
        -- keep their slots until the server would have ended them)
        local function argv(state, path)
            return "--base-url " .. srv.url .. " --state-dir " .. q(state) .. " --quiet report cdr_1 "
                .. "--from 2026-01-01 --to 2026-06-30 -o " .. q(path or out)
        end
        local p = io.popen("env -u LD_PRELOAD WOLKVOX_TOKEN=" .. srv.token .. " HOME=" .. q(dir) .. " " .. INTERP
            .. " bin/wolkvox " .. argv(dir .. "/state") .. " >/dev/null 2>&1 & echo $!")
        local pid = tonumber(p:read("*l"))
        p:close()
        support.wait_for(function()
            return select(2, sh("ls -A " .. q(dir))):find("%.cdr%.csv%.tmp%-%x+\n") ~= nil
                and srv:control("stats").requests >= 3
        end, 30, "the export to be writing")
        os.execute("kill -9 " .. pid)
        support.wait_for(function() return not support.alive(pid) end, 10, "the killed export to be gone")
        local left = select(2, sh("ls -A " .. q(dir))):match("(%.cdr%.csv%.tmp%-%x+)\n")
        assert.is_string(left)
        assert.equal(0, (sh("touch -d '11 minutes ago' " .. q(dir .. "/" .. left))))
        srv:control("config", { latency = 0 })
        local code, said = cli(argv(dir .. "/state2"), { WOLKVOX_TOKEN = srv.token })
        assert.equal(0, code, said)
        assert.is_false(exists(dir .. "/" .. left))
        assert.equal("cdr.csv\nstate\nstate2\n", select(2, sh("ls -A " .. q(dir))))
        local lines_out = select(2, support.read(out):gsub("\n", ""))
        assert.equal(18101, lines_out)   -- 181 days at 100 rows, and the header
        -- Row for row what an uninterrupted export writes.
        local ref = support.tmpdir()
        code, said = cli(argv(ref .. "/state", ref .. "/cdr.csv"), { WOLKVOX_TOKEN = srv.token })
        assert.equal(0, code, said)
        assert.equal(support.read(ref .. "/cdr.csv"), support.read(out))
        os.execute("rm -rf " .. q(dir) .. " " .. q(ref))
    end)
end)
