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
