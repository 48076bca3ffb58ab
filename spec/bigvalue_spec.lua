-- Issue #20: a single JSON value larger than the curl transport's pause
-- threshold (1 MiB undecoded) must arrive whole, in one call, up to the
-- answer's size cap: a long string, a long key, a wide row, a long field
-- in an export; and the wait must not spin (the decoder cannot consume
-- half a value, so pausing on one used to loop until the timeout).  A
-- hostile server (spec/hostile.lua) sends the answers over loopback.
local hostile = require "hostile"
local socket = require "socket"
local support = require "support"

local TOKEN = "bigvalue-spec-token-0123456789abcdef"
local MiB = 1024 * 1024
local PATTERN = "0123456789abcdef"   -- 16 bytes: a value's body, repeated
-- Generous: a call that works ends long before it, under valgrind too; one
-- that spins would run to it.
local TIMEOUT = os.getenv("WOLKVOX_FLAVOUR") == "valgrind" and 300 or 60

-- An answer sent piece by piece with its Content-Length: `parts` is a list
-- of strings and `{ rep = s, n = count, piece = bytes, every = seconds }`
-- (s repeated n times, sent `piece` bytes at a time, waiting `every`
-- seconds after each piece: never whole in memory).
local function answer(parts)
    local len = 0
    for _, p in ipairs(parts) do
        len = len + (type(p) == "string" and #p or #p.rep * p.n)
    end
    local head = hostile.head(200, { ["Content-Type"] = "application/json" },
        { "Content-Length: " .. len, "Connection: close" })
    return function(c)
        if not c:send(head) then
            return
        end
        for _, p in ipairs(parts) do
            if type(p) == "string" then
                if not c:send(p) then
                    return
                end
            else
                local per = math.max(1, math.floor((p.piece or 65536) / #p.rep))
                local piece = string.rep(p.rep, per)
                local left = p.n
                while left > 0 do
                    local k = math.min(per, left)
                    if not c:send(k == per and piece or string.rep(p.rep, k)) then
                        return
                    end
                    left = left - k
                    if p.every then
                        c:sleep(p.every)
                    end
                end
            end
        end
    end
end

-- `bytes` of the pattern (a multiple of 16), as the answer part and as the
-- string the client must end up with.
local function body_of(bytes)
    assert(bytes % #PATTERN == 0)
    return { rep = PATTERN, n = bytes / #PATTERN }
end

local ENVELOPE = '{"code":"200","msg":"ok","data":['
local CLOSE = ']}'

-- A client of the hostile server `h`, one attempt per call.
local function client(h, opts)
    local o = { base_url = h.url, token = TOKEN, retries = 0, timeout = TIMEOUT, transport = "curl",
        state_dir = support.state_dir }
    for k, v in pairs(opts or {}) do
        o[k] = v
    end
    return assert(require("wolkvox").new(o))
end

-- Serve `parts` once, call c:services() on it: rows, meta or err, and the
-- process's CPU seconds and the wall seconds the call took.
local function services(parts, opts)
    local h = hostile.start { responses = { answer(parts) } }
    local c = client(h, opts)
    local cpu0, t0 = os.clock(), socket.gettime()
    local rows, meta = c:services()
    local cpu, wall = os.clock() - cpu0, socket.gettime() - t0
    c:close()
    local connections = h:connections()
    h:stop()
    return rows, meta, cpu, wall, connections
end

local function label(rows, meta)
    return rows and "rows" or tostring(meta)
end

describe("a value larger than the transfer's pause threshold, curl transport", function()
    it("a 100 MB string arrives intact, one call spent", function()
        local n = 100 * 1000 * 1000   -- a multiple of 16
        local rows, meta, _, _, conns = services {
            ENVELOPE .. '{"id":"1","note":"', body_of(n), '\\u00e9"},{"id":"2"}' .. CLOSE }
        assert.is_table(rows, label(rows, meta))
        assert.equal(2, #rows)
        assert.equal(n + 2, #rows[1].note)
        assert.is_true(rows[1].note == PATTERN:rep(n / #PATTERN) .. "\195\169", "the string is not intact")
        assert.equal("2", rows[2].id)
        assert.equal(1, meta.calls)
        assert.equal(1, conns)
    end)

    it("an answer of exactly max_bytes, one value nearly all of it, arrives; one byte more is too_large",
        function()
        local max = 48 * MiB
        local head, tail = ENVELOPE .. '{"note":"', '"}' .. CLOSE
        local n = max - #head - #tail
        n = n - n % #PATTERN
        local pad = string.rep(" ", max - #head - #tail - n)   -- white space before the end
        local rows, meta = services({ head, body_of(n), tail .. pad }, { max_bytes = max })
        assert.is_table(rows, label(rows, meta))
        assert.equal(n, #rows[1].note)
        assert.is_true(rows[1].note == PATTERN:rep(n / #PATTERN))
        assert.equal(1, meta.calls)
        local none, err = services({ head, body_of(n), tail .. pad .. " " }, { max_bytes = max })
        assert.is_nil(none)
        assert.equal("too_large", err.kind)
    end)

    it("a 10 MB key arrives intact, one call spent", function()
        local n = 10 * 1000 * 1000
        local rows, meta = services { ENVELOPE .. '{"id":"1","', body_of(n), '":"v"}' .. CLOSE }
        assert.is_table(rows, label(rows, meta))
        assert.equal(1, #rows)
        local key = PATTERN:rep(n / #PATTERN)
        assert.equal("v", rows[1][key])
        assert.equal("1", rows[1].id)
        assert.equal(1, meta.calls)
    end)

    it("a 1.4 MB row of 15,000 fields arrives intact between small rows, one call spent", function()
        local fields = {}
        for i = 1, 15000 do
            fields[i] = string.format('"field_%05d":"%s"', i, string.rep(string.char(97 + i % 26), 80))
        end
        local wide = "{" .. table.concat(fields, ",") .. "}"
        assert.is_true(#wide > 1.4e6)
        local rows, meta = services { ENVELOPE .. '{"id":"a"},', wide, ',{"id":"z"}' .. CLOSE }
        assert.is_table(rows, label(rows, meta))
        assert.equal(3, #rows)
        assert.equal("a", rows[1].id)
        assert.equal("z", rows[3].id)
        local n = 0
        for k, v in pairs(rows[2]) do
            local i = tonumber(k:match("^field_(%d+)$"))
            assert.equal(string.rep(string.char(97 + i % 26), 80), v)
            n = n + 1
        end
        assert.equal(15000, n)
        assert.equal(1, meta.calls)
    end)

    -- An export of one day: a 2 MiB comment between ordinary rows, written
    -- to CSV, through the spool (rows on disk) and without it.
    for _, spool in ipairs { true, false } do
        it("a 2 MiB field inside an export arrives in the CSV intact, one call spent ("
            .. (spool and "spooled" or "in memory") .. ")", function()
            local dir = support.tmpdir()
            local n = 2 * MiB
            local row = '{"date":"2026-01-01 10:00:00","conn_id":"%d","agent_name":"A%d","comment":"%s"}'
            local h = hostile.start { default = answer {
                ENVELOPE .. row:format(1, 1, "short") .. "," .. row:format(2, 2, ""):sub(1, -3),
                body_of(n), '"},' .. row:format(3, 3, "last") .. CLOSE } }
            local c = client(h, { spool_dir = spool and dir or false })
            local out = dir .. "/out.csv"
            local written, meta = c:export("cdr_1", { from = "2026-01-01", to = "2026-01-01" },
                { output = out, format = "csv" })
            c:close()
            local conns = h:connections()
            h:stop()
            assert.equal(3, written, tostring(meta))
            assert.equal(1, meta.calls)
            assert.equal(1, conns)
            local csv = support.read(out)
            os.execute("rm -rf '" .. dir .. "'")
            local long = PATTERN:rep(n / #PATTERN)
            local a, b = csv:find(long, 1, true)
            assert.is_truthy(a, "the 2 MiB field is not in the CSV")
            assert.matches("^A2,2026%-01%-01 10:00:00,", csv:sub(1, a - 1):match("\n([^\n]*)$"))
            assert.is_nil(csv:find(long, b, true))
            -- (Only short pieces of the CSV in the messages.)
            assert.matches("^,?\r?\nA3,[^\n]*,last\r?\n$", csv:sub(b + 1, b + 200))
            local lines = select(2, csv:gsub("\n", "\n"))
            assert.equal(4, lines)   -- the header and three rows
        end)
    end

    it("a value that drips in after the first MiB arrives without the wait spinning", function()
        -- 1.5 MiB of a string at once (past the pause threshold), then the
        -- rest in pieces 50 ms apart for about 2.5 s: the process waits in
        -- poll(2) between pieces.  Spinning costs the whole wall time in
        -- CPU; what decoding costs is a small part of it (loose: half).
        local fast, slow = 1.5 * MiB, 48 * 16 * 1024
        local rows, meta, cpu, wall = services {
            ENVELOPE .. '{"note":"', body_of(fast),
            { rep = PATTERN, n = slow / #PATTERN, piece = 16 * 1024, every = 0.05 }, '"}' .. CLOSE }
        assert.is_table(rows, label(rows, meta))
        assert.equal(fast + slow, #rows[1].note)
        assert.equal(1, meta.calls)
        assert.is_true(wall >= 2, "the answer came too fast to tell: " .. wall .. " s")
        assert.is_true(cpu < wall / 2, string.format("%.2f s of CPU in %.2f s of waiting", cpu, wall))
    end)

    it("an answer that is not JSON is not read on: a body that never ends gives its error at once", function()
        -- An HTML page without a length, then more of it for longer than the
        -- call's timeout: the answer's error (its start in the message), not
        -- a timeout after reading on.  (Its first word is where the decoder
        -- fails: a word without a delimiter could still be a long number.)
        local function endless(status)
            local head = hostile.head(status, { ["Content-Type"] = "text/html" }, { "Connection: close" })
            return function(c)
                if not c:send(head .. "<html> <body>" .. string.rep("x", 1000)) then
                    return
                end
                for _ = 1, 1200 do
                    if not c:send(string.rep("y", 1024)) then
                        return
                    end
                    c:sleep(0.05)
                end
            end
        end
        local h = hostile.start { responses = { endless(200), endless(502) } }
        local c = client(h, { timeout = 20 })
        local rows, err = c:services()
        local rows2, err2 = c:services()
        c:close()
        h:stop()
        assert.is_nil(rows)
        assert.equal("decode", err.kind, tostring(err))
        assert.matches("<html> <body>xxx", err.message, 1, true)
        assert.is_nil(rows2)
        assert.equal("http", err2.kind, tostring(err2))
        assert.equal(502, err2.status)
        assert.matches("<html> <body>xxx", err2.message, 1, true)
    end)

    it("an answer that fails to decode partway stops there, whatever follows", function()
        -- A 512 KiB row with a bad escape at its end (found when the row is
        -- decoded whole), then white space in pieces for longer than the
        -- call's timeout: the decode error, not a timeout after waiting on
        -- (which the wait used to spend spinning, the row still buffered).
        local rows, err = services({
            ENVELOPE .. '{"note":"', body_of(512 * 1024), '\\q"}' .. CLOSE,
            { rep = "    ", n = 1200 * 4096, piece = 16 * 1024, every = 0.05 } }, { timeout = 20 })
        assert.is_nil(rows)
        assert.equal("decode", err.kind, tostring(err))
        assert.matches("escape", err.message)
    end)
end)
