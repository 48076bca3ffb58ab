-- The fake server against hostile clients (issue #20; users run it in their
-- own CI): a chunked body declaring 1 GiB is refused at once (the 64 MiB cap
-- covers chunked bodies too) while other clients are served; a big upload
-- does not stall the others; idle connections that use up its descriptors
-- do not make it spin, and it serves again once they close; idle
-- connections time out.  The fake runs in a child of this spec's own
-- flavour (lua5.4, or luajit with the build busted was given).
local socket = require "socket"
local support = require "support"

-- A fake of this flavour; `nofile`: its descriptor limit (ulimit -n).
local function spawn(opts)
    opts = opts or {}
    local interp = jit and "luajit" or "lua5.4"
    local lua = "env -u LD_PRELOAD " .. interp
    if opts.nofile then
        lua = "sh -c 'ulimit -n " .. opts.nofile .. " && exec env -u LD_PRELOAD \"$0\" \"$@\"' " .. interp
        opts.nofile = nil
    end
    opts.lua, opts.cpath = lua, support.child_cpath()
    return support.fake(opts)
end

local function port_of(srv)
    return tonumber(srv.url:match(":(%d+)$"))
end

-- GET `path` on a new connection, waiting at most `timeout` seconds for
-- each step: the status (or nil and why) and the seconds it took.
local function get(srv, path, timeout)
    local t0 = socket.gettime()
    local c = socket.tcp()
    c:settimeout(timeout)
    local ok, err = c:connect("127.0.0.1", port_of(srv))
    local line
    if ok then
        ok, err = c:send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    end
    if ok then
        line, err = c:receive("*l")
    end
    c:close()
    local status = line and tonumber(line:match("^HTTP/1%.1 (%d%d%d)"))
    return status, socket.gettime() - t0, err
end

-- A child that sends `head`, then `piece` again and again (at most `total`
-- bytes, at most 8 s), watching for an answer between sends; it prints
-- "STATUS|bytes sent|seconds" (STATUS "none" when no answer came).  Once
-- the head is sent it creates the file `started`.
local PUSHER = [[
local socket = require "socket"
local c = socket.tcp()
c:settimeout(5)
assert(c:connect("127.0.0.1", %d))
local head, piece, total, started = %q, string.rep("a", 65536), %d, %q
local t0, got, sent = socket.gettime(), "", 0
local ok = c:send(head)
io.open(started, "w"):close()
while ok and sent < total and socket.gettime() - t0 < 8 do
    c:settimeout(0)
    local data, err, partial = c:receive(64)
    got = got .. (data or partial or "")
    if got:find("\r\n", 1, true) or (err and err ~= "timeout") then
        break
    end
    c:settimeout(2)
    ok = c:send(total - sent < #piece and piece:sub(1, total - sent) or piece)
    sent = sent + (ok and math.min(#piece, total - sent) or 0)
end
if not got:find("\r\n", 1, true) then
    c:settimeout(3)
    local line, _, partial = c:receive("*l")
    got = got .. (line or partial or "")
end
io.write(string.format("%%s|%%d|%%.3f\n", got:match("^HTTP/1%%.1 (%%d+)") or "none", sent, socket.gettime() - t0))
c:close()
]]

-- The pusher's pipe, once it is under way (its head sent).
local function pusher(srv, head, total)
    local started = support.tmpdir() .. "/started"
    local pipe = assert(io.popen(support.lua_command(PUSHER:format(port_of(srv), head, total, started)), "r"))
    support.wait_for(function() return support.slurp(started) end, 10, "the pusher to send its head")
    return pipe
end

local function outcome(pipe)
    local out = pipe:read("*a")
    pipe:close()
    local status, sent, took = out:match("^(%w+)|(%d+)|([%d.]+)")
    return status, tonumber(sent), tonumber(took), out
end

-- The number of descriptors process `pid` has open.
local function open_fds(pid)
    local p = assert(io.popen("env -u LD_PRELOAD ls /proc/" .. pid .. "/fd 2>/dev/null"))
    local _, n = p:read("*a"):gsub("\n", "")
    p:close()
    return n
end

-- utime + stime of process `pid`, in seconds.
local function cpu_seconds(pid)
    local stat = assert(support.proc(pid, "stat"), "no process " .. pid)
    local after = stat:match("^%d+ %b() (.*)$")
    local fields = {}
    for f in after:gmatch("%S+") do
        fields[#fields + 1] = f
    end
    -- (fields 14 and 15 of the whole line are 12 and 13 after pid and name)
    local p = assert(io.popen("getconf CLK_TCK"))
    local hz = tonumber(p:read("*l")) or 100
    p:close()
    return (tonumber(fields[12]) + tonumber(fields[13])) / hz
end

describe("the fake server against hostile clients", function()
    it("refuses a chunked body declaring 1 GiB at once, with 413, while another client is served", function()
        local srv = spawn()
        local ok, err = pcall(function()
            local a = pusher(srv, "POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                .. "40000000\r\n", 1024 * 1024 * 1024)
            local status, took = get(srv, "/__fake/stats", 5)
            local a_status, _, a_took, a_out = outcome(a)
            assert.equal(200, status, "the other client got no answer within " .. took .. " s")
            assert.equal("413", a_status, a_out)
            assert.is_true(a_took < 5, a_out)
            -- It still serves.
            assert.equal(0, srv:control("stats").inflight)
        end)
        srv:stop()
        assert(ok, err)
    end)

    it("serves other clients while one uploads a big body", function()
        local srv = spawn()
        local ok, err = pcall(function()
            local size = 60 * 1024 * 1024 -- under the 64 MiB cap
            local c = pusher(srv, "POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " .. size
                .. "\r\nConnection: close\r\n\r\n", size)
            local status, took = get(srv, "/__fake/stats", 5)
            local c_status, sent, _, c_out = outcome(c)
            assert.equal(200, status, "the other client got no answer within " .. took .. " s")
            assert.equal(size, sent, c_out)
            assert.matches("^%d%d%d$", c_status, 1, false, c_out) -- the upload got its answer too
        end)
        srv:stop()
        assert(ok, err)
    end)

    it("does not spin when idle connections use up its descriptors, and serves again once they close", function()
        local srv = spawn { nofile = 64 }
        local conns = {}
        local ok, err = pcall(function()
            -- More than its 64 descriptors can hold: the rest wait in the backlog.
            for _ = 1, 100 do
                local c = socket.tcp()
                c:settimeout(0.5)
                c:connect("127.0.0.1", port_of(srv))
                conns[#conns + 1] = c
            end
            support.wait_for(function() return open_fds(srv.pid) >= 60 end, 10,
                "the fake to take connections until its 64 descriptors are (nearly) all used")
            -- Over 2 s: the CPU time it used, and how often it was found
            -- running or waiting for a CPU (state R: a spinning process
            -- nearly always is, however loaded the machine).
            local cpu0, t0, samples, running = cpu_seconds(srv.pid), socket.gettime(), 0, 0
            repeat
                socket.sleep(0.02)
                local stat = support.proc(srv.pid, "stat") or ""
                samples = samples + 1
                running = running + (stat:match("^%d+ %b() R") and 1 or 0)
            until socket.gettime() - t0 >= 2
            local share = (cpu_seconds(srv.pid) - cpu0) / (socket.gettime() - t0)
            assert.is_true(support.alive(srv.pid), "the fake ended")
            -- Loose: spinning, it used 100 % (as much as a loaded machine gave it).
            local label = string.format("the fake used %.0f %% of a CPU, was running in %d of %d samples",
                share * 100, running, samples)
            assert.is_true(share < 0.5, label)
            assert.is_true(running < samples / 2, label)
            for _, c in ipairs(conns) do
                c:close()
            end
            conns = {}
            local status
            for _ = 1, 10 do
                status = get(srv, "/__fake/stats", 5)
                if status == 200 then
                    break
                end
                socket.sleep(0.2)
            end
            assert.equal(200, status, "no answer once the idle connections closed")
        end)
        for _, c in ipairs(conns) do
            c:close()
        end
        srv:stop()
        assert(ok, err)
    end)

    it("closes connections that stay idle, or send half a request, past idle_timeout", function()
        local srv = spawn { idle_timeout = 1 }
        local ok, err = pcall(function()
            local idle, half = socket.tcp(), socket.tcp()
            for _, c in ipairs { idle, half } do
                c:settimeout(10)
                assert(c:connect("127.0.0.1", port_of(srv)))
            end
            assert(half:send("GET /__fake/stats HTTP/1.1\r\nHost: 127.0.0"))
            local t0 = socket.gettime()
            for name, c in pairs { idle = idle, half = half } do
                local data, why, partial = c:receive("*a")
                assert.equal("", data or partial, name)
                assert.is_true(data ~= nil or why == "closed", name .. ": " .. tostring(why))
                local took = socket.gettime() - t0
                assert.is_true(took < 8, name .. " closed after " .. took .. " s")
                c:close()
            end
            -- A connection in use is not cut: an answer after a wait shorter than the timeout.
            local status = get(srv, "/__fake/stats", 5)
            assert.equal(200, status)
        end)
        srv:stop()
        assert(ok, err)
    end)
end)
