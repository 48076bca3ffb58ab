-- The fake server itself, spoken to with raw sockets (not the library), so its
-- behaviour is checked independently of the client code it serves.
local socket = require "socket"
local cjson = require "cjson"
local support = require "support"

-- Send a raw GET on a new connection; returns the socket.
local function send(srv, target, token)
    local host, port = srv.url:match("^http://([^:]+):(%d+)$")
    local sock = assert(socket.connect(host, tonumber(port)))
    local lines = { "GET " .. target .. " HTTP/1.1", "Host: " .. host }
    if token then
        lines[#lines + 1] = "wolkvox-token: " .. token
    end
    lines[#lines + 1] = "Connection: close"
    assert(sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n"))
    return sock
end

-- Read a whole answer (Connection: close): status and decoded body.
local function answer(sock)
    sock:settimeout(10)
    local data = sock:receive("*a")
    sock:close()
    local status = tonumber(data:match("^HTTP/1%.1 (%d+)"))
    local body = data:match("\r\n\r\n(.*)$")
    local ok, decoded = pcall(cjson.decode, body)
    return status, ok and decoded or body
end

describe("the fake wolkvox server", function()
    local srv
    local SERVICES = "/api/v2/information.php?api=services"

    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    it("checks the token: 401 without, 403 PLEASE VALIDATE TOKEN when wrong", function()
        local status, body = answer(send(srv, SERVICES))
        assert.equal(401, status)
        assert.equal("PLEASE ENTER THE WOLKVOX-TOKEN", body.msg)
        status, body = answer(send(srv, SERVICES, "nope"))
        assert.equal(403, status)
        assert.equal("PLEASE VALIDATE TOKEN", body.msg)
        status, body = answer(send(srv, SERVICES, srv.token))
        assert.equal(200, status)
        assert.equal("200", body.code)
    end)

    it("answers 400 for an unknown api and 404 for an unknown family", function()
        local status, body = answer(send(srv, "/api/v2/information.php?api=nope", srv.token))
        assert.equal(400, status)
        assert.equal("THE API YOU WANT TO CONSULT DOES NOT EXIST", body.msg)
        status = answer(send(srv, "/api/v2/nothing.php?api=x", srv.token))
        assert.equal(404, status)
    end)

    it("refuses a third simultaneous request of one token with the documented 403", function()
        srv:control("config", { latency = 0.5 })
        local socks = {}
        for i = 1, 3 do
            socks[i] = send(srv, SERVICES, srv.token)
            -- in this order at the server
            support.wait_for(function() return srv:control("stats").requests >= i end, 10,
                "request " .. i .. " at the server")
        end
        local statuses, messages = {}, {}
        for i = 1, 3 do
            local status, body = answer(socks[i])
            statuses[i], messages[i] = status, body.msg
        end
        assert.same({ 200, 200, 403 }, statuses)
        assert.equal("EXCEEDS THE LIMIT OF SIMULTANEOUS REQUESTS PER TOKEN (2)", messages[3])
        local stats = srv:control("stats")
        assert.equal(2, stats.max_inflight)
        -- Once they are done, the token may call again.
        assert.equal(200, (answer(send(srv, SERVICES, srv.token))))
    end)

    it("serves several connections at once: latency overlaps instead of adding up", function()
        srv:control("config", { latency = 0.4, tokens = { "a", "b", "c", "d" } })
        local t0 = socket.gettime()
        local socks = {}
        for i, token in ipairs { "a", "b", "c", "d" } do
            socks[i] = send(srv, SERVICES, token)
        end
        for i = 1, 4 do
            assert.equal(200, (answer(socks[i])))
        end
        local log = srv:log()
        assert.equal(4, #log)
        -- Every request started before the first one finished.
        local first_end = math.huge
        for _, e in ipairs(log) do
            first_end = math.min(first_end, e.t_end)
        end
        for _, e in ipairs(log) do
            assert.is_true(e.t_start < first_end)
        end
        assert.is_true(socket.gettime() - t0 > 0.35)
    end)

    it("sends the envelope with string values and the endpoint's code type", function()
        local _, body = answer(send(srv, "/api/v2/billing.php?api=rec_screen", srv.token))
        assert.equal(200, body.code)                -- a number for this endpoint
        assert.equal(cjson.null, body.error)
        assert.equal("Information found for the current month", body.msg)
        for _, row in ipairs(body.data) do
            for _, v in pairs(row) do
                assert.is_string(v)
            end
        end
        _, body = answer(send(srv, SERVICES, srv.token))
        assert.equal("200", body.code)              -- a string for this one
    end)

    it("logs requests with the token redacted and counts quota", function()
        answer(send(srv, SERVICES, srv.token))
        local log = srv:log()
        assert.equal("<redacted>", log[1].headers["wolkvox-token"])
        assert.equal("ok", log[1].token)
        assert.equal(1, srv:control("stats").quota_used)
    end)

    it("enforces a daily quota when configured", function()
        srv:control("config", { daily_limit = 2 })
        assert.equal(200, (answer(send(srv, SERVICES, srv.token))))
        assert.equal(200, (answer(send(srv, SERVICES, srv.token))))
        local status, body = answer(send(srv, SERVICES, srv.token))
        assert.equal(403, status)
        assert.equal("TOKEN LIMIT EXCEEDED", body.msg)
    end)

    it("answers a TLS hello on its plain port with 400, not silence", function()
        local host, port = srv.url:match("^http://([^:]+):(%d+)$")
        local sock = assert(socket.connect(host, tonumber(port)))
        sock:send("\22\3\1\0\5hello")
        sock:settimeout(5)
        local data = sock:receive("*a")
        sock:close()
        assert.matches("^HTTP/1%.1 400", data)
    end)

    it("runs as a command with --help", function()
        local p = io.popen("env -u LD_PRELOAD lua5.4 bin/wolkvox-fake --help")
        local out = p:read("*a")
        p:close()
        assert.matches("usage: wolkvox%-fake", out)
    end)

    it("keeps its tokens out of its command line and of the config answer", function()
        local secret = "fake-secret-token-0123456789"
        local own = support.fake { tokens = { secret, "second-secret-token" } }
        local ok, err = pcall(function()
            assert.is_number(own.pid)
            local cmdline = assert(support.proc(own.pid, "cmdline"))
            assert.matches("wolkvox", cmdline)          -- it is the child we think it is
            assert.is_nil(cmdline:find(secret, 1, true), cmdline)
            assert.is_nil(cmdline:find("second-secret", 1, true), cmdline)
            local environ = support.proc(own.pid, "environ") or ""
            assert.is_nil(environ:find(secret, 1, true))
            local text = cjson.encode(own:control("config", {}))
            assert.is_nil(text:find(secret, 1, true), text)
            assert.is_nil(text:find("second-secret", 1, true), text)
            assert.equal(2, own:control("config", {}).token_count)
            text = cjson.encode(own:control("config", { tokens = { "changed-secret-token" } }))
            assert.is_nil(text:find("changed-secret", 1, true), text)
            -- and the tokens still work
            assert.equal(200, (answer(send(own, SERVICES, "changed-secret-token"))))
        end)
        own:stop()
        assert(ok, err)
    end)

    -- --idle-timeout: how long a connection may wait for a request's next
    -- bytes (60 s by default) before the fake closes it.
    it("bin/wolkvox-fake closes a connection idle past --idle-timeout, and refuses bad numbers", function()
        local function start(extra)
            local log = os.tmpname()
            local p = assert(io.popen("exec env -u LD_PRELOAD timeout 30 lua5.4 bin/wolkvox-fake --port 0 "
                .. "--lifetime 20 " .. extra .. " >" .. log .. " 2>&1 & echo $!"))
            local pid = tonumber(p:read("*l"))
            p:close()
            local url = support.wait_for(function()
                return (support.read(log) or ""):match("listening on http://127%.0%.0%.1:(%d+)")
            end, 10, "the fake's \"listening on\" line")
            os.remove(log)
            return pid, tonumber(url)
        end
        -- A connection that sends nothing: closed after about a second with
        -- --idle-timeout 1, still open after three without it.
        for _, case in ipairs { { "--idle-timeout 1", "closed" }, { "", "timeout" } } do
            local pid, port = start(case[1])
            local so = assert(socket.connect("127.0.0.1", port))
            so:settimeout(case[2] == "closed" and 15 or 3)
            local _, err = so:receive(1)
            so:close()
            os.execute("kill " .. pid .. " 2>/dev/null")
            assert.equal(case[2], err, case[1])
        end
        for _, bad in ipairs { "--idle-timeout 0", "--idle-timeout -1", "--idle-timeout nan", "--idle-timeout inf",
            "--idle-timeout x", "--idle-timeout 100000", "--port 70000", "--port 1.5", "--lifetime -1",
            "--latency inf" } do
            local code, out = support.sh("timeout 10 lua5.4 bin/wolkvox-fake --port 0 --lifetime 1 " .. bad)
            assert.equal(2, code, bad)
            assert.matches("needs a number: ", out, bad)
            assert.is_nil(out:find("listening on", 1, true), bad)
        end
        local code, out = support.sh("timeout 10 lua5.4 bin/wolkvox fake --idle-timeout 0")
        assert.equal(2, code)
        assert.matches("%-%-idle%-timeout needs a number: seconds above 0", out)
        -- and the library's spawn(), before any child starts
        for _, v in ipairs { 0, -1, 0 / 0, "5", 1e9 } do
            local ok, err = pcall(require("wolkvox.fake").spawn, { idle_timeout = v })
            assert.is_false(ok)
            assert.matches("idle_timeout: seconds above 0", tostring(err))
        end
    end)

    it("bin/wolkvox-fake reads tokens from --token-file, not from its arguments", function()
        local p = assert(io.popen("printf 'file-secret-token\\n' | exec env -u LD_PRELOAD timeout 10 lua5.4 "
            .. "bin/wolkvox-fake --port 0 --token-file - --lifetime 1", "r"))
        local line = p:read("*l")
        p:close()
        assert.matches("listening on http://127%.0%.0%.1:%d+ %(1 token%(s%) given%)", line)
    end)
end)

-- A script that spawns a fake and never stops it: the fake must go with it.
describe("a spawned fake outliving its script", function()
    local function run(body)
        local code = "local f = require('wolkvox.fake').spawn { lua = 'env -u LD_PRELOAD lua5.4' } "
            .. "io.stdout:write(f.pid, '\\n') io.stdout:flush() " .. body
        local cmd = support.lua_command(code)
        local t0 = socket.gettime()
        local p = assert(io.popen("exec timeout 30 " .. cmd:gsub("^exec ", "") .. " 2>/dev/null", "r"))
        local pid = tonumber(p:read("*l"))
        p:read("*a")
        p:close()
        return pid, socket.gettime() - t0
    end

    local function gone(pid)
        return support.wait_for(function() return not support.alive(pid) end, 5, "the fake's process to end")
    end

    it("ends when the script ends without stop()", function()
        local pid, took = run("")
        assert.is_number(pid)
        assert.is_true(took < 5, "the script took " .. took .. " s")
        assert.is_true(gone(pid))
    end)

    it("ends when the script dies of an error", function()
        local pid, took = run("error('boom')")
        assert.is_true(took < 5, "the script took " .. took .. " s")
        assert.is_true(gone(pid))
    end)

    it("ends when the script calls os.exit", function()
        local pid, took = run("os.exit(3)")
        assert.is_true(took < 5, "the script took " .. took .. " s")
        assert.is_true(gone(pid))
    end)

    it("ends when its handle is collected while the script goes on", function()
        local pid, took = run("local pid = f.pid f = nil collectgarbage() collectgarbage() "
            .. "local function alive() local s = io.open('/proc/' .. pid .. '/stat') "
            .. "if s then s:close() end return s ~= nil end "
            .. "local t = os.time() + 10 "
            .. "while os.time() < t and alive() do require('socket').sleep(0.01) end "
            .. "io.stdout:write(alive() and 'alive' or 'gone')")
        assert.is_true(took < 8, "the script took " .. took .. " s")
        assert.is_true(gone(pid))
    end)
end)
