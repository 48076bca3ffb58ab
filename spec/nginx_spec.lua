-- lua-wolkvox inside a real nginx (Debian's, with lua-nginx-module): the
-- cosocket transport, the worker kept free while a call waits, the shared
-- dict limiter across workers, the phases without cosockets.  Tagged #nginx:
-- spec/run runs it in the LuaJIT pass, where the 5.1-ABI build exists.
local socket = require "socket"
local support = require "support"
local nginx = require "nginx"

-- The names in directory `dir`, one a line (hidden ones too).
local function listing(dir)
    local code, out = support.sh("ls -A " .. support.q(dir))
    assert.equal(0, code, out)
    return out
end

-- Handlers share one helper, defined in init_by_lua: a client of the fake.
local function http_block(srv)
    return string.format([[
  init_by_lua_block {
    function wv_client(extra)
      local o = { base_url = %q, token = %q, retry_base = 0.01 }
      for k, v in pairs(extra or {}) do o[k] = v end
      return assert(require("wolkvox").new(o))
    end
    wv_shared = wv_client()   -- one client for every request of the worker
    function wv_say(rows, err)
      if rows then ngx.say("ok ", #rows) else ngx.say(err.kind, " ", err.reason or "-", " ", tostring(err)) end
    end
  }
]], srv.url, srv.token)
end

local LOCATIONS = [[
    location = /rp { content_by_lua_block {
      local rows, err = wv_client():routing_points()
      if not rows then ngx.say("error ", tostring(err)) return end
      ngx.say(#rows, "|", rows[2].rp_name, "|", ngx.worker.pid())
    } }
    location = /report { content_by_lua_block {
      local rows, meta = wv_client { max_rows = 500 }:cdr_1 { from = "2026-01-01", to = "2026-03-31" }
      if not rows then ngx.say("error ", tostring(meta)) return end
      local seen, dup = {}, 0
      for _, r in ipairs(rows) do
        if seen[r.conn_id] then dup = dup + 1 end
        seen[r.conn_id] = true
      end
      ngx.say(#rows, "|", dup, "|", meta.calls, "|", meta.truncated, "|", ngx.worker.pid())
    } }
    location = /report2 { content_by_lua_block {
      local rows, meta = wv_client():cdr_1 { from = "2026-01-01", to = "2026-02-28" }
      if not rows then ngx.say("error ", tostring(meta)) return end
      ngx.say(#rows, "|", meta.calls, "|", ngx.worker.pid())
    } }
    location = /shared { content_by_lua_block {
      local n = 0
      for _ in wv_shared:each("cdr_1", { from = "2026-01-01", to = "2026-01-20" }) do
        n = n + 1
        if n == 50 then break end   -- leaves calls in flight, in this request only
      end
      local rows, meta = wv_shared:cdr_1 { from = "2026-01-01", to = "2026-02-28" }
      ngx.say(rows and #rows or tostring(meta), "|", n)
    } }
    location = /slow { content_by_lua_block {
      wv_say(wv_client { retries = 0 }:services())
    } }
    location = /slow_blocking { content_by_lua_block {
      wv_say(wv_client { retries = 0, transport = "curl", state_dir = false }:services())
    } }
    location = /gzrows { content_by_lua_block {
      local rows, meta = wv_client { retries = 0 }:cdr_1 { from = "2026-01-01", to = "2026-01-31" }
      if not rows then ngx.say("error ", tostring(meta)) return end
      local sum = 0
      for _, r in ipairs(rows) do sum = sum + tonumber(r.conn_id) end
      ngx.say(#rows, "|", sum, "|", meta.bytes, "|", require("wolkvox.transport.gc_hold").open(), "|",
        tostring(collectgarbage("isrunning")))
    } }
    location = /gc_cut { content_by_lua_block {
      local rows, err = wv_client { retries = 0 }:cdr_1 { from = "2026-01-01", to = "2026-01-31" }
      ngx.say(rows and "rows" or err.kind .. " " .. tostring(err.reason), "|",
        require("wolkvox.transport.gc_hold").open(), "|", tostring(collectgarbage("isrunning")))
    } }
    location = /gc_hold { content_by_lua_block {
      -- A hold its request never releases: the timer does, at the deadline plus a second.
      local gc_hold = require "wolkvox.transport.gc_hold"
      collectgarbage()
      local h = gc_hold.start(ngx.now() + 0.2, ngx.now, ngx.timer.at, ngx.sleep)
      ngx.say(h and "held" or "none", " ", tostring(collectgarbage("isrunning")))
      ngx.sleep(2)
      ngx.say(gc_hold.open(), " ", tostring(collectgarbage("isrunning")))
    } }
    location = /into { content_by_lua_block {
      local n, err = wv_client():export("cdr_1", { from = "2026-01-01", to = "2026-01-02" },
        { into = "/tmp/wolkvox-nginx-into.db" })
      ngx.say(n and "loaded" or (err.kind .. "|" .. err.message))
    } }
    location = /export { content_by_lua_block {
      -- c:export to a file from a worker: ?fmt=csv|ndjson&out=PATH&to=DATE[&max_rows=N][&spool=DIR]
      -- (one call at a time, no retry).
      local a = ngx.req.get_uri_args()
      local n, meta = wv_client { retries = 0, max_concurrent = 1, max_rows = tonumber(a.max_rows),
        spool_dir = a.spool }:export("cdr_1",
        { from = "2026-01-01", to = a.to }, { output = a.out, format = a.fmt })
      if n then ngx.say("ok ", n, " ", #meta.windows, " ", meta.calls) else ngx.say(meta.kind, "|", tostring(meta)) end
    } }
    location = /rows_fn { content_by_lua_block {
      -- An export of 16 days whose rows go to a function: no file.
      local n = 0
      local ok, meta = wv_client():export("cdr_1", { from = "2026-01-01", to = "2026-01-16" },
        { on_rows = function(rows) n = n + #rows end })
      ngx.say(ok and ("ok " .. n) or (meta.kind .. "|" .. tostring(meta)))
    } }
    location = /sync_state { content_by_lua_block {
      -- A sync remembering where it got in ?state=PATH.
      local ok, meta = wv_client():sync("cdr_1", { since = "2026-01-01", ["until"] = "2026-01-16",
        state = ngx.var.arg_state },
        { on_rows = function() end })
      ngx.say(ok and "ok" or (meta.kind .. "|" .. tostring(meta)))
    } }
    location = /ping { content_by_lua_block { ngx.say("pong") } }
    location = /decoder { content_by_lua_block { ngx.say(require("wolkvox.transport.ngx").decoder) } }
    location = /phase {
      set_by_lua_block $wv_phase {
        local rows, err = wv_client():services()
        return rows and "ok" or (err.kind .. " " .. err.reason .. ": " .. err.message)
      }
      return 200 $wv_phase;
    }
    location = /timer { content_by_lua_block {
      ngx.shared.results:delete("timer")
      ngx.timer.at(0, function()
        local rows, err = wv_client():services()
        ngx.shared.results:set("timer", rows and rows[1].licenses or tostring(err))
      end)
      for _ = 1, 200 do
        local v = ngx.shared.results:get("timer")
        if v then ngx.say("timer ", v) return end
        ngx.sleep(0.02)
      end
      ngx.say("timer never answered")
    } }
    location = /fault { content_by_lua_block {
      wv_say(wv_client { retries = 0, timeout = 1, max_bytes = 20000 }:routing_points())
    } }
    location = /write { content_by_lua_block {
      local data, meta = wv_client():add_ip { ip = "203.0.113.5", description = "from nginx" }
      ngx.say(data and ("ok " .. meta.status) or tostring(meta))
    } }
    location = /quota { content_by_lua_block {
      local q = wv_client():quota { measure = false }
      ngx.say(q.used)
    } }
]]

describe("inside nginx #nginx", function()
    local srv, ngx1
    if not nginx.suite(nil, function(s) return { workers = 1, http = http_block(s), locations = LOCATIONS } end,
        function(s, n) srv, ngx1 = s, n end) then
        return
    end
    before_each(function() srv:control("reset") end)

    it("answers a location that calls c:routing_points()", function()
        assert.equal("wolkvox.core\n", select(2, ngx1:get("/decoder")))
        local status, body = ngx1:get("/rp")
        assert.equal(200, status, ngx1:errors())
        assert.matches("^4|Ventas Bogotá|%d+", body)
        local log = srv:log()
        assert.equal(1, #log)
        assert.equal("<redacted>", log[1].headers["wolkvox-token"])
        assert.matches("gzip", log[1].headers["accept-encoding"])
    end)

    it("runs a windowed report with truncation, two calls in flight, over cosockets", function()
        srv:control("config", { max_rows = 500, latency = 0.05 })
        local status, body = ngx1:get("/report")
        assert.equal(200, status, ngx1:errors())
        local rows, dup, calls, truncated = body:match("^(%d+)|(%d+)|(%d+)|(%d+)|")
        assert.equal("9000", rows, body)            -- 90 days at 100 rows a day
        assert.equal("0", dup)
        assert.is_true(tonumber(truncated) > 0)
        local log = srv:log()
        assert.equal(tonumber(calls), #log)
        assert.equal(2, srv:control("stats").max_inflight)
        -- Connections come back from the keep-alive pool.
        local conns = {}
        for _, e in ipairs(log) do
            conns[e.conn] = true
        end
        local n = 0
        for _ in pairs(conns) do
            n = n + 1
        end
        assert.is_true(n <= 4 and n < #log, n .. " connections for " .. #log .. " calls")
    end)

    it("keeps the calls of concurrent requests apart when they share one client", function()
        srv:control("config", { latency = 0.1 })
        local pipes = {}
        for i = 1, 3 do
            pipes[i] = assert(io.popen("env -u LD_PRELOAD curl -s " .. ngx1.url .. "/shared", "r"))
        end
        for i = 1, 3 do
            assert.equal("5900|50\n", pipes[i]:read("*a"), ngx1:errors())
            pipes[i]:close()
        end
        assert.is_nil(ngx1:errors():find("[error]", 1, true))
    end)

    it("keeps the worker serving other requests while a call waits on a slow upstream", function()
        support.faults(srv, { { match = "services", delay = 3 } })
        local slow = assert(io.popen("env -u LD_PRELOAD curl -s " .. ngx1.url .. "/slow", "r"))
        -- Wait until the fake holds the slow call.
        local held = false
        for _ = 1, 200 do
            if srv:control("stats").inflight == 1 then
                held = true
                break
            end
            socket.sleep(0.02)
        end
        assert.is_true(held, "the slow call never reached the fake")
        local status, body = ngx1:get("/ping")
        assert.equal(200, status)
        assert.equal("pong\n", body)
        -- Answered while the single worker's slow call was still in flight.
        assert.equal(1, srv:control("stats").inflight)
        assert.equal("ok 1\n", slow:read("*a"))
        slow:close()
    end)

    it("inflates and decodes a gzip answer as it arrives", function()
        srv:control("config", { rows_per_day = 200 })
        local want = assert(support.client(srv):cdr_1 { from = "2026-01-01", to = "2026-01-31" })
        local sum = 0
        for _, r in ipairs(want) do
            sum = sum + tonumber(r.conn_id)
        end
        support.faults(srv, { { match = "cdr_1", gzip = true } })
        local status, body = ngx1:get("/gzrows")
        assert.equal(200, status)
        local n, got_sum, bytes, holds, gc = body:match("^(%d+)|(%d+)|(%d+)|(%d+)|(%a+)")
        assert.is_truthy(n, body)
        assert.equal(#want, tonumber(n))
        assert.equal(sum, tonumber(got_sum))
        -- The collector, held while the rows were made, runs again.
        assert.same({ "0", "true" }, { holds, gc })
        assert.is_true(tonumber(bytes) > 200 * 31 * 300, "the inflated size: " .. bytes)
        local log = srv:log()
        assert.is_truthy(log[#log].fault, "the gzip fault was served")
    end)

    it("gives the worker's collector back when a big answer is cut short after its hold began", function()
        srv:control("config", { rows_per_day = 200 })
        -- (a month: about 2 MB; the hold begins past 1 MB)
        support.faults(srv, { { match = "cdr_1", cut = 1500000 } })
        local status, body = ngx1:get("/gc_cut")
        assert.equal(200, status)
        assert.equal("transport partial|0|true\n", body)
    end)

    it("shares the hold between requests that fetch big answers at once, and gives it back after the last", function()
        srv:control("config", { rows_per_day = 200, latency = 0.05 })
        local pipes = {}
        for i = 1, 3 do
            pipes[i] = assert(io.popen("env -u LD_PRELOAD curl -s " .. ngx1.url .. "/gzrows", "r"))
        end
        local outs = {}
        for i = 1, 3 do
            outs[i] = pipes[i]:read("*a")
            pipes[i]:close()
            assert.matches("^6200|", outs[i], nil, false)
        end
        -- After them no hold is open and the collector runs.
        local status, body = ngx1:get("/gc_cut")   -- (no fault queued: a whole month)
        assert.equal(200, status)
        assert.equal("rows|0|true\n", body)
        assert.is_nil(ngx1:errors():find("[error]", 1, true))
    end)

    it("gives the worker's collector back at the call's deadline when a hold is never released", function()
        local status, body = ngx1:get("/gc_hold")
        assert.equal(200, status)
        assert.equal("held false\n0 true\n", body)
    end)

    it("(control) the blocking libcurl transport freezes the same worker", function()
        support.faults(srv, { { match = "services", delay = 1 } })
        local slow = assert(io.popen("env -u LD_PRELOAD curl -s " .. ngx1.url .. "/slow_blocking", "r"))
        for _ = 1, 200 do
            if srv:control("stats").inflight == 1 then
                break
            end
            socket.sleep(0.02)
        end
        local status, body = ngx1:get("/ping")
        assert.equal(200, status)
        assert.equal("pong\n", body)
        -- /ping could only be served after the blocking call had finished.
        assert.equal(0, srv:control("stats").inflight)
        assert.equal("ok 1\n", slow:read("*a"))
        slow:close()
    end)

    it("refuses a call from a phase without cosockets, naming it and suggesting a timer", function()
        local status, body = ngx1:get("/phase")
        assert.equal(200, status)
        assert.matches("^transport phase: calls need nginx cosockets, which the set phase", body)
        assert.matches("ngx.timer.at", body, 1, true)
        assert.equal(0, #srv:log())
    end)

    it("refuses into (a database: LuaDBI would block the worker) before any call", function()
        local before = srv:control("stats").requests
        local status, body = ngx1:get("/into")
        assert.equal(200, status, ngx1:errors())
        assert.matches("^params|export: into is not available inside nginx", body)
        assert.equal(before, srv:control("stats").requests)
        assert.is_nil(io.open("/tmp/wolkvox-nginx-into.db"))
    end)

    describe("exports to a file", function()
        local dir
        before_each(function() dir = support.tmpdir() end)
        after_each(function() os.execute("rm -rf " .. support.q(dir)) end)

        -- The same export through libcurl, in this process: the file it writes.
        local function reference(fmt, to, max_rows)
            local path = dir .. "/reference." .. fmt
            local c = support.client(srv, { retries = 0, max_concurrent = 1, max_rows = max_rows })
            assert(c:export("cdr_1", { from = "2026-01-01", to = to }, { output = path, format = fmt }))
            return support.read(path)
        end

        local function export(fmt, out, to, max_rows, spool)
            local escaped = out:gsub("[^%w/._-]", function(ch) return ("%%%02X"):format(ch:byte()) end)
            local status, body = ngx1:get("/export?fmt=" .. fmt .. "&to=" .. to .. "&out=" .. escaped
                .. (max_rows and "&max_rows=" .. max_rows or "") .. (spool and "&spool=" .. spool or ""))
            assert.equal(200, status, ngx1:errors())
            return body
        end

        for _, fmt in ipairs { "csv", "ndjson" } do
            it("writes two windows as " .. fmt .. ", the same bytes as the libcurl transport", function()
                local out = dir .. "/cdr." .. fmt
                local body = export(fmt, out, "2026-02-15")
                assert.equal("ok 4600 2 2\n", body)   -- 46 days at 100 rows a day, two windows, two calls
                local got = support.read(out)
                srv:control("reset")
                assert.equal(reference(fmt, "2026-02-15"), got)
                assert.is_nil(got:find(srv.token, 1, true))
                -- Only the file and the reference: no spool or temporary file left behind.
                assert.equal("cdr." .. fmt .. "\nreference." .. fmt .. "\n", listing(dir))
            end)
        end

        for _, fmt in ipairs { "csv", "ndjson" } do
            it("splits a window that answers the row cap as the libcurl transport does (" .. fmt .. ")", function()
                -- 31 days of 100 rows against a cap of 500: the lines' times size the windows asked instead.
                srv:control("config", { max_rows = 500 })
                local out = dir .. "/capped." .. fmt
                local body = export(fmt, out, "2026-01-31", 500)
                local n, calls = body:match("^ok (%d+) %d+ (%d+)\n$")
                assert.equal("3100", n, body)
                assert.is_true(tonumber(calls) > 7, body)
                local got = support.read(out)
                srv:control("reset")
                srv:control("config", { max_rows = 500 })
                assert.equal(reference(fmt, "2026-01-31", 500), got)
            end)

            it("makes the lines of gzip answers as they are inflated (" .. fmt .. ")", function()
                support.faults(srv, { { match = "cdr_1", gzip = true, times = 2 } })
                local out = dir .. "/gz." .. fmt
                assert.equal("ok 4600 2 2\n", export(fmt, out, "2026-02-15"))
                assert.equal(2, #srv:log())
                local got = support.read(out)
                srv:control("reset")
                assert.equal(reference(fmt, "2026-02-15"), got)
            end)
        end

        it("masks the token a hostile answer echoes, in keys and values, spelled with escapes too", function()
            local t = srv.token
            local spelled = t:gsub(".", function(ch) return ("\\u%04x"):format(ch:byte()) end)
            local body = '{"code":200,"msg":"ok","data":['
                .. '{"conn_id":"1","date_ini":"2026-01-01 08:00:00","customer":"' .. t .. '","note":"pre' .. t
                .. 'post"},'
                .. '{"conn_id":"2","date_ini":"2026-01-01 09:00:00","customer":"' .. spelled .. '","x' .. t
                .. '":"k","deep":{"k":"' .. t .. '"}}]}'
            -- and a number no Lua number holds: NDJSON cannot write it (an output error), CSV leaves it out
            local inf = body:gsub('}}]}$', '},"n":1e400}]}')
            -- The fake afresh, answering cdr_1 with `text`.
            local function serve(text)
                srv:control("reset")
                srv:control("config", { fixtures = { { match = "cdr_1", body_is_text = true, body = text } } })
            end
            for i, case in ipairs { { "csv", body }, { "ndjson", body }, { "csv", inf }, { "ndjson", inf } } do
                local fmt, text = case[1], case[2]
                serve(text)
                local out = dir .. "/echo" .. i .. "." .. fmt
                local said = export(fmt, out, "2026-01-01")
                local got = support.slurp(out)
                serve(text)
                local path = dir .. "/reference" .. i .. "." .. fmt
                local c = support.client(srv, { retries = 0, max_concurrent = 1 })
                local n, err = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-01" },
                    { output = path, format = fmt })
                -- The same outcome as through libcurl: the file, or the same refusal.
                if n then
                    assert.equal("ok 2 1 1\n", said)
                    assert.equal(support.read(path), got)
                else
                    assert.equal(err.kind, said:match("^(%a+)|"), said)
                    assert.equal(tostring(err):gsub("%s+%(.*", ""), said:match("|(.-)%s+%(") or said:match("|(.-)\n"))
                    assert.is_nil(got)
                end
                for _, written in ipairs { said, got or "" } do
                    assert.is_nil(written:find(t, 1, true), written)
                    assert.is_nil(written:find(spelled, 1, true), written)
                end
            end
        end)

        it("fails as a local failure naming a full spool directory, after one call, the old file kept", function()
            local full = support.disk("size=1m", true, finally, pending)
            if not full then
                return
            end
            for _, fmt in ipairs { "csv", "ndjson" } do
                srv:control("reset")
                local out = dir .. "/full." .. fmt
                support.spit(out, "yesterday's rows\n")
                local body = export(fmt, out, "2026-02-15", nil, full)
                assert.truthy(body:find("^output|"), body)
                assert.truthy(body:find("spool directory " .. full .. ": No space left on device", 1, true), body)
                assert.equal(1, srv:control("stats").requests)
                assert.equal("yesterday's rows\n", support.read(out))
            end
            assert.equal("full.csv\nfull.ndjson\n", listing(dir))
        end)

        it("keeps the file it would replace when a window fails, the whole windows as PATH.part", function()
            local out = dir .. "/cdr.csv"
            support.spit(out, "yesterday's rows\n")
            support.faults(srv, { { match = "cdr_1", call = 2, status = 502 } })
            local body = export("csv", out, "2026-02-15")
            assert.matches("^http|", body)
            assert.matches("2026-02-01", body, 1, true)   -- names the window that failed
            assert.is_nil(body:find(srv.token, 1, true))
            assert.equal("yesterday's rows\n", support.read(out))
            local part = support.read(out .. ".part")
            srv:control("reset")
            assert.equal(reference("csv", "2026-01-31"), part)
        end)
    end)

    it("works from an ngx.timer.at callback", function()
        local _, body = ngx1:get("/timer")
        assert.equal("timer 25\n", body)
    end)

    it("gives the same error kinds as the C transport", function()
        local cases = {
            { { status = 500 }, "^http %- wolkvox http error" },
            { { html = 502 }, "^http %- .*not JSON" },
            { { bad_json = true }, "^decode %-" },
            { { forbidden = "quota" }, "^quota %-" },
            { { forbidden = "concurrency" }, "^concurrency %-" },
            { { reset = true, times = 2 }, "^transport reset" },  -- a dead kept-alive connection is re-sent once
            { { cut = 20 }, "^transport partial" },
            { { delay = 3 }, "^transport timeout" },
            { { big = 50000 }, "^too_large size" },
            { { big = 50000, chunked = true }, "^too_large size" },
            { { empty = true }, "^ok 0" },
            { { gzip = true }, "^ok 4" },
            { { chunked = true }, "^ok 4" },
            { { redirect = "http://127.0.0.2:9/x" }, "^http %- .*redirect not followed" },
        }
        for _, case in ipairs(cases) do
            srv:control("reset")
            support.faults(srv, { case[1] })
            local _, body = ngx1:get("/fault")
            assert.matches(case[2], body or "", 1, false, require("cjson").encode(case[1]))
            assert.is_nil((body or ""):find(srv.token, 1, true))
        end
    end)

    it("sends writes with their body", function()
        local _, body = ngx1:get("/write")
        assert.equal("ok 200\n", body)
        local entry = srv:log()[1]
        assert.equal("POST", entry.method)
        assert.equal('{"description":"from nginx","ip":"203.0.113.5"}', entry.body)
    end)

    it("counts the day's calls in the shared dict", function()
        ngx1:get("/rp")
        ngx1:get("/rp")
        local _, body = ngx1:get("/quota")
        assert.is_true(tonumber(body) >= 2)
    end)
end)

describe("nginx without the C core #nginx", function()
    local srv, ngx3
    -- Only the system's C modules (no "./?.so"): wolkvox.core cannot load, lua-cjson decodes.
    if not nginx.suite(nil, function(s)
        return { http = http_block(s), locations = LOCATIONS,
            cpath = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;/usr/lib/lua/5.1/?.so" }
    end, function(s, n) srv, ngx3 = s, n end) then
        return
    end

    it("runs on pure Lua: calls, windowed reports, null members dropped as the C decoder does", function()
        local _, body = ngx3:get("/decoder")
        assert.equal("cjson\n", body)
        _, body = ngx3:get("/rp")
        assert.matches("^4|Ventas Bogotá|", body, 1, false, ngx3:errors())
        srv:control("config", { max_rows = 500 })
        _, body = ngx3:get("/report")
        assert.matches("^9000|0|", body)
        -- the envelope's "error": null did not reach the rows or fail the call
        support.faults(srv, { { gzip = true } })
        _, body = ngx3:get("/fault")
        assert.equal("ok 4\n", body)
        assert.is_nil(ngx3:errors():find("wolkvox.core", 1, true) and ngx3:errors():find("[error]", 1, true))
    end)

    it("refuses an export to a file without the C core, saying what it needs, before any call", function()
        srv:control("reset")
        local dir = support.tmpdir()
        finally(function() os.execute("rm -rf " .. support.q(dir)) end)
        for _, fmt in ipairs { "csv", "ndjson", "json" } do
            local out = dir .. "/pure." .. fmt
            local status, body = ngx3:get("/export?fmt=" .. fmt .. "&to=2026-02-15&out=" .. out)
            assert.equal(200, status, ngx3:errors())
            assert.truthy(body:find("^output|.*needs the C core, wolkvox.core, which this Lua cannot load"), body)
            assert.truthy(body:find("make LUA=luajit", 1, true), body)
            assert.is_nil(io.open(out))
        end
        local status, body = ngx3:get("/sync_state?state=" .. dir .. "/sync.state")
        assert.equal(200, status, ngx3:errors())
        assert.truthy(body:find("^output|.*needs the C core, wolkvox.core"), body)
        assert.equal(0, srv:control("stats").requests)
        status, body = ngx3:get("/rows_fn")
        assert.equal(200, status, ngx3:errors())
        assert.equal("ok 1600\n", body)   -- rows taken by a function need no file
        assert.equal(1, srv:control("stats").requests)
        assert.equal("", listing(dir))
    end)
end)

describe("two nginx workers #nginx", function()
    local srv, ngx2
    if not nginx.suite(nil, function(s) return { workers = 2, http = http_block(s), locations = LOCATIONS } end,
        function(s, n) srv, ngx2 = s, n end) then
        return
    end

    it("never have more than 2 calls in flight at the fake together", function()
        -- 16 requests: with reuseport the kernel spreads them over both workers
        -- (all on one would have a chance of 2^-15).
        srv:control("config", { latency = 0.1 })
        local pipes = {}
        for i = 1, 16 do
            pipes[i] = assert(io.popen("env -u LD_PRELOAD curl -s " .. ngx2.url .. "/report2", "r"))
        end
        local pids, calls = {}, 0
        for i = 1, 16 do
            local body = pipes[i]:read("*a")
            pipes[i]:close()
            local rows, n, pid = body:match("^(%d+)|(%d+)|(%d+)")
            assert.equal("5900", rows, body)     -- 59 days, two windows
            calls = calls + tonumber(n)
            pids[pid] = true
        end
        local workers = 0
        for _ in pairs(pids) do
            workers = workers + 1
        end
        assert.equal(2, workers, "the requests did not reach both workers")
        local stats = srv:control("stats")
        assert.equal(2, stats.max_inflight)
        for _, entry in ipairs(srv:log()) do
            assert.is_nil(entry.refused)
        end
        assert.equal(32, calls)
        assert.equal(calls, #srv:log())
    end)

end)
