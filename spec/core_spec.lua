-- wolkvox.core sessions over loopback against the fake server.
local core = require "wolkvox.core"
local support = require "support"

local TOKEN = "test-token"

describe("wolkvox.core session", function()
    local srv, url

    setup(function()
        srv = support.fake { tokens = { TOKEN, "second-token" } }
        url = srv.url .. "/api/v2/information.php?api=services"
    end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    local function session(extra)
        local o = { token = TOKEN, timeout = 5 }
        for k, v in pairs(extra or {}) do
            o[k] = v
        end
        return core.session(o)
    end

    it("sends the token header and returns the decoded answer", function()
        local s = session()
        local res = s:request { url = url }
        assert.equal(200, res.status)
        assert.equal("25", res.value.data[1].licenses)
        assert.is_true(res.bytes > 100)
        assert.is_number(res.time)
        assert.matches("^application/json", res.content_type)
        local log = srv:log()
        assert.equal(1, #log)
        assert.equal("ok", log[1].token)
        assert.equal("<redacted>", log[1].headers["wolkvox-token"])
        assert.matches("gzip", log[1].headers["accept-encoding"])
        s:close()
    end)

    it("reuses its connection for the next call", function()
        local s = session()
        local a = s:request { url = url }
        local b = s:request { url = url }
        assert.equal(1, a.connects)
        assert.equal(0, b.connects)
        local log = srv:log()
        assert.equal(log[1].conn, log[2].conn)
        assert.equal(log[1].port, log[2].port)
        assert.equal(1, s:stats().connects)
        assert.equal(2, s:stats().requests)
        s:close()
    end)

    it("keeps two transfers in flight and reports each one", function()
        srv:control("config", { latency = 0.3 })
        local s = session()
        local id1 = s:start { url = url }
        local id2 = s:start { url = srv.url .. "/api/v2/information.php?api=routing_points" }
        assert.equal(2, s:inflight())
        assert.has_error(function() s:start { url = url } end, "no free connection: 2 transfers already in flight")
        local seen = {}
        for _ = 1, 2 do
            local id, res = s:wait()
            assert.equal(200, res.status)
            seen[id] = res.value.data
        end
        assert.is_nil(s:wait())
        assert.equal("25", seen[id1][1].licenses)
        assert.equal("IVR Principal", seen[id2][1].rp_name)
        local log = srv:log()
        assert.equal(2, log[2].inflight)      -- both were at the server together
        assert.equal(2, srv:control("stats").max_inflight)
        s:close()
    end)

    it("runs two sessions, with different tokens, side by side", function()
        local a, b = session(), core.session { token = "second-token" }
        a:start { url = url }
        b:start { url = srv.url .. "/api/v2/information.php?api=routing_points" }
        local _, ra = a:wait()
        local _, rb = b:wait()
        assert.equal("25", ra.value.data[1].licenses)
        assert.equal("IVR Principal", rb.value.data[1].rp_name)
        a:close()
        -- Closing one leaves the other working.
        assert.equal(200, b:request({ url = url }).status)
        b:close()
        local log = srv:log()
        assert.equal(3, #log)
        assert.are_not.equal(log[1].conn, log[2].conn)
    end)

    it("sends bodies with the method asked for", function()
        local s = session()
        local base = srv.url .. "/api/v2/configuration.php?api="
        s:request { method = "POST", url = base .. "add_ip", body = '{"ip":"10.1.1.1"}' }
        s:request { method = "DELETE", url = base .. "remove_ip", body = '{"ip":"10.1.1.1"}' }
        s:request { method = "PUT", url = srv.url .. "/api/v2/campaign.php?api=start&campaign_id=7" }
        s:request { method = "GET", url = srv.url .. "/api/v2/whatsapp.php?api=list_templates",
            body = '{"connector_id":"3"}', content_type = "application/json; charset=utf-8" }
        local log = srv:log()
        assert.equal("POST", log[1].method)
        assert.equal('{"ip":"10.1.1.1"}', log[1].body)
        assert.equal("application/json", log[1].headers["content-type"])
        assert.equal("DELETE", log[2].method)
        assert.equal('{"ip":"10.1.1.1"}', log[2].body)
        assert.equal("PUT", log[3].method)
        assert.equal("", log[3].body)
        assert.equal("0", log[3].headers["content-length"])
        assert.equal("GET", log[4].method)
        assert.equal('{"connector_id":"3"}', log[4].body)
        assert.equal("application/json; charset=utf-8", log[4].headers["content-type"])
        -- A GET after bodies is a plain GET again.
        s:request { url = url }
        log = srv:log()
        assert.equal("GET", log[5].method)
        assert.equal("", log[5].body)
        s:close()
    end)

    it("uploads multipart parts from memory and from a file", function()
        local path = os.tmpname()
        local f = assert(io.open(path, "wb"))
        f:write("RIFF-audio-bytes")
        f:close()
        local s = session()
        local res = s:request { method = "POST", url = srv.url .. "/api/v2/wolkvox_storage.php?api=upload_files",
            parts = {
                { name = "file", path = path, filename = "greeting.wav", content_type = "audio/wav" },
                { name = "path", data = "prompts/" },
            } }
        os.remove(path)
        assert.equal(200, res.status)
        local entry = srv:log()[1]
        assert.matches("^multipart/form%-data; boundary=", entry.headers["content-type"])
        assert.truthy(entry.body:find('name="file"; filename="greeting.wav"', 1, true))
        assert.truthy(entry.body:find("Content-Type: audio/wav", 1, true))
        assert.truthy(entry.body:find("RIFF-audio-bytes", 1, true))
        assert.truthy(entry.body:find("prompts/", 1, true))
        s:close()
    end)

    it("refuses request tables a caller got wrong, before sending", function()
        local s = session()
        assert.has_error(function() s:request { url = "ftp://x/y" } end)
        assert.has_error(function() s:request { url = url .. " x" } end)
        assert.has_error(function() s:request { url = url, method = "TRACE" } end)
        assert.has_error(function() s:request { url = url, headers = { "X-A: 1\r\nX-B: 2" } } end)
        assert.has_error(function() s:request { url = url, headers = { "wolkvox-token: other" } } end)
        assert.has_error(function() s:request { url = url, body = "x", parts = { { name = "a", data = "b" } } } end)
        assert.has_error(function() s:request { url = url, parts = { { name = "a" } } } end)
        assert.has_error(function() s:request { url = url, body = 5 } end)
        assert.equal(0, #srv:log())
        -- Extra headers that are well formed do go out.
        s:request { url = url, headers = { "wolkvox_server: 0031" } }
        assert.equal("0031", srv:log()[1].headers["wolkvox_server"])
        s:close()
    end)

    it("refuses bad options when the session is made", function()
        assert.has_error(function() core.session {} end)
        assert.has_error(function() core.session { token = "" } end)
        assert.has_error(function() core.session { token = "abc\r\nX-Evil: 1" } end)
        assert.has_error(function() core.session { token = "t", timeout = "5" } end)
        assert.has_error(function() core.session { token = "t", timeout = 0 } end)
        assert.has_error(function() core.session { token = "t", max_conns = 3 } end)
        assert.has_error(function() core.session { token = "t", proxy = 1 } end)
        assert.has_error(function() core.session("t") end)
        -- Only what the table holds counts: __index is not consulted.
        local tricky = setmetatable({}, { __index = function() return "made-up" end })
        assert.has_error(function() core.session(tricky) end, "bad field 'token' (non-empty string expected)")
    end)

    it("never shows the token in tostring, results or errors", function()
        local secret = "s3cr3t-token-value-0123456789"
        local s = core.session { token = secret }
        assert.not_matches(secret, tostring(s), 1, true)
        local res = s:request { url = url }
        assert.equal(403, res.status)
        for _, str in ipairs(support.strings(res)) do
            assert.is_nil(str:find(secret, 1, true))
        end
        s:close()
        assert.matches("closed", tostring(s))
    end)

    it("masks the token in the snippet of a page that echoes the request", function()
        support.faults(srv, { { echo = true } })
        local s = session()
        local res = s:request { url = url }
        assert.equal(502, res.status)
        assert.is_string(res.decode_error)
        assert.matches("wolkvox%-token: %*%*%*", res.snippet)
        assert.is_nil(res.snippet:find(TOKEN, 1, true))
        s:close()
    end)

    it("reports transport failures as data, with a reason", function()
        local s = session { timeout = 1, connect_timeout = 1 }
        -- Nothing listens on port 1 of loopback.
        local res = s:request { url = "http://127.0.0.1:1/api/v2/information.php?api=services" }
        assert.equal("transport", res.error.kind)
        assert.equal("connect", res.error.reason)
        assert.is_false(res.error.sent)
        -- TLS spoken to a plain HTTP port.
        res = s:request { url = (url:gsub("^http:", "https:")) }
        assert.equal("tls", res.error.reason)
        -- A reset, an empty reply, a cut body, a timeout.
        support.faults(srv, { { reset = true }, { close = true }, { cut = 10 }, { delay = 3 } })
        res = s:request { url = url }
        assert.equal("reset", res.error.reason)
        assert.is_true(res.error.sent)
        res = s:request { url = url }
        assert.equal("reset", res.error.reason)
        res = s:request { url = url }
        assert.equal("partial", res.error.reason)
        res = s:request { url = url }
        assert.equal("timeout", res.error.reason)
        assert.matches("timed out", res.error.message)
        s:close()
    end)

    it("caps the answer size, with and without a Content-Length", function()
        support.faults(srv, { { big = 50000 }, { big = 50000, chunked = true } })
        local s = session { max_bytes = 10000 }
        local res = s:request { url = url }
        assert.equal("too_large", res.error.kind)
        res = s:request { url = url }
        assert.equal("too_large", res.error.kind)
        assert.matches("10000%-byte limit", res.error.message)
        -- The session is still usable.
        res = s:request { url = url }
        assert.equal(200, res.status)
        s:close()
    end)

    it("decodes gzip answers and keeps a Retry-After header", function()
        support.faults(srv, { { gzip = true, retry_after = "7" } })
        local s = session()
        local res = s:request { url = url }
        assert.equal(200, res.status)
        assert.equal("25", res.value.data[1].licenses)
        assert.equal("7", res.retry_after)
        assert.is_true(res.wire_bytes < res.bytes)
        s:close()
    end)

    it("does not follow redirects", function()
        support.faults(srv, { { redirect = url } })
        local s = session()
        local res = s:request { url = url }
        assert.equal(302, res.status)
        assert.equal(1, #srv:log())
        s:close()
    end)

    it("can return the raw body instead of decoding it", function()
        local s = session()
        local res = s:request { url = url, decode = false }
        assert.is_nil(res.value)
        assert.matches('^{"code":"200"', res.body)
        s:close()
    end)

    it("closes idempotently and refuses work afterwards", function()
        local s = session()
        s:request { url = url }
        s:close()
        s:close()
        assert.is_true(s:closed())
        assert.equal(0, s:capacity())
        assert.is_nil(s:wait())
        assert.has_error(function() s:request { url = url } end, "session is closed")
    end)

    it("is closed by the collector and by to-be-closed variables", function()
        local s = session()
        s:start { url = url }  -- left in flight on purpose
        s = nil -- luacheck: ignore 311
        collectgarbage()
        collectgarbage()
        if _VERSION == "Lua 5.4" then
            local chunk = load([[
                local core, opts = ...
                local s <close> = core.session(opts)
                return s
            ]])
            local closed = chunk(core, { token = TOKEN })
            assert.is_true(closed:closed())
        end
    end)
end)
