-- The cosocket transport inside a real nginx against upstreams that never
-- finish (issue #20): a body without Content-Length that never ends, a drip
-- of one byte at a time in the body and in the head, hundreds of MiB that can
-- never be JSON (plain, chunked, gzip).  The call's `timeout` holds for the
-- whole call; a body that cannot be JSON fails at its first impossible byte;
-- the worker keeps serving; the error log is not flooded (Debian's
-- lua-nginx-module logs every ngx.sleep(0) as a warning).  Tagged #nginx:
-- the LuaJIT pass runs it.
local cjson = require "cjson"
local socket = require "socket"
local hostile = require "hostile"
local nginx = require "nginx"

local TOKEN = "Hq4vN2-nginx-hostile-0123456789abcdef"
local MiB = 1024 * 1024
-- What Debian's module logs for each ngx.sleep(0) (no delayed-events patch).
local SLEEP0 = "ngx.sleep(0) called without delayed events patch"

local HTTP_BLOCK = [[
  init_by_lua_block {
    HOSTILE_TOKEN = %q
    function hostile_call(args)
      -- (a token of its own for each call: a call that timed out keeps one
      -- of its token's two slots for the server's own limit, 60 s)
      local c = assert(require("wolkvox").new { base_url = args.url, token = HOSTILE_TOKEN .. args.n,
        retries = 0, timeout = tonumber(args.timeout) })
      ngx.update_time()
      local t0 = ngx.now()
      local ok, data, err = pcall(c.services, c)
      ngx.update_time()
      local out = { elapsed = ngx.now() - t0 }
      c:close()
      if not ok then
        out.kind, out.message = "raised", tostring(data)
      elseif data == nil then
        out.kind, out.reason, out.message = err.kind, err.reason, err.message
      else
        out.kind, out.rows = "ok", #data
      end
      return out
    end
  }
]]

local LOCATIONS = [[
    location = /call { content_by_lua_block {
      ngx.say(require("cjson").encode(hostile_call(ngx.req.get_uri_args())))
    } }
    location = /ping { content_by_lua_block { ngx.say("pong") } }
]]

local HEAD = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
local OPEN = '{"code":"200","msg":"ok","data":['

-- Rows without end, a 64 KiB block every `pause` seconds (no Content-Length;
-- the server gives up after 60 s).
local function endless(pause)
    return function(c)
        local row = '{"service_id":"0123456789","name":"' .. string.rep("x", 100) .. '"},'
        local block = string.rep(row, math.floor(65536 / #row))
        if not c:send(HEAD .. OPEN) then
            return
        end
        local stop = os.time() + 60
        while os.time() < stop and c:send(block) do
            c:sleep(pause)
        end
    end
end

-- `first`, then one byte of `text` (repeated) every `pause` seconds, for up
-- to 60 s.
local function drip(first, text, pause)
    return function(c)
        if not c:send(first) then
            return
        end
        local stop, i = os.time() + 60, 0
        while os.time() < stop do
            i = i % #text + 1
            if not c:send(text:sub(i, i)) then
                return
            end
            c:sleep(pause)
        end
    end
end

local function a_filler(_, n)
    return string.rep("a", n)
end

-- A gzip body that inflates to `bytes` bytes of "a" (made once, by gzip(1)).
local function gzip_of_a(bytes)
    local p = assert(io.popen("env -u LD_PRELOAD sh -c 'head -c " .. bytes .. " /dev/zero | tr \"\\0\" a | gzip -1 -c'",
        "r"))
    local z = p:read("*a")
    p:close()
    return z
end

describe("hostile upstreams, ngx transport #nginx", function()
    if not nginx.need() then
        return
    end
    local server
    setup(function()
        server = nginx.start { workers = 1, http = string.format(HTTP_BLOCK, TOKEN), locations = LOCATIONS }
    end)
    teardown(function()
        if server then
            server:stop()
        end
    end)

    -- Serve `response` from a hostile server and make one call through nginx
    -- with `timeout`: the call's outcome (kind, reason, message, elapsed as
    -- nginx measured it), the wall time seen from here, and what the error
    -- log gained meanwhile.  `during(h)` runs while the call is in flight.
    local calls = 0
    local function call(response, timeout, during)
        calls = calls + 1
        local h = hostile.start { responses = { response } }
        local log0 = server:log_size()
        local t0 = socket.gettime()
        local pipe = assert(io.popen("env -u LD_PRELOAD curl -s -m 60 '" .. server.url .. "/call?n=" .. calls
            .. "&timeout=" .. timeout .. "&url=" .. h.url .. "'", "r"))
        local seen = during and during(h)
        local body = pipe:read("*a")
        pipe:close()
        local wall = socket.gettime() - t0
        h:stop()
        local ok, out = pcall(cjson.decode, body)
        assert(ok and type(out) == "table", "no answer from nginx after " .. wall .. " s: " .. tostring(body)
            .. "\n" .. server:errors():sub(-2000))
        local log = server:errors():sub(log0 + 1) -- what this call added
        local grew = server:log_size() - log0
        local label = cjson.encode(out) .. " wall " .. string.format("%.2f", wall) .. " s"
        return out, wall, grew, label, log, seen
    end

    -- The error log gained no ngx.sleep(0) warning, and little else.
    local function quiet(log, grew, label)
        assert.is_nil(log:find(SLEEP0, 1, true), "ngx.sleep(0) warnings in the error log: " .. label)
        assert.is_true(grew < 64 * 1024, "the error log grew by " .. grew .. " bytes: " .. label)
    end

    it("ends a body without Content-Length that never ends at the call's timeout, the worker serving meanwhile",
        function()
            local out, wall, grew, label, log, ping = call(endless(0.02), 3, function()
                socket.sleep(1)
                local t = socket.gettime()
                local status, body = server:get("/ping", 10)
                return { status = status, body = body, took = socket.gettime() - t }
            end)
            assert.equal("transport", out.kind, label)
            assert.equal("timeout", out.reason, label)
            -- 3 s asked; loose bounds for a loaded machine (it ran 49 s).
            assert.is_true(out.elapsed < 20 and wall < 20, label)
            assert.is_true(out.elapsed >= 2.5, label)
            assert.equal("pong\n", ping.body, "the worker did not serve /ping during the call")
            assert.is_true(ping.took < 5, "/ping took " .. ping.took .. " s during the call")
            quiet(log, grew, label)
        end)

    it("ends a slow drip in the body at the call's timeout", function()
        local out, wall, grew, label, log = call(drip(HEAD .. OPEN, '{"a":"b"},', 0.2), 2)
        assert.equal("transport", out.kind, label)
        assert.equal("timeout", out.reason, label)
        assert.is_true(out.elapsed < 15 and wall < 15, label)
        quiet(log, grew, label)
    end)

    it("ends a slow drip in the head at the call's timeout", function()
        local out, wall, grew, label, log = call(drip("HTTP/1.1 200 OK\r\nX-Drip: ", "a", 0.2), 2)
        assert.equal("transport", out.kind, label)
        assert.equal("timeout", out.reason, label)
        assert.is_true(out.elapsed < 15 and wall < 15, label)
        quiet(log, grew, label)
    end)

    it("fails 300 MiB of 'a' without Content-Length as decode at once, well under the timeout", function()
        local out, wall, grew, label, log = call(hostile.stream(300 * MiB, { gen = a_filler }), 30)
        assert.equal("decode", out.kind, label)
        assert.matches("at byte 1", out.message, 1, true)
        assert.is_true(out.elapsed < 10 and wall < 10, label)
        quiet(log, grew, label)
    end)

    it("fails 300 MiB of 'a', chunked, as decode at once", function()
        local out, wall, grew, label, log = call(hostile.stream(300 * MiB, { gen = a_filler, chunked = true }), 30)
        assert.equal("decode", out.kind, label)
        assert.is_true(out.elapsed < 10 and wall < 10, label)
        quiet(log, grew, label)
    end)

    it("fails a drip that cannot be JSON as decode, without waiting for the rest or the timeout", function()
        local out, wall, grew, label, log = call(drip(HEAD, "a", 0.2), 20)
        assert.equal("decode", out.kind, label)
        assert.matches("at byte 1", out.message, 1, true)
        assert.is_true(out.elapsed < 10 and wall < 10, label)
        quiet(log, grew, label)
    end)

    it("fails a gzip answer of 100 MiB of 'a' as decode at once", function()
        local z = gzip_of_a(100 * MiB)
        local out, wall, grew, label, log = call(hostile.http(200, { ["Content-Type"] = "application/json",
            ["Content-Encoding"] = "gzip" }, z), 30)
        assert.equal("decode", out.kind, label)
        assert.is_true(out.elapsed < 10 and wall < 10, label)
        quiet(log, grew, label)
    end)

    it("still decodes a good answer, whole or one byte at a time within the timeout", function()
        local body = OPEN .. '{"service_id":"1","name":"a"},{"service_id":"2","name":"b"}]}'
        local out, _, grew, label, log = call(hostile.json(200, body), 5)
        assert.equal("ok", out.kind, label)
        assert.equal(2, out.rows, label)
        quiet(log, grew, label)
        out, _, grew, label, log = call(function(c)
            c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. #body
                .. "\r\nConnection: close\r\n\r\n")
            for i = 1, #body do
                c:send(body:sub(i, i))
                c:sleep(0.005)
            end
        end, 10)
        assert.equal("ok", out.kind, label)
        assert.equal(2, out.rows, label)
        quiet(log, grew, label)
    end)
end)
