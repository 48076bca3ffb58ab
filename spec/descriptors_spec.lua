-- Descriptors: what other programs inherit from a process that uses
-- lua-wolkvox, and a fake server in a process with more than 1024 files
-- open (LuaSocket's select refuses such descriptors; core.poll does not).
local core = require "wolkvox.core"
local support = require "support"

describe("core.poll", function()
    it("refuses what is not a list of descriptors, or an absurd timeout", function()
        assert.has_error(function() core.poll(nil, {}, 0) end)
        assert.has_error(function() core.poll({}, "x", 0) end)
        assert.has_error(function() core.poll({ "x" }, {}, 0) end,
            "bad descriptor at index 1 (a non-negative integer expected)")
        assert.has_error(function() core.poll({ -1 }, {}, 0) end)
        assert.has_error(function() core.poll({ 1.5 }, {}, 0) end)
        assert.has_error(function() core.poll({}, {}, -1) end)
        assert.has_error(function() core.poll({}, {}, 0 / 0) end)
        assert.has_error(function() core.poll({}, {}, 1e9) end)
    end)

    it("says which descriptors can be read or written, and ends at the timeout", function()
        local socket = require "socket"
        local server = assert(socket.bind("127.0.0.1", 0))
        local _, port = server:getsockname()
        local a = assert(socket.connect("127.0.0.1", port))
        local b = assert(server:accept())
        -- Nothing to read yet; both ends can be written.
        local r, w = core.poll({ a:getfd(), b:getfd() }, { a:getfd() }, 0)
        assert.same({}, r)
        assert.same({ a:getfd() }, w)
        r = core.poll({ b:getfd() }, {}, 0.2)   -- nothing comes: the timeout ends it
        assert.same({}, r)
        a:send("x")
        r = core.poll({ a:getfd(), b:getfd() }, {}, 5)
        assert.same({ b:getfd() }, r)
        -- A closed peer is readable: the read then says so.
        a:close()
        assert.same({ b:getfd() }, (core.poll({ b:getfd() }, {}, 5)))
        assert.equal("x", b:receive(1))
        local none, why = b:receive(1)
        assert.is_nil(none)
        assert.equal("closed", why)
        b:close()
        server:close()
    end)
end)

describe("a fake server in a process with more than 1024 files open", function()
    it("serves connections whose descriptors select could not wait for", function()
        local dir = support.tmpdir()
        local ready = dir .. "/ready"
        local code = string.format([[
            local files = {}
            for i = 1, 1100 do
                local f = io.open("/dev/null", "r")
                if not f then
                    io.write("could not open ", i, " files\n")
                    os.exit(3)
                end
                files[i] = f
            end
            require("wolkvox.fake").serve { port = 0, lifetime = 60, watch_stdin = true,
                tokens = { "fd-token-0123456789" },
                on_ready = function(url)
                    local f = assert(io.open(%q .. ".tmp", "w"))
                    f:write(url)
                    f:close()
                    os.rename(%q .. ".tmp", %q)
                end }
        ]], ready, ready, ready)
        -- Raise this child's soft limit to its hard one (no privilege needed).
        local cmd = "exec env -u LD_PRELOAD sh -c 'ulimit -n 4096 2>/dev/null || ulimit -n hard; "
            .. support.lua_command(code):gsub("'", "'\\''") .. "'"
        local pipe = assert(io.popen(cmd .. " >" .. dir .. "/out 2>&1", "w"))
        local url
        support.wait_for(function()
            url = support.slurp(ready)
            return url or (support.slurp(dir .. "/out") or ""):match("could not open")
        end, 10, "the fake to start (or to say it could not open its descriptors)")
        if not url then
            pipe:close()
            local out = support.slurp(dir .. "/out") or ""
            if out:match("could not open") then
                pending("this machine's hard limit on open files is below 1100: " .. out)
                return
            end
            error("the fake did not start: " .. out)
        end
        local wolkvox = require "wolkvox"
        local c = assert(wolkvox.new { base_url = url, token = "fd-token-0123456789",
            state_dir = support.tmpdir(), retries = 0 })
        -- Two calls at once: two connections, each above descriptor 1024 there.
        local s = core.session { token = "fd-token-0123456789", max_conns = 2 }
        local q = url .. "/api/v2/information.php?api=services"
        s:start { url = q }
        s:start { url = q }
        for _ = 1, 2 do
            local _, res = s:wait()
            assert.equal(200, res.status)
        end
        s:close()
        local rows, err = c:services()
        assert.is_table(rows, tostring(err))
        assert.is_true(#rows > 0)
        c:close()
        pipe:close()
        assert.equal("", support.slurp(dir .. "/out"))
    end)
end)

describe("what a program started by a lua-wolkvox user inherits", function()
    it("no connection to wolkvox: libcurl's sockets are closed on exec", function()
        local srv = support.fake()
        local port = tonumber(srv.url:match(":(%d+)$"))
        local c = support.client(srv)
        assert.is_table(c:services())    -- the connection stays open, kept alive
        assert.is_true(support.not_inherited(port, "the fake server") >= 1)
        c:close()
        srv:stop()
    end)
end)
