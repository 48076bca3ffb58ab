-- Answers spooled to disk: core.check (the decoder's rules, nothing built),
-- the counting decoder, the session's `spool` request, and the failures
-- around them (a directory that cannot hold them, a full disk, a hostile
-- answer echoing the token).
local core = require "wolkvox.core"
local hostile = require "hostile"
local support = require "support"

local spit = support.spit

local TOKEN = "spool-secret-token-0123456789"

-- Texts the decoder accepts and refuses, the hard cases of JSON's grammar.
local CORPUS = {
    '{}', '[]', '""', '0', '-0', '1.5e3', '-1E-2', 'true', 'false', 'null', ' [1, 2 ,3 ] ',
    '{"a":{"b":[{"c":null}]}}', '"\\u00e9\\ud83d\\ude00"', '"\\"\\\\\\/\\b\\f\\n\\r\\t"',
    '\239\187\191{"bom":1}', '123456789012345678901234567890', '{"a":1,"a":2}',
    '', ' ', '{', '[1,]', '[,1]', '{"a" 1}', '{"a":}', '{a:1}', '01', '1.', '.5', '1e', '-',
    '"\\x"', '"\\u12"', '"\\ud800"', '"\\udc00x"', '"a\1b"', '"open', 'tru', 'nul', '[1 2]',
    '{"a":1}}', '[1]x', '{"a":1,}', '\239\187\191', '[' .. string.rep('[', 1100) .. string.rep(']', 1101),
}

describe("core.check", function()
    it("accepts exactly what core.decode accepts, with the same message", function()
        for _, text in ipairs(CORPUS) do
            local v, derr = core.decode(text)
            local ok, cerr = core.check(text)
            assert.equal(v ~= nil or derr == nil, ok == true, ("%q"):format(text))
            assert.equal(derr, cerr, ("%q"):format(text))
        end
    end)
end)

describe("core.decoder { count = true }", function()
    local body = '{"code":"200","msg":"ok","data":[{"id":"1","n":"a\\"b"},{"id":"2","x":[1,{"y":null}]},'
        .. '{"id":"3"}],"extra":{"k":[1,2]}}'

    it("counts the rows the full decoder gives, split at every byte, keeping the envelope", function()
        local full = core.decoder()
        local rows = assert(full:feed(body))
        local env = assert(full:finish())
        for cut = 0, #body do
            local d = core.decoder { count = true }
            local a = assert(d:feed(body:sub(1, cut)))
            local b = assert(d:feed(body:sub(cut + 1)))
            assert.equal(0, #a + #b)
            local e, rest, n = d:finish()
            assert.equal(#rows, n)
            assert.equal(0, #rest)
            assert.equal(env.msg, e.msg)
            assert.same(env.extra, e.extra)
        end
    end)

    it("refuses a row the full decoder refuses, where the scanner alone would not", function()
        for _, bad in ipairs { '{"data":[{"a":"\\q"}]}', '{"data":[{"a" 1}]}', '{"data":[01]}',
            '{"data":[{"a":"\\ud800"}]}' } do
            local d = core.decoder { count = true }
            local ok = d:feed(bad)
            local e = ok and d:finish()
            assert.is_nil(e, bad)
        end
    end)
end)

describe("core.decoder { csv = columns }", function()
    local cols = { "a", "b", "c", "d", "e", "f" }
    local rows = {
        '{"a":"x","b":"y"}', '{"a":"1,2","b":"say \\"hi\\"","c":"line\\nbreak"}',
        '{"a":12,"b":1.5,"c":-0,"d":1e3,"e":123456789012345678901,"f":true}',
        '{"a":null,"b":{"x":1},"c":[1,2],"d":false}', '{"a":"dup","a":"second"}', '{"a":"x","a":null}',
        '{"a":"\\u00e9\\ud83d\\ude00","b":"' .. TOKEN .. '","c":"pre' .. TOKEN .. 'post"}',
        '{"b":"' .. TOKEN:sub(1, 5) .. '\\u002d' .. TOKEN:sub(7) .. '"}',
        '{ "a" : "sp" , "b" : [ "x" , { "y" : "}" } ] , "c" : "z" }',
        '{"\\u0061":"escaped key"}', '{}', '{"zz":"other"}', '{"a":"\\/\\b\\f\\r\\t"}',
    }
    local body = '{"code":"200","data":[' .. table.concat(rows, ",") .. '],"msg":"ok"}'

    it("makes the lines core.csv_row makes of the decoded rows, token masked, split anywhere", function()
        local d = core.decoder { secret = TOKEN }
        local decoded = assert(d:feed(body))
        local _, rest = d:finish()
        for _, r in ipairs(rest) do
            decoded[#decoded + 1] = r
        end
        local want = {}
        for _, r in ipairs(decoded) do
            want[#want + 1] = core.csv_row(r, cols)
        end
        want = table.concat(want)
        assert.is_nil(want:find(TOKEN, 1, true))
        for cut = 0, #body do
            local c = core.decoder { secret = TOKEN, csv = cols }
            local a = assert(c:feed(body:sub(1, cut)))
            local b = assert(c:feed(body:sub(cut + 1)))
            local env, last, n = c:finish()
            assert.equal(want, a .. b .. last, "cut at " .. cut)
            assert.equal(#rows, n)
            assert.equal("ok", env.msg)
        end
        -- The first rows left out (written another way), still counted.
        local c = core.decoder { secret = TOKEN, csv = cols, skip = 2 }
        local text = assert(c:feed(body))
        local _, last, n = c:finish()
        assert.equal(want:sub(#core.csv_row(decoded[1], cols) + #core.csv_row(decoded[2], cols) + 1), text .. last)
        assert.equal(#rows, n)
    end)

    it("refuses a row that is not an object, and bad column lists", function()
        local c = core.decoder { csv = cols }
        local ok, err = c:feed('{"data":[{"a":"1"},["not","an","object"]]}')
        assert.is_nil(ok)
        assert.matches("a row is not an object", err)
        assert.has_error(function() core.decoder { csv = { "a", 2 } } end)
        assert.has_error(function() core.decoder { csv = "a" } end)
    end)
end)

describe("a spooled answer", function()
    it("is read back as written, decoded with the token masked, and leaves no file", function()
        local dir = support.tmpdir()
        local body = '{"code":"200","msg":"ok","data":[{"id":"1","note":"' .. TOKEN .. '"},{"id":"2"}]}'
        local h = hostile.start { default = hostile.json(200, body) }
        local s = core.session { token = TOKEN }
        local id = s:start { url = h.url .. "/x", spool = dir }
        local got, res
        repeat
            got, res = s:wait(0.1)
        until got
        assert.equal(id, got)
        assert.equal(2, res.rows)
        assert.is_true(res.streamed)
        local sp = res.spool
        assert.equal(#body, sp:size())
        local raw = {}
        while true do
            local chunk = sp:read(7)
            if not chunk then
                break
            end
            raw[#raw + 1] = chunk
        end
        -- The bytes on disk are the answer's; what is decoded from them is masked.
        assert.equal(body, table.concat(raw))
        sp:rewind()
        local d = sp:decoder()
        local rows = assert(d:feed(assert(sp:read(1048576))))
        assert.equal(2, #rows)
        assert.equal(("*"):rep(#TOKEN), rows[1].note)
        assert.is_nil(tostring(sp):find(TOKEN, 1, true))
        sp:close()
        sp:close()
        assert.has_error(function() sp:read(1) end, "spool is closed")
        assert.equal("", io.popen("ls -A '" .. dir .. "'"):read("*a"))
        s:close()
        h:stop()
        os.remove(dir)
    end)

    it("is refused when the directory cannot hold it", function()
        local sp, err = core.spool("/nonexistent/dir")
        assert.is_nil(sp)
        assert.matches("No such file or directory", err)
        local s = core.session { token = TOKEN }
        -- The request is never sent; its result says why (a directory that
        -- fills up between two starts must not raise: issue #19).
        local id = s:start { url = "http://127.0.0.1:9/", spool = "/nonexistent" }
        local got, res = s:wait(5)
        assert.equal(id, got)
        assert.equal("transport", res.error.kind)
        assert.equal("spool", res.error.reason)
        assert.is_false(res.error.sent)
        assert.equal(0, res.sends)
        assert.matches("No such file or directory", res.error.message)
        assert.is_nil(s:wait(0))
        assert.has_error(function() s:start { url = "http://127.0.0.1:9/", spool = "/tmp", decode = false } end,
            "bad request ('spool' needs the answer decoded)")
        s:close()
    end)
end)

describe("exports when the spool cannot be used", function()
    local srv, c
    support.suite({}, {}, function(s, x) srv, c = s, x end)

    it("say so before spending a call (a directory that does not exist)", function()
        local c2 = support.client(srv, { spool_dir = "/nonexistent/dir" })
        local range = { from = "2026-01-01", to = "2026-01-31" }
        local n, err = c2:export("cdr_1", range, { on_rows = function() end })
        assert.is_nil(n)
        assert.equal("output", err.kind)
        assert.matches("spool_dir", err.message)
        local ok, e2 = pcall(function() for _ in c2:each("cdr_1", range) do end end)
        assert.is_false(ok)
        assert.equal("output", e2.kind)
        assert.equal(0, srv:control("stats").requests)
        c2:close()
    end)

    it("hold windows in memory with spool_dir = false, and write the same", function()
        local range = { from = "2026-01-01", to = "2026-02-15" }
        local rows = {}
        assert(c:export("cdr_1", range, { on_rows = function(list) rows[#rows + 1] = #list end }))
        local c2 = support.client(srv, { spool_dir = false })
        local rows2 = {}
        assert(c2:export("cdr_1", range, { on_rows = function(list) rows2[#rows2 + 1] = #list end }))
        local function sum(t)
            local n = 0
            for _, v in ipairs(t) do n = n + v end
            return n
        end
        assert.equal(sum(rows), sum(rows2))
        assert.equal(2, #rows2) -- one list per window
        c2:close()
    end)

    it("fail the call, not the process, when the disk is full, and do not retry it", function()
        local dir = support.tmpdir()
        local tf = dir .. "/token"
        spit(tf, srv.token, "\n")
        -- A file size limit stands for a full disk (SIGXFSZ ignored, so write() says EFBIG).
        local code = ([[
            local wv = require "wolkvox"
            local c = assert(wv.new{ base_url = %q, token_file = %q, state_dir = false, spool_dir = %q })
            local n, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-31" }, { on_rows = function() end })
            io.write(tostring(n), "|", err.kind, "|", tostring(err.reason), "|", tostring(err.retryable), "|",
                err.message)
        ]]):format(srv.url, tf, dir)
        local inner = "trap '' XFSZ; ulimit -f 8; " .. support.lua_command(code)
        local p = io.popen("env -u LD_PRELOAD sh -c '" .. inner:gsub("'", "'\\''") .. "'")
        local out = p:read("*a")
        p:close()
        local n, kind, reason, retryable, msg = out:match("^(.-)|(.-)|(.-)|(.-)|(.*)$")
        assert.equal("nil", n, out)
        -- A local failure (issue #19), like a full output: kind output, naming the directory.
        assert.equal("output", kind)
        assert.equal("spool", reason)
        assert.equal("false", retryable)
        assert.matches("spool directory " .. dir:gsub("%p", "%%%0") .. ": File too large", msg)
        assert.equal(1, srv:control("stats").requests)
        os.execute("rm -rf '" .. dir .. "'")
    end)
end)

-- Issue #19: a spool directory on a full disk.  A tmpfs of 1 MiB, mounted
-- for the test and filled to its last byte (mounting needs root: the test
-- is pending without it; the file size limit above stands in for it).
describe("a full spool directory", function()
    local srv
    support.suite({}, {}, function(s) srv = s end)

    local MONTH = { from = "2026-01-01", to = "2026-01-31" }

    it("fails c:export as a local failure (kind output) naming the directory, after one call", function()
        local dir = support.disk("size=1m", true, finally, pending)
        if not dir then
            return
        end
        local c = support.client(srv, { spool_dir = dir })
        local n, err = c:export("cdr_1", MONTH, { format = "csv", output = support.state_dir .. "/full.csv" })
        c:close()
        assert.is_nil(n)
        assert.equal("output", err.kind, tostring(err))
        assert.is_false(err.retryable)
        assert.matches("spool directory " .. dir:gsub("%p", "%%%0") .. ": No space left on device", err.message)
        assert.is_nil(tostring(err):find("HTTP", 1, true), tostring(err))
        assert.equal(1, srv:control("stats").requests)
        os.remove(support.state_dir .. "/full.csv")
    end)

    it("with no inode left when a window starts, fails c:export the same way, that window never sent", function()
        -- A tmpfs with one free inode: the first window's spool file takes
        -- it (its answer delayed), the second window's start finds none.
        local dir = support.disk("size=1m,nr_inodes=2", false, finally, pending)
        if not dir then
            return
        end
        srv:control("config", { latency = 3 })   -- the first window stays in flight
        local c = support.client(srv, { spool_dir = dir })
        local ok, n, err = pcall(c.export, c, "cdr_1", { from = "2026-01-01", to = "2026-02-28" },
            { on_rows = function() end })
        c:close()
        assert.is_true(ok, tostring(n))
        assert.is_nil(n)
        assert.equal("output", err.kind, tostring(err))
        assert.matches("spool directory " .. dir:gsub("%p", "%%%0") .. ": No space left on device", err.message)
        assert.equal("2026-02-01 00:00:00", err.window.from)   -- the second window, never sent
    end)

    it("makes `wolkvox report` exit 1 (a local failure) saying which directory is full", function()
        local dir = support.disk("size=1m", true, finally, pending)
        if not dir then
            return
        end
        local home = support.tmpdir()
        local out = home .. "/cdr.csv"
        -- The CLI spools to TMPDIR (the option spool_dir's default).
        local code, text = support.sh(table.concat({ "env -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE -u WOLKVOX_SERVER",
            "HOME=" .. home, "XDG_CONFIG_HOME=" .. home, "XDG_CACHE_HOME=" .. home, "TMPDIR=" .. dir,
            "WOLKVOX_TOKEN=" .. srv.token, (jit and "luajit" or "lua5.4"), "bin/wolkvox",
            "--base-url", srv.url, "--state-dir", support.state_dir,
            "report cdr_1 --from 2026-01-01 --to 2026-01-31 --format csv -o", out }, " "))
        os.execute("rm -rf '" .. home .. "'")
        assert.equal(1, code, text)
        assert.matches("spool directory " .. dir:gsub("%p", "%%%0") .. ": No space left on device", text)
        assert.is_nil(text:find("the service or the network failed", 1, true), text)
        assert.equal(1, srv:control("stats").requests)
    end)
end)
