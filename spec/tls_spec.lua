-- TLS with verification, both transports: nginx terminates TLS in front of
-- the fake with a certificate the client trusts, and another one it does not.
-- Tagged #nginx (nginx is the TLS server here).
local support = require "support"
local nginx = require "nginx"
local wolkvox = require "wolkvox"

-- A self-signed certificate for 127.0.0.1 in `dir`; returns the cert and key
-- paths.  (nginx's own check wants the address as a DNS name too.)
local function certificate(dir, name)
    local crt, key = dir .. "/" .. name .. ".crt", dir .. "/" .. name .. ".key"
    local ok = os.execute("env -u LD_PRELOAD openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "
        .. key .. " -out " .. crt .. " -subj /CN=127.0.0.1"
        .. " -addext subjectAltName=IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost >/dev/null 2>&1")
    assert(ok, "openssl could not make a certificate")
    return crt, key
end

describe("TLS #nginx", function()
    if not nginx.need() then
        return
    end
    local srv, proxy, trusted, other, good_url, bad_url

    setup(function()
        srv = support.fake()
        local dir = support.tmpdir()
        local tkey, okey
        trusted, tkey = certificate(dir, "trusted")
        other, okey = certificate(dir, "other")
        -- Two TLS servers in front of the fake, then the Lua locations.
        local p1, p2 = nginx.free_port(), nginx.free_port()
        good_url, bad_url = "https://127.0.0.1:" .. p1, "https://127.0.0.1:" .. p2
        local upstream = srv.url:gsub("^http://", "")
        local http = string.format([[
  lua_ssl_trusted_certificate %s;
  server { listen 127.0.0.1:%d ssl; ssl_certificate %s; ssl_certificate_key %s;
    location / { proxy_pass http://%s; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:%d ssl; ssl_certificate %s; ssl_certificate_key %s;
    location / { proxy_pass http://%s; } }
]], trusted, p1, trusted, tkey, upstream, p2, other, okey, upstream)
        local locations = string.format([[
    location = /good { content_by_lua_block {
      local c = assert(require("wolkvox").new { base_url = %q, token = %q })
      local rows, err = c:services()
      ngx.say(rows and rows[1].licenses or tostring(err))
    } }
    location = /bad { content_by_lua_block {
      local c = assert(require("wolkvox").new { base_url = %q, token = %q })
      local rows, err = c:services()
      ngx.say(rows and rows[1].licenses or (err.kind .. " " .. err.reason .. " " .. err.attempts))
    } }
]], good_url, srv.token, bad_url, srv.token)
        proxy = nginx.start { http = http, locations = locations }
    end)
    teardown(function()
        if proxy then
            proxy:stop()
        end
        srv:stop()
    end)
    before_each(function() srv:control("reset") end)

    it("libcurl: talks to a server whose certificate it trusts (cainfo)", function()
        local c = assert(wolkvox.new { base_url = good_url, token = srv.token, cainfo = trusted, state_dir = false })
        local rows = assert(c:services())
        assert.equal("25", rows[1].licenses)
        assert.equal("<redacted>", srv:log()[1].headers["wolkvox-token"])
        c:close()
    end)

    it("libcurl: refuses a certificate it does not trust, without retrying", function()
        for _, opts in ipairs { { base_url = bad_url, cainfo = trusted }, { base_url = good_url } } do
            opts.token, opts.state_dir = srv.token, false
            local c = assert(wolkvox.new(opts))
            local rows, err = c:services()
            assert.is_nil(rows)
            assert.equal("transport", err.kind)
            assert.equal("tls", err.reason)
            assert.is_false(err.retryable)
            assert.equal(1, err.attempts)
            assert.equal(0, c:stats().calls)     -- nothing was sent
            c:close()
        end
        assert.equal(0, #srv:log())
    end)

    it("libcurl: trusts the certificates of a capath directory, and only those", function()
        local dir = support.tmpdir()
        assert(os.execute("cp " .. trusted .. " " .. dir .. "/trusted.pem && env -u LD_PRELOAD openssl rehash "
            .. dir .. " >/dev/null 2>&1"), "openssl rehash failed")
        local c = assert(wolkvox.new { base_url = good_url, token = srv.token, capath = dir, state_dir = false })
        local rows, err = c:services()
        assert.is_table(rows, tostring(err))
        assert.equal("25", rows[1].licenses)
        c:close()
        c = assert(wolkvox.new { base_url = bad_url, token = srv.token, capath = dir, state_dir = false })
        rows, err = c:services()
        assert.is_nil(rows)
        assert.equal("tls", err.reason)
        c:close()
        assert.equal(1, #srv:log())
    end)

    it("libcurl: verify = false (test servers only) skips the check", function()
        local c = assert(wolkvox.new { base_url = bad_url, token = srv.token, verify = false, state_dir = false })
        assert.equal("25", c:services()[1].licenses)
        c:close()
    end)

    it("cosockets: verify against lua_ssl_trusted_certificate", function()
        local _, body = proxy:get("/good")
        assert.equal("25\n", body, proxy:errors())
        _, body = proxy:get("/bad")
        assert.equal("transport tls 1\n", body)
        assert.equal(1, #srv:log())
    end)
end)
