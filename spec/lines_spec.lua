-- CSV lines made while the answer arrives (a session request's `csv`, with
-- `spool`): the lines core.decoder { csv } makes of the same answer, the
-- rows checked as the decoder checks them (nothing else reads the answer),
-- the rows' times for sizing a capped window, and exports through them
-- writing what the other paths write.  The same for NDJSON lines
-- (`csv = { ndjson = encode_row }`).
local core = require "wolkvox.core"
local hostile = require "hostile"
local support = require "support"

local TOKEN = "lines-secret-token-0123456789"
local COLS = { "a", "b", "c", "date" }
local encode_row = require("wolkvox.json").encode_row

-- Read a spool whole.
local function slurp_spool(sp)
    local parts = {}
    sp:rewind()
    while true do
        local chunk = sp:read(65536)
        if not chunk then
            break
        end
        parts[#parts + 1] = chunk
    end
    return table.concat(parts)
end

-- One request of `req` to a server giving `response` (raw HTTP): its result.
local function fetch_raw(response, req)
    local h = hostile.start { default = response }
    local s = core.session { token = TOKEN }
    req.url = h.url .. "/api/v2/reports_manager.php?api=cdr_1"
    local res = s:request(req)
    s:close()
    h:stop()
    return res
end

-- The same, the server answering the JSON `body`.
local function fetch(body, req)
    return fetch_raw(hostile.json(200, body), req)
end

-- Feed `body` in pieces of `size` bytes to core.decoder(opts), the token as
-- its secret: the lines, the count and the decoder; or nil, why, decoder.
local function fed(body, opts, size)
    opts.secret = TOKEN
    local d = core.decoder(opts)
    local parts = {}
    for i = 1, #body, math.max(size, 1) do
        local text, err = d:feed(body:sub(i, i + size - 1))
        if not text then
            return nil, err, d
        end
        parts[#parts + 1] = type(text) == "string" and text or ""   -- (a list of rows without lines)
    end
    local env, last, n = d:finish()
    if not env then
        return nil, last, d
    end
    parts[#parts + 1] = type(last) == "string" and last or ""
    return table.concat(parts), n, d
end

-- The lines core.decoder { csv } makes of `body` (already checked there).
local function decoder_lines(body, cols)
    local text, n = assert(fed(body, { csv = cols }, #body))
    return text, n
end

-- Nothing left in the spool directory `dir` (then removed).
local function no_file_left(dir)
    assert.equal("", select(2, support.sh("ls -A '" .. dir .. "'")))
    os.remove(dir)
end

-- The NDJSON lines core.decoder { ndjson } makes of `body`.
local function decoder_ndjson(body)
    local text, n = assert(fed(body, { ndjson = encode_row }, #body))
    return text, n
end

-- Rows of every kind a line holds, many times over (past a feed's 256 KB).
local function big_body(n)
    local kinds = {
        '{"a":"x","b":"y","date":"2026-01-05 00:00:%02d"}',
        '{"a":"1,2","b":"say \\"hi\\"","c":"line\\nbreak","date":"2026-01-05 00:01:%02d"}',
        '{"a":12,"b":1.5,"c":true,"date":"2026-01-05 00:02:%02d"}',
        '{"a":null,"b":{"x":[1,"}"]},"c":[1,2],"date":"2026-01-05 00:03:%02d"}',
        '{"a":"dup","a":"second","date":"2026-01-05 00:04:%02d"}',
        '{"a":"\\u00e9\\ud83d\\ude00","b":"' .. TOKEN .. '","c":"pre' .. TOKEN .. 'post","date":"x%02d"}',
        '{ "date" : "2026-01-05 00:05:%02d" , "c" : "z" , "a" : "sp" }',
        '{"\\u0061":"escaped key","b":"caf\195\169 \226\130\172","date":null,"n":%d}',
        '{"b":"no date %d"}',
    }
    local rows = {}
    for i = 1, n do
        rows[i] = kinds[(i - 1) % #kinds + 1]:format(i % 60)
    end
    return '{"code":200,"error":null,"msg":"ok","data":[' .. table.concat(rows, ",\n") .. ']}', n
end

-- `text` gzipped by gzip(1).
local function gzip(text)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    local p = assert(io.popen("env -u LD_PRELOAD gzip -c -n '" .. path .. "'", "r"))
    local z = p:read("*a")
    p:close()
    os.remove(path)
    return z
end

-- A hostile server's response: the first half of the gzip body `z`, then
-- nothing for `seconds`.
local function half_then_silence(z, seconds)
    local first = hostile.head(200, { ["Content-Type"] = "application/json", ["Content-Encoding"] = "gzip" },
        { "Content-Length: " .. #z, "Connection: close" }) .. z:sub(1, math.floor(#z / 2))
    return function(c)
        c:send(first)
        c:sleep(seconds)
    end
end

describe("a request's csv", function()
    it("gives the lines the decoder makes of the answer, the token masked, no file left behind", function()
        local dir = support.tmpdir()
        local body, n = big_body(20000)
        assert.is_true(#body > 1024 * 1024)
        local res = fetch(body, { spool = dir, csv = { columns = COLS } })
        assert.equal(200, res.status)
        assert.equal(n, res.rows)
        assert.is_true(res.streamed)
        assert.is_nil(res.spool)                    -- the answer itself was not kept
        local text = slurp_spool(res.lines)
        local want = decoder_lines(body, COLS)
        assert.equal(want, text)
        assert.is_nil(text:find(TOKEN, 1, true))
        assert.is_false(res.lines_extra)            -- the first row has only columns' members
        assert.is_nil(res.times)                    -- no cap asked
        res.lines:close()
        no_file_left(dir)
    end)

    it("keeps the answer too with keep_answer, and says when the first row has other members", function()
        local dir = support.tmpdir()
        local body = '{"data":[{"a":"1","zz":"other"},{"a":"2"}]}'
        local res = fetch(body, { spool = dir, csv = { columns = { "a" }, keep_answer = true } })
        assert.equal(2, res.rows)
        assert.equal("1\r\n2\r\n", slurp_spool(res.lines))
        assert.equal(body, slurp_spool(res.spool))
        assert.is_true(res.lines_extra)
        res.lines:close()
        res.spool:close()
        -- Only the first row settles columns: a later row's other member is not said.
        res = fetch('{"data":[{"a":"1"},{"a":"2","zz":"other"}]}', { spool = dir, csv = { columns = { "a" } } })
        assert.is_false(res.lines_extra)
        res.lines:close()
        os.remove(dir)
    end)

    it("gives the rows' times once there are as many rows as the cap, masked, false where none", function()
        local dir = support.tmpdir()
        local body = big_body(9)
        -- The time field among the columns, then one that is not (noted all the same).
        for _, cols in ipairs { COLS, { "a", "b" } } do
            local res = fetch(body, { spool = dir, csv = { columns = cols, time = "date", cap = 9 } })
            local times = assert(res.times)
            assert.equal(9, #times)
            assert.equal("2026-01-05 00:00:01", times[1])
            assert.equal("2026-01-05 00:04:05", times[5])
            assert.equal("x06", times[6])
            assert.is_false(times[8])              -- null
            assert.is_false(times[9])              -- absent
            assert.equal(cols == COLS, not res.lines_extra)
            res.lines:close()
            res = fetch(body, { spool = dir, csv = { columns = cols, time = "date", cap = 10 } })
            assert.is_nil(res.times)
            res.lines:close()
        end
        local res = fetch('{"data":[{"date":"' .. TOKEN .. '"}]}',
            { spool = dir, csv = { columns = COLS, time = "date", cap = 1 } })
        assert.equal(("*"):rep(#TOKEN), res.times[1])
        res.lines:close()
        os.remove(dir)
    end)

    it("refuses what the decoder refuses, a row at a time, where the lines alone would not look", function()
        -- Members no column takes, values a later member replaces, nested
        -- values: the lines never read them, the check must.
        local bad = {
            '{"a":"x","zz":"ctl\1char"}', '{"a":"x","zz":"bad \\x escape"}', '{"a":"x","zz":nul}',
            '{"a":"x","zz":tru}', '{"a":"x","zz":01}', '{"a":"x","zz":1.}', '{"a":"x","zz":{"k":tru}}',
            '{"a":"x","zz":[1,]}', '{"a":tru,"a":"x"}', '{"a":"\\q","a":"x"}', '{"a":nulL}',
            '{"a":"x","b":{"k" 1}}', '{"k\1ey":"x"}', '{"a":"x",}', '{"a":"\\ud800"}',
            '{"date":"\\u12"}',
        }
        local dir = support.tmpdir()
        for _, row in ipairs(bad) do
            local body = '{"data":[{"a":"ok"},' .. row .. ']}'
            local d = core.decoder { count = true }
            local ok = d:feed(body)
            if ok then
                ok = d:finish()
            end
            assert.is_nil(ok, "the decoder takes " .. row)
            local res = fetch(body, { spool = dir, csv = { columns = COLS, time = "date", cap = 1 } })
            assert.is_string(res.decode_error, row)
            assert.is_nil(res.lines, row)
            assert.is_nil(tostring(res.decode_error):find(TOKEN, 1, true))
        end
        -- A row that is not an object has no line (the decoder takes it).
        local res = fetch('{"data":[["not an object"]]}', { spool = dir, csv = { columns = COLS } })
        assert.matches("a row is not an object", res.decode_error)
        -- And takes what it takes.
        local good = {
            '{"a":"x","zz":null}', '{"a":"x","zz":{"k":[true,false,null,1e5,"}"]}}', '{"zz":-0.5e-3}',
            '{"a":"\\u00e9","zz":"\\ud83d\\ude00"}', '{"a":"x","a":null}', '{}',
        }
        for _, row in ipairs(good) do
            local body = '{"data":[' .. row .. ']}'
            res = fetch(body, { spool = dir, csv = { columns = COLS } })
            assert.is_nil(res.decode_error, row)
            assert.equal(decoder_lines(body, COLS), slurp_spool(res.lines), row)
            res.lines:close()
        end
        no_file_left(dir)
    end)

    it("refuses bad fields before anything is sent", function()
        local h = hostile.start { default = hostile.json(200, '{"data":[]}') }
        local s = core.session { token = TOKEN }
        local dir = support.tmpdir()
        local url = h.url .. "/x"
        for _, req in ipairs {
            { url = url, csv = { columns = COLS } },                          -- no spool
            { url = url, spool = dir, csv = "a,b" },
            { url = url, spool = dir, csv = {} },
            { url = url, spool = dir, csv = { columns = { "a", 2 } } },
            { url = url, spool = dir, csv = { columns = COLS, time = 1 } },
            { url = url, spool = dir, csv = { columns = COLS, cap = 0 } },
            { url = url, spool = dir, csv = { columns = COLS, cap = 1.5 } },
            { url = url, spool = dir, csv = { ndjson = true } },
            { url = url, spool = dir, csv = { ndjson = encode_row, columns = COLS } },
        } do
            local ok, err = pcall(s.request, s, req)
            assert.is_false(ok)
            assert.matches("'csv", tostring(err))
        end
        assert.equal(0, #h:requests())
        s:close()
        h:stop()
        os.remove(dir)
    end)
end)

describe("a request's NDJSON lines", function()
    it("are the lines the decoder makes of the answer, the token masked, nested rows the encoder's", function()
        local dir = support.tmpdir()
        local body, n = big_body(20000)
        local res = fetch(body, { spool = dir, csv = { ndjson = encode_row } })
        assert.equal(200, res.status)
        assert.equal(n, res.rows)
        assert.is_nil(res.spool)
        local text = slurp_spool(res.lines)
        assert.equal((decoder_ndjson(body)), text)
        assert.is_nil(text:find(TOKEN, 1, true))
        assert.matches('{"a":"second","date":"2026%-01%-05 00:04:05"}\n', text)
        assert.matches('"b":{"x":%[1,"}"%]}', text)  -- (a nested row: the Lua encoder's line)
        res.lines:close()
        -- The token as a key, plain and escaped, and in a key: masked there too.
        local keyed = '{"data":[{"' .. TOKEN .. '":"v","k' .. TOKEN .. '":"w","' .. TOKEN:gsub("^l", "\\u006c")
            .. '":"x"}]}'
        res = fetch(keyed, { spool = dir, csv = { ndjson = encode_row } })
        local line = slurp_spool(res.lines)
        assert.equal((decoder_ndjson(keyed)), line)
        assert.is_nil(line:find(TOKEN, 1, true))
        assert.matches('"' .. ("%*"):rep(#TOKEN) .. '":"x"', line)
        res.lines:close()
        -- A row whose bytes do not hold the token, one of its values spelling
        -- it with an escape (masked, as the decoder masks it), and rows where
        -- only one of many long values holds it.
        local spelled = '{"data":[{"long_key_name_number_one":"' .. ("v"):rep(40) .. '","b":"'
            .. TOKEN:gsub("^l", "\\u006c") .. '"},{"long_key_name_number_one":"' .. ("w"):rep(40) .. '","b":"x'
            .. TOKEN .. '","c":"' .. ("y"):rep(40) .. '"}]}'
        assert.is_nil(spelled:find(TOKEN .. '"}', 1, true))
        res = fetch(spelled, { spool = dir, csv = { ndjson = encode_row } })
        line = slurp_spool(res.lines)
        assert.equal((decoder_ndjson(spelled)), line)
        assert.is_nil(line:find(TOKEN, 1, true))
        assert.matches('^{"b":"' .. ("%*"):rep(#TOKEN) .. '","long', line)
        assert.matches('"b":"x' .. ("%*"):rep(#TOKEN) .. '"', line)
        res.lines:close()
        res = fetch(spelled, { spool = dir, csv = { columns = { "b", "c" } } })
        line = slurp_spool(res.lines)
        assert.equal(("*"):rep(#TOKEN) .. ",\r\nx" .. ("*"):rep(#TOKEN) .. "," .. ("y"):rep(40) .. "\r\n", line)
        res.lines:close()
        -- A hostile server's near misses (the token but its last byte, again
        -- and again, in keys and values) around one whole token: only that
        -- one masked, the rest as sent.
        local near = TOKEN:sub(1, -2)
        local misses = '{"data":[{"' .. near .. '":"' .. near:rep(50) .. TOKEN .. near:rep(3) .. '","b":"'
            .. near .. near .. '"}]}'
        res = fetch(misses, { spool = dir, csv = { ndjson = encode_row } })
        line = slurp_spool(res.lines)
        assert.equal((decoder_ndjson(misses)), line)
        assert.is_nil(line:find(TOKEN, 1, true))
        assert.equal(50 + 3 + 1 + 2, select(2, line:gsub(near:gsub("%p", "%%%0"), "")))
        res.lines:close()
        res = fetch(misses, { spool = dir, csv = { columns = { "b" } } })
        assert.equal(near .. near .. "\r\n", slurp_spool(res.lines))
        res.lines:close()
        -- gzipped, inflated on the second thread
        res = fetch_raw(hostile.http(200, { ["Content-Type"] = "application/json", ["Content-Encoding"] = "gzip" },
            gzip(body)), { spool = dir, csv = { ndjson = encode_row } })
        assert.equal(text, slurp_spool(res.lines))
        res.lines:close()
        no_file_left(dir)
    end)

    it("take an encoder's raise to the caller and a non-string for a row it cannot write", function()
        -- (The export passes wolkvox.json.encode_row, which never raises; a
        -- session's own caller may pass anything.)
        local dir = support.tmpdir()
        local h = hostile.start { default = hostile.json(200, '{"data":[{"a":"1"},{"a":{"n":1}},{"a":"3"}]}') }
        local s = core.session { token = TOKEN }
        local ok, err = pcall(s.request, s, { url = h.url .. "/x", spool = dir,
            csv = { ndjson = function() error("the encoder's own error") end } })
        assert.is_false(ok)
        assert.matches("the encoder's own error", tostring(err))
        for _, encode in ipairs { function() return 42 end, function() return nil, {} end } do
            local res = s:request { url = h.url .. "/x", spool = dir, csv = { ndjson = encode } }
            assert.matches("the row cannot be written as JSON", res.lines_error)
        end
        local res = s:request { url = h.url .. "/x" }
        assert.equal(3, #res.value.data)
        s:close()
        h:stop()
        no_file_left(dir)
    end)

    it("give the rows' times once there are as many as the cap, a nested row's too", function()
        local dir = support.tmpdir()
        local res = fetch(big_body(9), { spool = dir, csv = { ndjson = encode_row, time = "date", cap = 9 } })
        local times = assert(res.times)
        assert.same({ "2026-01-05 00:00:01", "2026-01-05 00:01:02", "2026-01-05 00:02:03", "2026-01-05 00:03:04",
            "2026-01-05 00:04:05", "x06", "2026-01-05 00:05:07", false, false }, times)
        res.lines:close()
        os.remove(dir)
    end)

    it("refuse what the decoder refuses; a row the encoder cannot write is the output's error", function()
        local dir = support.tmpdir()
        local big = fetch('{"data":[{"a":"1"},{"a":"2","cost":' .. ("9"):rep(400) .. '}]}',
            { spool = dir, csv = { ndjson = encode_row } })
        assert.is_nil(big.decode_error)
        assert.is_nil(big.lines)
        assert.matches("field 'cost' cannot be written as JSON", big.lines_error)
        for _, row in ipairs {
            '{"a":"x","zz":"ctl\1char"}', '{"a":"x","zz":"bad \\x escape"}', '{"a":"x","zz":nul}',
            '{"a":"x","zz":tru}', '{"a":"x","zz":01}', '{"a":"x","zz":{"k":tru}}', '{"a":tru,"a":"x"}',
            '{"a":"\\q","a":"x"}', '{"a":nulL}', '{"k\1ey":"x"}', '{"a":"x",}', '{"a":"\\ud800"}',
            '{"a":"x","a":"\\q"}',
        } do
            local body = '{"data":[{"a":"ok"},' .. row .. ']}'
            local res = fetch(body, { spool = dir, csv = { ndjson = encode_row } })
            assert.is_string(res.decode_error, row)
            assert.is_nil(res.lines, row)
        end
        os.remove(dir)
    end)
end)

-- What the transport inside nginx does with a request's `csv` (it has no C
-- transfer): core.decoder with `time` and `strict`, fed the answer's pieces,
-- its lines and `extra()`, `times()`, `lines_failed()` against the
-- transfer's `lines`, `lines_extra`, `times` and `lines_error`.
describe("core.decoder with time and strict", function()
    it("makes the transfer's lines, extra and times, in pieces of any size", function()
        local dir = support.tmpdir()
        -- (pieces of 1 and 7 bytes over a small answer: under valgrind each feed counts)
        for _, case in ipairs { { big_body(27), { 1, 7, 1e9 } }, { big_body(2000), { 997, 4096, 1e9 } } } do
            local body, sizes = case[1], case[2]
            for _, csv in ipairs { { columns = COLS, time = "date", cap = 27 }, { columns = { "a", "b" }, time = "date",
                    cap = 27 }, { ndjson = encode_row, time = "date", cap = 27 } } do
                local res = fetch(body, { spool = dir, csv = csv })
                local want = slurp_spool(res.lines)
                res.lines:close()
                assert.is_table(res.times)
                for _, size in ipairs(sizes) do
                    local opts = { csv = csv.columns, ndjson = csv.ndjson, time = csv.time, strict = true }
                    local text, n, d = fed(body, opts, size)
                    assert.equal(want, text, size)
                    assert.equal(res.rows, n)
                    assert.equal(res.lines_extra, d:extra())
                    assert.same(res.times, d:times())
                    assert.is_false(d:lines_failed())
                end
            end
        end
        -- Without `time`, no times; without lines, none either.
        local body = big_body(27)
        assert.same({}, select(3, fed(body, { csv = COLS, strict = true }, 65536)):times())
        assert.same({}, select(3, fed(body, { count = true }, 65536)):times())
        assert.is_false(select(3, fed(body, { count = true }, 65536)):extra())
        no_file_left(dir)
    end)

    it("refuses with strict what the decoder refuses, where the lines alone would not look", function()
        local taken = 0
        for _, row in ipairs {
            '{"a":"x","zz":"ctl\1char"}', '{"a":"x","zz":"bad \\x escape"}', '{"a":"x","zz":nul}',
            '{"a":"x","zz":01}', '{"a":"x","zz":{"k":tru}}', '{"a":tru,"a":"x"}', '{"a":"x","b":{"k" 1}}',
        } do
            local body = '{"data":[{"a":"ok"},' .. row .. ']}'
            for _, lines in ipairs { { csv = COLS }, { ndjson = encode_row } } do
                lines.strict = true
                local text, err, d = fed(body, lines, 5)
                assert.is_nil(text, row)
                assert.is_string(err, row)
                assert.is_false(d:lines_failed())
                lines.strict = nil
                if fed(body, lines, 5) then
                    taken = taken + 1   -- (text checked before: the lines alone do not look)
                end
            end
        end
        assert.is_true(taken > 0, "strict changed nothing")
    end)

    it("says when a row's line could not be made, not the answer's fault", function()
        local body = '{"data":[{"a":"1"},{"a":"2","cost":' .. ("9"):rep(400) .. '}]}'
        local text, err, d = fed(body, { ndjson = encode_row, strict = true }, 16)
        assert.is_nil(text)
        assert.matches("field 'cost' cannot be written as JSON", err)
        assert.is_true(d:lines_failed())
        for _, encode in ipairs { function() return 42 end, function() return nil, {} end } do
            text, err, d = fed('{"data":[{"a":{"n":1}}]}', { ndjson = encode, strict = true }, 3)
            assert.is_nil(text)
            assert.matches("the row cannot be written as JSON", err)
            assert.is_true(d:lines_failed())
        end
        assert.has_error(function() core.decoder { csv = COLS, time = 1 } end)
        assert.has_error(function() core.decoder { ndjson = encode_row, time = {} } end)
    end)

    it("writes rows whose keys are empty, repeated or the time field's, as the encoder does", function()
        -- (An empty first key left the keys' buffer unallocated: NULL plus 0
        -- and memcmp of NULL, undefined behaviour clang's UBSan found.)
        local body = '{"data":[{"":"x","a":"1"},{"":"1","":"2"},{"":null},{"b":"2","":"t"}]}'
        local d = core.decoder { secret = TOKEN }
        local rows = assert(d:feed(body))
        local _, last = assert(d:finish())
        for _, r in ipairs(last) do rows[#rows + 1] = r end
        local want, want_csv = {}, {}
        for i, r in ipairs(rows) do
            want[i] = encode_row(r) .. "\n"
            want_csv[i] = core.csv_row(r, { "", "a" })
        end
        for _, size in ipairs { 1, 3, #body } do
            local text, n, lines = fed(body, { ndjson = encode_row, strict = true, time = "" }, size)
            assert.equal(table.concat(want), text)
            assert.equal(4, n)
            assert.same({ "x", "2", false, "t" }, lines:times())
            text = fed(body, { csv = { "", "a" }, strict = true }, size)
            assert.equal(table.concat(want_csv), text)
            assert.matches("^x,1\r?\n2,\r?\n,\r?\nt,\r?\n$", text)
        end
    end)

    it("keeps the time field's name while the options' metamethods drop it and collect", function()
        -- (Under ASan a name read after it was freed is an error.  A long
        -- string is not interned: each one made here is a string of its
        -- own, the one in opts held by nothing else.)
        local function long_name()
            return ("t"):rep(30) .. ("0123456789"):rep(2)
        end
        for _, lines in ipairs { "csv", "ndjson" } do
            local opts = { time = long_name() }
            setmetatable(opts, { __index = function(t, k)
                if k ~= "ndjson" and k ~= "csv" then
                    return nil   -- (asked before the name is read)
                end
                rawset(t, "time", nil)
                collectgarbage()
                collectgarbage()
                if k == lines then
                    return lines == "csv" and { "a", long_name() } or encode_row
                end
            end })
            local d = core.decoder(opts)
            collectgarbage()
            assert(d:feed('{"data":[{"a":"1","' .. long_name() .. '":"x"}]}'))
            assert(d:finish())
            assert.same({ "x" }, d:times())
        end
    end)
end)

describe("exports through lines made as the answer arrives", function()
    local srv, c
    support.suite({}, {}, function(s, x) srv, c = s, x end)

    local function export_text(client, range, opts)
        local out = support.state_dir .. "/lines-" .. tostring(math.random(1e9)) .. ".csv"
        opts.output = out
        assert(client:export("cdr_1", range, opts))
        local text = support.slurp(out)
        os.remove(out)
        return text
    end

    it("write what the in-memory path writes, CSV and NDJSON, capped windows split by the rows' times", function()
        local range = { from = "2026-01-01", to = "2026-03-10" }
        local mem = support.client(srv, { spool_dir = false })
        -- A cap of 500 rows: windows answer it, and are split by their rows' times.
        local small = support.client(srv, { max_rows = 500 })
        local small_mem = support.client(srv, { max_rows = 500, spool_dir = false })
        for _, format in ipairs { "csv", "ndjson" } do
            local want = export_text(mem, range, { format = format })
            assert.equal(want, export_text(c, range, { format = format }), format)
            local before = srv:control("stats").requests
            local got = export_text(small, range, { format = format, bom = format == "csv" })
            -- (More calls than windows: capped ones were asked again in parts.
            -- Which parts depends on which of two calls in flight answers first.)
            assert.is_true(srv:control("stats").requests - before > 3)
            assert.equal(export_text(small_mem, range, { format = format, bom = format == "csv" }), got)
            assert.equal(want, format == "csv" and got:sub(4) or got, format)
        end
        -- NDJSON lines from gzipped answers (inflated on the second thread).
        local want = export_text(mem, range, { format = "ndjson" })
        support.faults(srv, { { match = "cdr_1", gzip = true, times = 3 } })
        assert.equal(want, export_text(c, range, { format = "ndjson" }))
        for _, x in ipairs { mem, small, small_mem } do
            x:close()
        end
    end)

    it("write the same from the fake's answers gzipped (inflated on the second thread)", function()
        local range = { from = "2026-01-01", to = "2026-02-28" }
        local want = export_text(c, range, { format = "csv" })
        local before = srv:control("stats").requests
        support.faults(srv, { { match = "cdr_1", gzip = true, times = 2 } })
        assert.equal(want, export_text(c, range, { format = "csv" }))
        assert.equal(2, srv:control("stats").requests - before)
        -- The same answers as tables (c:cdr_1), inflated the same way.
        support.faults(srv, { { match = "cdr_1", gzip = true, times = 2 } })
        local rows = assert(c:cdr_1(range))
        local mem = support.client(srv, { spool_dir = false })
        local plain = assert(mem:cdr_1(range))
        mem:close()
        assert.equal(#plain, #rows)
        assert.same(plain[#plain], rows[#rows])
    end)

    it("settle the columns from a first row with other members, as the writer does", function()
        local body = '{"code":200,"msg":"ok","data":[{"conn_id":"1","zeta":"z","alpha":"a"},{"conn_id":"2"}]}'
        local h = hostile.start { default = hostile.json(200, body) }
        local range = { from = "2026-01-01", to = "2026-03-31" }
        local texts = {}
        for i, spool_dir in ipairs { support.tmpdir(), false } do
            local x = require("wolkvox").new { base_url = h.url, token = TOKEN, state_dir = false,
                spool_dir = spool_dir, retries = 0 }
            texts[i] = export_text(x, range, { format = "csv", columns = { "conn_id" } })
            x:close()
        end
        h:stop()
        assert.equal(texts[2], texts[1])
        -- Three windows of the same two rows, under one header.
        assert.equal("conn_id,alpha,zeta\r\n" .. ("1,a,z\r\n2,,\r\n"):rep(3), texts[1])
    end)

    it("keep the settled columns when a later window's first row has other members", function()
        -- Windows asked one at a time: the third and fourth are asked once
        -- the file's columns are settled, and their lines alone are kept.
        local plain = hostile.json(200, '{"code":200,"msg":"ok","data":[{"conn_id":"1"},{"conn_id":"2"}]}')
        local more = hostile.json(200, '{"code":200,"msg":"ok","data":[{"conn_id":"3","zz":"x","n":null},'
            .. '{"conn_id":"4","zz":"y"}]}')
        local texts = {}
        for i, spool_dir in ipairs { support.tmpdir(), false } do
            local h = hostile.start { responses = { plain, plain, more, more } }
            local x = require("wolkvox").new { base_url = h.url, token = TOKEN, state_dir = false,
                spool_dir = spool_dir, retries = 0, max_concurrent = 1 }
            texts[i] = export_text(x, { from = "2026-01-01", to = "2026-04-30" },
                { format = "csv", columns = { "conn_id" } })
            x:close()
            h:stop()
        end
        assert.equal(texts[2], texts[1])
        assert.equal("conn_id\r\n1\r\n2\r\n1\r\n2\r\n3\r\n4\r\n3\r\n4\r\n", texts[1])
    end)

    it("take a first row's null member for no column, as the decoder leaves it out", function()
        local body = '{"code":200,"msg":"ok","data":[{"conn_id":"1","gone":null},{"conn_id":"2"}]}'
        local dir = support.tmpdir()
        local res = fetch(body, { spool = dir, csv = { columns = { "conn_id" } } })
        assert.is_false(res.lines_extra)
        res.lines:close()
        res = fetch('{"data":[{"conn_id":"1","obj":{}}]}', { spool = dir, csv = { columns = { "conn_id" } } })
        assert.is_true(res.lines_extra)       -- (a table in the decoded row: a column of its own)
        res.lines:close()
        os.remove(dir)
    end)
end)

-- A gzip answer decoded as it arrives (lines or tables) is inflated on a
-- thread of the core's own (src/inflate.c), not by libcurl: the same lines,
-- and each way a gzip body can be wrong is said as libcurl says it.
describe("a gzip answer made into lines", function()
    local function gz_answer(z, encoding)
        return hostile.http(200, { ["Content-Type"] = "application/json", ["Content-Encoding"] = encoding or "gzip" },
            z)
    end

    it("is inflated to the lines of the answer, its inflated bytes kept with keep_answer", function()
        local dir = support.tmpdir()
        local body, n = big_body(30000)
        local z = gzip(body)
        assert.is_true(#body > 8 * #z)
        local res = fetch_raw(gz_answer(z), { spool = dir, csv = { columns = COLS }, keep_answer = nil })
        assert.is_nil(res.error)
        assert.equal(n, res.rows)
        assert.equal(#body, res.bytes)              -- the answer's bytes, inflated
        assert.equal(decoder_lines(body, COLS), slurp_spool(res.lines))
        res.lines:close()
        res = fetch_raw(gz_answer(z, "x-gzip"), { spool = dir, csv = { columns = COLS, keep_answer = true } })
        assert.equal(body, slurp_spool(res.spool))
        res.spool:close()
        res.lines:close()
        -- Rows decoded as tables go the same way; a body wanted as sent
        -- (decode = false) is libcurl's to inflate, on the same connection.
        local small = '{"data":[{"a":"1"}]}'
        local h = hostile.start { default = gz_answer(gzip(small)) }
        local s = core.session { token = TOKEN }
        local first = s:request { url = h.url .. "/x", spool = dir, csv = { columns = COLS } }
        first.lines:close()
        local rows = s:request { url = h.url .. "/x" }
        assert.equal("1", rows.value.data[1].a)
        assert.equal(#small, rows.bytes)
        local raw_body = s:request { url = h.url .. "/x", decode = false }
        assert.equal(small, raw_body.body)
        local sent = h:requests()
        assert.matches("Accept%-Encoding: gzip\r\n", sent[1])
        assert.matches("Accept%-Encoding: gzip\r\n", sent[2])
        assert.is_nil(sent[3]:find("Accept-Encoding: gzip\r\n", 1, true))  -- (every encoding libcurl has)
        s:close()
        h:stop()
        no_file_left(dir)
    end)

    it("says a corrupt, a cut, an overlong or an unasked-for encoding as libcurl does, leaving no file", function()
        local dir = support.tmpdir()
        local body = big_body(3000)
        local z = gzip(body)
        local corrupt = z:sub(1, 2000) .. ("\255"):rep(64) .. z:sub(2065)
        local cases = {
            { gz_answer(corrupt), "corrupt" },
            { gz_answer(z:sub(1, #z - 300)), "ended early" },
            { gz_answer(z:sub(1, 5)), "ended early" },
            { gz_answer(z, "br"), "not the gzip asked for" },
            { gz_answer(z, "gzip, gzip"), "not the gzip asked for" },
            { gz_answer(body:sub(1, 100)), "corrupt" },       -- said to be gzip, and is not
            { gz_answer(z .. "tail"), "data after its gzip data ends" },
            -- (more than the thread takes in at once: no transfer left paused)
            { gz_answer(z .. ("x"):rep(300000)), "data after its gzip data ends" },
        }
        for i, case in ipairs(cases) do
            -- Lines, and rows as tables.
            for _, req in ipairs { { spool = dir, csv = { columns = COLS, keep_answer = true } }, {} } do
                local res = fetch_raw(case[1], req)
                local e = res.error
                assert.is_table(e, "case " .. i)
                assert.equal("transport", e.kind, "case " .. i)
                assert.equal("protocol", e.reason, "case " .. i)
                assert.equal(61, e.curl_code, "case " .. i)     -- CURLE_BAD_CONTENT_ENCODING
                assert.matches(case[2], e.message, 1, true)
                assert.is_nil(res.lines)
                assert.is_nil(res.value)
            end
        end
        no_file_left(dir)
    end)

    it("stops a gzip bomb at the size cap with memory flat", function()
        -- 300 MiB of rows, about 300 KB of gzip, against a 64 MiB cap.
        local code = ([[
            local core = require "wolkvox.core"
            local hostile = require "hostile"
            local p = assert(io.popen("env -u LD_PRELOAD sh -c '(printf \"{\\\"data\\\":[\"; "
                .. "yes \"{\\\"a\\\":\\\"0\\\"},\" 2>/dev/null | head -c 314572800) | gzip -c'", "r"))
            local z = p:read("*a")
            p:close()
            local h = hostile.start { default = hostile.http(200, { ["Content-Type"] = "application/json",
                ["Content-Encoding"] = "gzip" }, z) }
            local s = core.session { token = "bomb-token-0123", max_bytes = 64 * 1048576 }
            local res = s:request { url = h.url .. "/x", spool = %q, csv = { columns = { "a" } } }
            s:close()
            h:stop()
            local status = io.open("/proc/self/status"):read("*a")
            io.write(tostring(res.error and res.error.kind), " ", status:match("VmHWM:%%s*(%%d+)"))
        ]]):format(support.tmpdir())
        local out = select(2, support.sh(support.lua_command(code)))
        local kind, kb = out:match("(%S+) (%d+)%s*$")
        assert.equal("too_large", kind, out)
        -- Rows of lines go to the spool as they come: memory does not grow
        -- with the answer (nor reach the cap).
        assert.is_true(tonumber(kb) < 48 * 1024, out)
    end)

    it("lets a session close while a gzip answer is on its way, the thread ended", function()
        local dir = support.tmpdir()
        local h = hostile.start { default = half_then_silence(gzip(big_body(20000)), 5) }
        local s = core.session { token = TOKEN }
        local id = s:start { url = h.url .. "/x", spool = dir, csv = { columns = COLS } }
        assert.is_false(s:wait(0.5))
        assert.is_number(id)
        local t0 = core.now()
        s:close()
        assert.is_true(core.now() - t0 < 2)
        h:stop()
        no_file_left(dir)
    end)
end)

describe("a command-line export cut short while a gzip answer is inflated #children", function()
    it("ends with 130 on Ctrl-C at once, nothing under the name, no file left behind", function()
        local home, tmp = support.tmpdir(), support.tmpdir()
        -- (nothing after the first half for longer than the test waits)
        local h = hostile.start { default = half_then_silence(gzip((big_body(40000))), 20) }
        local out = home .. "/cdr.csv"
        local cli = table.concat({ "env -u LD_PRELOAD -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE -u WOLKVOX_SERVER",
            "HOME=" .. home, "TMPDIR=" .. tmp, "WOLKVOX_TOKEN=" .. TOKEN, "lua5.4 bin/wolkvox",
            "--base-url", h.url, "--state-dir", support.state_dir,
            "report cdr_1 --from 2026-01-01 --to 2026-01-31 -o", out }, " ")
        local t0 = core.now()
        local code, text = support.sh(cli .. " 2>&1 & pid=$!; sleep 1.5; kill -INT $pid; wait $pid")
        local took = core.now() - t0
        h:stop()
        assert.equal(130, code, text)
        assert.matches("interrupted", text, 1, true)
        assert.is_true(took < 6, "ended within a few seconds of Ctrl-C: " .. took)
        assert.is_nil(io.open(out, "rb"))
        assert.equal("", select(2, support.sh("find '" .. home .. "' '" .. tmp .. "' -mindepth 1")))
        assert.is_nil(text:find(TOKEN, 1, true))
        os.execute("rm -rf '" .. home .. "' '" .. tmp .. "'")
    end)
end)
