-- The C core against Lua code that runs at any allocation, hostile sizes and
-- echoed tokens, and interrupts (the security/robustness issue).
local core = require "wolkvox.core"
local support = require "support"

local TOKEN = "hardening-token-0123456789abcdef"

describe("wolkvox.core hardening", function()
    local srv, big_url

    setup(function()
        srv = support.fake { tokens = { TOKEN }, rows_per_day = 4000 }
        -- Two days of cdr_1: 8,000 rows, enough for many collector cycles.
        big_url = srv.url .. "/api/v2/reports_manager.php?api=cdr_1&date_ini=20260101000000"
            .. "&date_end=20260102235959"
    end)
    teardown(function() srv:stop() end)

    -- In a process of its own (a small heap, so the collector's cycles end
    -- quickly and at one of the answer's allocations), under this run's
    -- sanitizer or memcheck: an object whose finalizer closes the session
    -- is left for the collector once the transfer is under way.
    it("reports closed when a finalizer closes the session during the decode", function()
        local code = string.format([[
            local core = require "wolkvox.core"
            -- (gc_hold = false: the collector runs while the session waits,
            -- as it does where Lua cannot say whether it runs.)
            local s = core.session { token = %q, timeout = 30, gc_hold = false }
            local id = assert(s:start { url = %q })
            local ran = false
            local function fin() ran = true; s:close() end
            collectgarbage("collect")
            if newproxy then -- Lua 5.1 / LuaJIT: only userdata have finalizers
                getmetatable(newproxy(true)).__gc = fin
            else
                setmetatable({}, { __gc = fin })
            end
            collectgarbage("setpause", 0)
            -- No Lua runs while the transfer is driven: the finalizer can
            -- only run at the allocations of the answer's tables.
            local got, res = s:wait()
            io.write(tostring(got == id), " ", tostring(ran), " ", tostring(s:closed()), " ",
                tostring(res.error and res.error.kind), " ", tostring(res.value ~= nil), " ",
                tostring(s:wait()), "\n")
        ]], TOKEN, big_url)
        local p = io.popen("(" .. support.checked_command(code) .. ") 2>&1; echo status=$?")
        local out = p:read("*a")
        p:close()
        assert.matches("^true true true closed false nil\n", out)
        assert.matches("status=0%s*$", out)
    end)
end)

describe("wolkvox.core decoder hardening", function()
    it("caps the size hints an answer gives, duplicate keys included", function()
        -- One object of 1,000,000 members of the same name, then 300 empty
        -- objects: each used to be made with room for a million members.
        -- A child process under a 1 GB address-space limit decodes it.
        local code = [[
            local core = require "wolkvox.core"
            local text = "[{" .. ('"a":1,'):rep(999999) .. '"a":1}' .. (",{}"):rep(300) .. "]"
            local ok, v = pcall(core.decode, text)
            text = nil
            collectgarbage("collect")
            io.write(ok and #v or "error: " .. tostring(v), " ", math.floor(collectgarbage("count") / 1024), "\n")
        ]]
        local p = io.popen(support.limited_command(1000000, code) .. " 2>&1")
        local out = p:read("*a")
        p:close()
        local n, mb = out:match("^(%d+) (%d+)")
        assert.equal("301", n, out)
        assert.is_true(tonumber(mb) < 64, out)
    end)

    it("masks a secret in every decoded string, escaped or not", function()
        local secret = "s3cr3t/Token"
        local text = '{"msg":"bad token s3cr3t/Token","error":"\\u0073\\u0033cr3t\\/Token!",'
            .. '"s3cr3t/Token":"key","list":["xs3cr3t/Tokenx","s3cr3t"]}'
        local v = assert(core.decode(text, secret))
        assert.equal("bad token ************", v.msg)
        assert.equal("************!", v.error)
        assert.equal("key", v["************"])
        assert.equal("x************x", v.list[1])
        assert.equal("s3cr3t", v.list[2])
        -- Without a secret nothing changes.
        assert.equal("bad token s3cr3t/Token", core.decode(text).msg)
    end)
end)

describe("wolkvox.core out of memory", function()
    it("reports an answer whose tables do not fit as a result, not a raised error", function()
        local hostile = require "hostile"
        -- 64 MB of JSON: eight million small objects, more tables than a
        -- child process limited to 400 MB of address space can hold.
        local n = 8 * 1024 * 1024
        local h = hostile.start { responses = { function(c)
            c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[")
            local piece = ('{"a":1},'):rep(8192)
            for _ = 1, n / 8192 do
                c:send(piece)
            end
            c:send('{"a":1}]')
        end } }
        local code = string.format([[
            local core = require "wolkvox.core"
            local s = core.session { token = "t", timeout = 60 }
            local ok, res = pcall(s.request, s, { url = %q })
            local e = ok and res.error or {}
            io.write(tostring(ok), " ", tostring(e.kind), " ", tostring(e.reason), " ",
                tostring(ok and res.value ~= nil), " ", ok and "" or tostring(res), "\n")
            s:close()
        ]], h.url .. "/x")
        local p = io.popen(support.limited_command(400000, code) .. " 2>&1")
        local out = p:read("*a")
        p:close()
        h:stop()
        assert.equal("true too_large memory false", out:match("^[^\n]*"):gsub("%s+$", ""), out)
    end)
end)

describe("wolkvox.core waits in slices", function()
    local srv

    setup(function() srv = support.fake { tokens = { TOKEN } } end)
    teardown(function() srv:stop() end)

    it("gives control back when the slice runs out, then the answer", function()
        srv:control("config", { latency = 0.6 })
        local s = core.session { token = TOKEN, timeout = 5 }
        local id = assert(s:start { url = srv.url .. "/api/v2/information.php?api=services" })
        local slices = 0
        local got, res
        repeat
            got, res = s:wait(0.05)
            if got == false then
                slices = slices + 1
            end
        until got ~= false
        assert.equal(id, got)
        assert.equal(200, res.status)
        assert.is_true(slices >= 3, "slices: " .. slices)
        s:close()
        srv:control("config", { latency = 0 })
    end)

    it("lets Ctrl-C stop a call the server holds, within a second or two", function()
        srv:control("config", { latency = 30 })
        local code = string.format([[
            local c = assert(require("wolkvox").new { base_url = %q, token = %q, state_dir = false })
            io.write("started\n") io.flush()
            local ok, err = pcall(c.services, c)
            io.write("after: ", tostring(ok), " ", tostring(err), "\n") io.flush()
            os.exit(ok and 0 or 3)
        ]], srv.url, TOKEN)
        local out = os.tmpname()
        local go = out .. ".go"
        -- The shell starts the child in the background, sends SIGINT once
        -- file `go` is there (made below when the server holds the call; at
        -- most 10 s on) and reports how long the child took to end after it.
        local sh = string.format([[
            %s > %s 2>&1 &
            pid=$!
            n=0
            while [ ! -e %s ] && [ $n -lt 1000 ]; do sleep 0.01; n=$((n + 1)); done
            t0=$(date +%%s%%N)
            kill -INT $pid
            wait $pid
            rc=$?
            t1=$(date +%%s%%N)
            echo "rc=$rc took_ms=$(( (t1 - t0) / 1000000 ))"
        ]], support.lua_command(code), out, go)
        local p = io.popen("bash -c '" .. sh:gsub("'", "'\\''") .. "'")
        support.wait_for(function() return srv:control("stats").inflight > 0 end, 10,
            "the child's call to be held at the server")
        io.open(go, "w"):close()
        local summary = p:read("*a")
        p:close()
        os.remove(go)
        local f = io.open(out)
        local child = f:read("*a")
        f:close()
        os.remove(out)
        srv:control("config", { latency = 0 })
        local took = tonumber(summary:match("took_ms=(%d+)"))
        assert.matches("started", child)
        assert.matches("interrupted", child)
        assert.is_true(took ~= nil and took < 3000, summary .. child)
    end)
end)

describe("wolkvox.core refuses what would become a header line", function()
    it("control characters in user_agent, proxy, cainfo and capath", function()
        for _, k in ipairs { "user_agent", "proxy", "cainfo", "capath" } do
            assert.has_error(function() core.session { token = "t", [k] = "x\r\nX-Evil: 1" } end,
                "bad field '" .. k .. "' (control characters are not allowed)")
            assert.has_error(function() core.session { token = "t", [k] = "x\0y" } end,
                "bad field '" .. k .. "' (control characters are not allowed)")
        end
    end)

    it("NUL, CR/LF and quotes in a part's name, filename or content_type; NUL in its path", function()
        local s = core.session { token = "t" }
        local url = "http://127.0.0.1:9/x"
        local bad = {
            { name = "a\0b", data = "x" }, { name = "a\"b", data = "x" },
            { name = "f", filename = "a\0b", data = "x" }, { name = "f", filename = "a\r\nb", data = "x" },
            { name = "f", data = "x", content_type = "text/plain\r\nX: 1" },
            { name = "f", data = "x", content_type = 'text/plain; a="b"' },
            { name = "f", path = "/etc/hostname\0.wav" },
        }
        for _, part in ipairs(bad) do
            assert.has_error(function() s:start { url = url, method = "POST", parts = { part } } end)
        end
        assert.equal(0, s:inflight())
        -- A content type too long for its header line is refused, not cut.
        assert.has_error(function()
            s:start { url = url, method = "POST", body = "{}", content_type = ("x"):rep(300) }
        end)
        s:close()
    end)
end)

describe("wolkvox.core and proxies from the environment", function()
    it("calls this machine directly, whatever http_proxy says", function()
        local srv = support.fake { tokens = { TOKEN } }
        local code = string.format([[
            local s = require("wolkvox.core").session { token = %q, timeout = 5 }
            local res = s:request { url = %q }
            io.write(tostring(res.status), " ", tostring(res.error and res.error.reason), "\n")
        ]], TOKEN, srv.url .. "/api/v2/information.php?api=services")
        -- A proxy that is not there: going through it would fail to connect.
        local p = io.popen("http_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 no_proxy= "
            .. support.lua_command(code) .. " 2>&1")
        local out = p:read("*a")
        p:close()
        srv:stop()
        assert.equal("200 nil\n", out)
    end)
end)
