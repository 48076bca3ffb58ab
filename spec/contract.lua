-- The transport contract (lua/wolkvox/transport/init.lua) as cases any
-- transport module must pass, against the fake server at `base`.  The same
-- cases run for the curl transport in busted and for the ngx transport
-- inside nginx (spec/contract_spec.lua).
local errors = require "wolkvox.errors"
local transport = require "wolkvox.transport"

local M = {}

local function check(cond, what)
    if not cond then
        error(what, 2)
    end
end

local function services(base)
    return { url = base .. "/api/v2/information.php?api=services" }
end

local function open(mod, token, extra)
    local opts = { timeout = 5, connect_timeout = 2, max_bytes = 1024 * 1024, max_concurrent = 2 }
    for k, v in pairs(extra or {}) do
        opts[k] = v
    end
    local t = mod.new(opts, token)
    return t, t.batch and t:batch() or t
end

-- Every string in `v`, recursively.
local function strings(v, out)
    out = out or {}
    if type(v) == "string" then
        out[#out + 1] = v
    elseif type(v) == "table" then
        for k, x in pairs(v) do
            strings(k, out)
            strings(x, out)
        end
    end
    return out
end

--- The faults the fake must have queued before `run`.
M.FAULTS = { { match = "token_info", echo = true } }

M.cases = {
    { "start gives an id, wait gives it back with the decoded answer", function(mod, base, token)
        local t, b = open(mod, token)
        local id = b:start(services(base))
        local got, res = b:wait()
        check(got == id, "wait returned another id")
        check(res.status == 200, "status " .. tostring(res.status))
        check(type(res.value) == "table" and res.value.data[1].licenses == "25", "decoded value")
        for _, k in ipairs { "bytes", "time", "connects", "sends" } do
            check(type(res[k]) == "number", "result field " .. k)
        end
        check(b:wait() == nil, "wait with nothing in flight gives nil")
        t:close()
    end },
    { "two requests in flight come back once each", function(mod, base, token)
        local t, b = open(mod, token)
        local a = b:start(services(base))
        local c = b:start({ url = base .. "/api/v2/information.php?api=routing_points" })
        local seen = {}
        for _ = 1, 2 do
            local id, res = b:wait()
            check(res.status == 200, "status")
            seen[id] = (seen[id] or 0) + 1
        end
        check(seen[a] == 1 and seen[c] == 1, "each id once")
        t:close()
    end },
    { "a refused connection is a transport error that never went out", function(mod, _, token)
        local t, b = open(mod, token)
        b:start({ url = "http://127.0.0.1:9/api/v2/information.php?api=services" })
        local _, res = b:wait()
        check(res.error and res.error.kind == "transport", "kind transport")
        check(res.error.reason == "connect", "reason " .. tostring(res.error.reason))
        check(transport.REASONS[res.error.reason] ~= nil, "a reason of the vocabulary")
        check(res.error.sent == false, "sent = false")
        t:close()
    end },
    { "cancel aborts what is in flight and says how often it went out", function(mod, base, token)
        local t, b = open(mod, token)
        b:start({ url = base .. "/api/v2/information.php?api=services" })
        local n, sends = b:cancel()
        check(n == 1, "one aborted, got " .. tostring(n))
        check(type(sends) == "number", "sends")
        check(b:wait() == nil, "nothing left in flight")
        t:close()
    end },
    { "token_id is the token's fingerprint: 32 hex digits, not the token", function(mod, _, token)
        local t = open(mod, token)
        local id = t:token_id()
        check(id == transport.fingerprint("wolkvox-token:" .. token), "the shared fingerprint")
        check(#id == 32 and id:match("^%x+$"), "32 hex digits")
        t:close()
    end },
    { "stats count requests; close is final and idempotent", function(mod, base, token)
        local t, b = open(mod, token)
        b:start(services(base))
        b:wait()
        local s = t:stats()
        check(s.requests == 1, "requests " .. tostring(s.requests))
        check(type(s.connects) == "number" and type(s.bytes) == "number", "connects, bytes")
        t:close()
        t:close()
        check(t:closed() == true, "closed()")
        local ok, err = pcall(function() (t.batch and t:batch() or t):start(services(base)) end)
        check(not ok and errors.is(err) and err.kind == "closed", "start after close throws closed")
    end },
    { "a request that cannot be sent raises before anything goes out", function(mod, base, token)
        local t, b = open(mod, token)
        local ok = pcall(b.start, b, { url = base .. "/x", headers = { "X-Evil: 1\r\nX-More: 2" } })
        check(not ok, "a header with CR/LF is refused")
        ok = pcall(b.start, b, { url = base .. "/x", method = "POST",
            parts = { { name = 'a"b', data = "x" } } })
        check(not ok, "a quote in a part name is refused")
        t:close()
    end },
    { "an echoed token is masked in every string of the result", function(mod, base, token)
        local t, b = open(mod, token)
        -- The runner queued the fake's echo fault for token_info: a page
        -- that shows the request's headers, token included.
        b:start({ url = base .. "/api/v2/information.php?api=token_info" })
        local _, res = b:wait()
        check(res.status == 502, "the echo fault was served (status " .. tostring(res.status) .. ")")
        for _, s in ipairs(strings(res)) do
            check(not s:find(token, 1, true), "the token in a result string")
            check(not s:find(token:sub(1, 8), 1, true), "the token's head in a result string")
        end
        t:close()
    end },
    { "a spool (optional): rows counted, kept on disk, decoded back as the answer's own", function(mod, base, token)
        if not mod.spool then
            return
        end
        local t, b = open(mod, token)
        local url = base .. "/api/v2/reports_manager.php?api=cdr_1&date_ini=20260101000000&date_end=20260102235959"
        b:start({ url = url })
        local _, plain = b:wait()
        b:start({ url = url, spool = "/tmp" })
        local _, res = b:wait()
        check(res.status == 200 and res.spool, "a spooled answer (status " .. tostring(res.status) .. ")")
        check(res.streamed == true, "its rows streamed")
        check(res.rows == #plain.value.data and res.rows > 0, "rows counted: " .. tostring(res.rows))
        check(res.value.data == nil or #res.value.data == 0, "no rows built")
        local d, rows = res.spool:decoder(), {}
        while true do
            local chunk = res.spool:read(4096)
            if not chunk then
                break
            end
            for _, r in ipairs(assert(d:feed(chunk))) do
                rows[#rows + 1] = r
            end
        end
        local _, last = d:finish()
        for _, r in ipairs(last) do
            rows[#rows + 1] = r
        end
        check(#rows == res.rows, "read back: " .. #rows)
        check(rows[#rows].conn_id == plain.value.data[#rows].conn_id, "the same rows")
        res.spool:close()
        t:close()
    end },
    { "a cache store (optional) gives back copies until the TTL passes", function(mod, _, token)
        if not mod.cache then
            return
        end
        local t = open(mod, token)
        local store = mod.cache({ cache = { ttl = 1 } }, t)
        local key = "cache:" .. transport.fingerprint("contract " .. tostring(mod.clock.now()))
        store:set(key, { data = { { a = "1" } }, meta = { status = 200 } }, 0.2)
        local got = store:get(key)
        check(type(got) == "table" and got.data[1].a == "1" and got.meta.status == 200, "the value set")
        got.data[1].a = "changed"
        check(store:get(key).data[1].a == "1", "a copy: the caller's changes do not reach the store")
        check(store:get(key .. "x") == nil, "another key misses")
        mod.clock.sleep(0.3)
        check(store:get(key) == nil, "the value outlived its TTL")
        t:close()
    end },
}

--- Run every case for transport module `mod` against the fake at `base`
-- (whose token is `token`; queue `M.FAULTS` on it first): a list of
-- `{ name = , ok = , err = }`.
function M.run(mod, base, token)
    local out = {}
    for i, case in ipairs(M.cases) do
        local ok, err = pcall(case[2], mod, base, token)
        out[i] = { name = case[1], ok = ok, err = not ok and tostring(err) or nil }
    end
    return out
end

return M
