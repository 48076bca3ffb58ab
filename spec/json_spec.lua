-- The C JSON decoder, checked against lua-cjson on the same texts.
local core = require "wolkvox.core"
local cjson = require("cjson").new()

-- Compare a core.decode result with a cjson result: cjson keeps null members
-- as cjson.null where the core leaves them out; numbers compare by value.
local function same(a, b)
    if b == cjson.null then
        return a == core.null
    end
    if type(a) ~= type(b) then
        return false
    end
    if type(a) ~= "table" then
        return a == b or (a ~= a and b ~= b)
    end
    for k, v in pairs(b) do
        if v == cjson.null and type(k) == "string" then
            if a[k] ~= nil then
                return false
            end
        elseif not same(a[k], v) then
            return false
        end
    end
    for k in pairs(a) do
        if b[k] == nil then
            return false
        end
    end
    return true
end

-- A generator of whole numbers 1..n from `seed`, so runs repeat.
local function seeded(seed)
    return function(n)
        seed = (seed * 1103515245 + 12345) % 2147483648
        return seed % n + 1
    end
end

-- A random JSON text, made from a seeded generator so runs repeat.
local function random_json(rand, depth)
    local pick = rand(depth > 3 and 6 or 8)
    if pick == 1 then
        return tostring(rand(2000001) - 1000001)
    elseif pick == 2 then
        return string.format("%.6g", (rand(2000001) - 1000001) / (rand(997) + 1))
    elseif pick == 3 then
        local chars = { "a", "Z", "0", " ", "\\n", "\\\"", "\\\\", "\\/", "\\u00e9", "\\ud83d\\ude00",
            "ñ", "\\t", "Bogotá", "\\u0000" }
        local s = {}
        for i = 1, rand(12) - 1 do
            s[i] = chars[rand(#chars)]
        end
        return '"' .. table.concat(s) .. '"'
    elseif pick == 4 then
        return ({ "true", "false", "null" })[rand(3)]
    elseif pick == 5 or pick == 7 then
        local items = {}
        for i = 1, rand(5) - 1 do
            items[i] = random_json(rand, depth + 1)
        end
        return "[" .. table.concat(items, ",") .. "]"
    else
        local items = {}
        for i = 1, rand(6) - 1 do
            items[i] = string.format('"k%d" : %s', rand(8), random_json(rand, depth + 1))
        end
        return "{ " .. table.concat(items, " ,\n") .. " }"
    end
end

-- What `feed(pieces)` makes of `body` given whole: the same when it comes
-- cut in two at every byte, and byte by byte.
local function same_cut_anywhere(body, feed)
    local whole = assert(feed { body })
    for at = 1, #body - 1 do
        assert.equal(whole, feed { body:sub(1, at), body:sub(at + 1) }, "cut at " .. at)
    end
    local bytes = {}
    for i = 1, #body do
        bytes[i] = body:sub(i, i)
    end
    assert.equal(whole, feed(bytes))
    return whole
end

describe("core.decode", function()
    it("reads an envelope with rows as native tables", function()
        local v = assert(core.decode('{"code":200,"error":null,"msg":"2 records were found",'
            .. '"data":[{"rp_id":"1001","rp_name":"IVR"},{"rp_id":"1002","rp_name":"Ventas"}]}'))
        assert.equal(200, v.code)
        assert.is_nil(v.error)
        assert.equal("2 records were found", v.msg)
        assert.equal(2, #v.data)
        assert.equal("Ventas", v.data[2].rp_name)
    end)

    it("keeps integers integral and reads fractions and exponents", function()
        local v = assert(core.decode("[0, -7, 123456789012345678, 2.5, -1e3, 1E-2]"))
        assert.equal(0, v[1])
        assert.equal(-7, v[2])
        assert.equal(2.5, v[4])
        assert.equal(-1000, v[5])
        assert.equal(0.01, v[6])
        if math.type then
            assert.equal("integer", math.type(v[1]))
            assert.equal("integer", math.type(v[3]))
            assert.equal(123456789012345678, v[3])
        end
    end)

    it("unescapes strings, including surrogate pairs, to UTF-8", function()
        local v = assert(core.decode([=["a\"b\\c\/d\b\f\n\r\t\u00e9\u20ac\ud83d\ude00"]=]))
        assert.equal('a"b\\c/d\b\f\n\r\t\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80', v)
        assert.equal("\xC3\xA9", core.decode([["\u00e9"]]))
        assert.equal("\xF0\x9F\x98\x80", core.decode([["\ud83d\ude00"]]))
        assert.equal("pre\0post", core.decode([["pre\u0000post"]]))
    end)

    it("leaves null members out of objects and keeps them in arrays", function()
        local v = assert(core.decode('{"a":null,"b":[1,null,3]}'))
        assert.is_nil(v.a)
        assert.equal(core.null, v.b[2])
        assert.equal(3, v.b[3])
        assert.equal(core.null, core.decode("null"))
    end)

    it("agrees with lua-cjson on a corpus of texts", function()
        local corpus = {
            "{}", "[]", "[[[]]]", '{"a":{"b":{"c":[1,2,{"d":"e"}]}}}', '""', '"x"', "0", "-0",
            "1.5e300", "[true,false,null]", '{"dup":1,"dup":2}', ' \n\t[ 1 , 2 ]\r\n',
            '{"code":"200","data":[{"licenses":"25","pbx":"yes"}]}',
        }
        local rand = seeded(20261124)
        for _ = 1, 400 do
            corpus[#corpus + 1] = random_json(rand, 0)
        end
        for _, text in ipairs(corpus) do
            local expected = cjson.decode(text)
            local got, err = core.decode(text)
            assert.is_nil(err, text)
            assert.is_true(same(got, expected), "differs from cjson on: " .. text)
        end
    end)

    it("refuses what lua-cjson refuses, with the byte position", function()
        local bad = { "", " ", "{", "[1,]", "[1 2]", '{"a" 1}', '{"a":1,}', "{1:2}", "tru", "nul",
            ".5", "-", "1e", '"abc', '"\\x"', '"\\u12"', "[1]]", "[] x", "'a'",
            '"\\ud800"', '"\\udc00x"' }
        for _, text in ipairs(bad) do
            local v, err = core.decode(text)
            assert.is_nil(v, text)
            assert.matches("byte %d+", err, 1, false, text)
            assert.is_false(pcall(cjson.decode, text), "cjson accepts " .. text)
        end
    end)

    it("is stricter than lua-cjson where RFC 8259 says so", function()
        for _, text in ipairs { "01", "1.", "NaN", "Infinity", "+1", '["a\1b"]' } do
            assert.is_true(pcall(cjson.decode, text), text)
            local v, err = core.decode(text)
            assert.is_nil(v, text)
            assert.matches("byte %d+", err)
        end
    end)

    it("refuses nesting past 1000 levels without crashing", function()
        local ok = core.decode(string.rep("[", 1000) .. string.rep("]", 1000))
        assert.is_table(ok)
        local v, err = core.decode(string.rep("[", 1001) .. string.rep("]", 1001))
        assert.is_nil(v)
        assert.matches("too deep", err)
        v, err = core.decode(string.rep('{"a":', 5000))
        assert.is_nil(v)
        assert.matches("too deep", err)
    end)

    it("tolerates a UTF-8 byte order mark", function()
        assert.same({ 1 }, core.decode("\xEF\xBB\xBF[1]"))
    end)

    it("raises on a non-string argument (a programming error)", function()
        assert.has_error(function() core.decode({}) end)
    end)
end)

-- \u escapes written in upper-case hex (as some servers write them) mean
-- the same in the three decoders: the whole text, the incremental one and
-- the incremental one making CSV lines from the text (issue #21).
describe("\\u escapes in upper-case hex", function()
    local body = '{"code":"200","data":[{"a":"\\u00E9\\u00C9\\uD83D\\uDE00","\\u0042":"\\u002D"}],"msg":"ok"}'
    local want = { a = "\195\169\195\137\240\159\152\128", B = "-" }

    it("decode alike in core.decode, core.decoder, and core.decoder { csv = ... }", function()
        assert.same({ want }, core.decode(body).data)
        local d = core.decoder()
        local rows = assert(d:feed(body))
        local _, rest = d:finish()
        for _, r in ipairs(rest) do
            rows[#rows + 1] = r
        end
        assert.same({ want }, rows)
        local c = core.decoder { csv = { "a", "B" } }
        local text = assert(c:feed(body))
        local _, last = c:finish()
        assert.equal(core.csv_row(want, { "a", "B" }), text .. last)
        -- Mixed case is the same code point.
        assert.same(core.decode('"\\u00e9"'), core.decode('"\\u00E9"'))
    end)
end)

-- The CSV lines the decoder makes from the answer's text (core.decoder
-- { csv = columns }) are those core.csv_row makes of the decoded rows,
-- whatever the order of a row's members: the columns' own, another, one
-- per row, missing or extra members, a member given twice (the later one
-- wins), a column named twice (both cells).
describe("CSV lines from the answer's text", function()
    local function lines(body, columns)
        local c = core.decoder { csv = columns }
        local text = assert(c:feed(body))
        local _, last = c:finish()
        return text .. last
    end
    local function rows_csv(body, columns)
        local out = {}
        for _, r in ipairs(core.decode(body).data) do
            out[#out + 1] = core.csv_row(r, columns)
        end
        return table.concat(out)
    end

    it("match csv_row of the decoded rows, members in any order", function()
        local rows = {
            '{"a":"1","b":"2","c":"3"}',
            '{"c":"6","a":"4","b":"5"}',
            '{"b":"8","c":"9"}',
            '{"a":"10","z":"x","b":"11","c":"12","y":13}',
            '{"a":"13","b":"14","a":"15","c":"16"}',
            '{}',
            '{"c":"x,y","b":"q\\"r","a":7.5}',
        }
        local body = '{"code":"200","data":[' .. table.concat(rows, ",") .. '],"msg":"ok"}'
        for _, columns in ipairs { { "a", "b", "c" }, { "c", "b", "a" }, { "b" }, { "a", "b", "a" },
            { "q", "c", "c", "a" }, {} } do
            assert.equal(rows_csv(body, columns), lines(body, columns), table.concat(columns, ","))
        end
    end)

    -- A row is made in one reading when it is whole in what has arrived,
    -- else its end is found first: the same lines however the text comes.
    it("are the same however the answer is cut into pieces, rows skipped or not", function()
        local rows = {}
        for i = 1, 12 do
            rows[i] = string.format('{"a":"%s","n":%d,"b":"x\\"y,z","c":[1,{"d":"}"}],"e":%s}', ("v"):rep(i),
                i * 7, i % 2 == 0 and "null" or "1.5e3")
        end
        local body = '{"code":"200","data":[ ' .. table.concat(rows, " ,\n") .. ' ],"msg":"ok"}'
        local columns = { "a", "n", "b", "c", "e" }
        for _, skip in ipairs { 0, 5 } do
            local function feed(pieces)
                local c = core.decoder { csv = columns, skip = skip }
                local out = {}
                for _, piece in ipairs(pieces) do
                    out[#out + 1] = assert(c:feed(piece))
                end
                local _, last = c:finish()
                return table.concat(out) .. last
            end
            local whole = same_cut_anywhere(body, feed)
            assert.equal(12 - skip, select(2, whole:gsub("\r\n", "")))
        end
    end)

    it("say what is wrong with a malformed row, whole or in pieces", function()
        local body = '{"code":"200","data":[{"a":"1"},{"a" "2"},{"a":"3"}],"msg":"ok"}'
        for _, cut in ipairs { #body, 30, 35 } do
            local c = core.decoder { csv = { "a" } }
            local _, err = c:feed(body:sub(1, cut))
            if not err and cut < #body then
                _, err = c:feed(body:sub(cut + 1))
            end
            if not err then
                _, err = c:finish()
            end
            assert.matches("malformed row", tostring(err))
        end
    end)
end)

-- json.c's value cache: a member's short string value seen before is pushed
-- again from a table instead of being made again.  Whatever the cache holds,
-- the rows must be what lua-cjson makes of the same text (the token masked).
describe("repeated values (the decoder's value cache)", function()
    local SECRET = "tok-12345"

    -- 3,000 rows (past the size where core.decode starts the cache): values
    -- that repeat, escaped and plain spellings of one string, values that
    -- share their length and their first and last eight bytes (one slot
    -- each), ids that never repeat then a column that starts repeating,
    -- long values, empty ones, nulls, the token alone and inside a value.
    local function answer()
        local rows = {}
        for i = 1, 3000 do
            local agent = ({ "Ana", "Jos\\u00e9", "José", "Luis Ángel", "-" })[i % 5 + 1]
            local twin = string.format("AAAAAAAA%02dZZZZZZZZ", i % 37)
            local later = i <= 1500 and tostring(100000 + i) or ({ "x", "y", "z" })[i % 3 + 1]
            local long = ("description %d "):format(i % 4):rep(4)
            local token = ({ SECRET, "a" .. SECRET .. "b", "tok-1234", "" })[i % 4 + 1]
            rows[i] = string.format('{"agent":"%s","id":"%d","twin":"%s","later":"%s","long":"%s",'
                .. '"token":"%s","n":%d,"gone":null,"esc":"%s"}', agent, i, twin, later, long, token,
                i % 3, i % 2 == 0 and 'a\\"b' or "a b")
        end
        return '{"code":200,"data":[' .. table.concat(rows, ",") .. "]}"
    end

    local function masked(v)
        if type(v) == "string" then
            return (v:gsub(SECRET:gsub("%p", "%%%0"), ("*"):rep(#SECRET)))
        elseif type(v) == "table" and v ~= cjson.null then
            local t = {}
            for k, x in pairs(v) do
                t[k] = masked(x)
            end
            return t
        end
        return v
    end

    it("decodes as lua-cjson does, whole or fed in pieces, the token masked", function()
        local text = answer()
        assert.is_true(#text > 65536)
        local expected = cjson.decode(text)
        assert.is_true(same(assert(core.decode(text)), expected))
        assert.is_true(same(assert(core.decode(text, SECRET)), masked(expected)))
        for _, piece in ipairs { 1000, 4096, 65536 } do
            local d = core.decoder { secret = SECRET }
            local got = {}
            for i = 1, #text, piece do
                for _, row in ipairs(assert(d:feed(text:sub(i, i + piece - 1)))) do
                    got[#got + 1] = row
                end
            end
            local _, rest = assert(d:finish())
            for _, row in ipairs(rest) do
                got[#got + 1] = row
            end
            assert.is_true(same(got, masked(expected).data), "pieces of " .. piece)
        end
    end)

    it("holds no string of an earlier answer (a session's next request)", function()
        -- One session, so one decoder context, for three answers, the
        -- collector run between them: a value cached from an earlier answer
        -- would be read after it was freed (the ASan and valgrind runs say
        -- so) or pushed into the next answer.
        local hostile = require "hostile"
        local texts = { answer(), (answer():gsub("Luis Ángel", "Luisa Ángela")), answer() }
        local h = hostile.start { responses = {
            hostile.json(200, texts[1]), hostile.json(200, texts[2]), hostile.json(200, texts[3]),
        } }
        local s = core.session { token = SECRET }
        for round = 1, 3 do
            local res = s:request { url = h.url .. "/x" }
            assert.equal(200, res.status)
            assert.is_true(same(res.value, masked(cjson.decode(texts[round]))), "answer " .. round)
            res = nil -- luacheck: ignore 311
            collectgarbage()
            collectgarbage()
        end
        s:close()
        h:stop()
    end)
end)

-- core.json_row (src/rowjson.c) writes NDJSON and JSON rows: the same bytes
-- as wolkvox.json's Lua encoder, or nil to leave a row to it.
describe("core.json_row", function()
    local json = require "wolkvox.json"

    local function check(row, label)
        local got = core.json_row(row)
        assert.equal(json.encode(row), got, label)
        assert.equal(got, json.encode_row(row), label)
    end

    it("writes what the Lua encoder writes, byte for byte", function()
        local rand = seeded(20261207)
        local numbers = { 0, -0.0, 1, -1, 0.1, 1 / 3, 2 ^ 53, 2 ^ 53 + 2, -(2 ^ 53), 2 ^ 60, 1e300, -1e-300,
            123456789012345, 5e-324 }
        if math.type then
            -- (integers past 2^53 are written as the Lua encoder writes them: %.17g)
            for _, v in ipairs { 9007199254740993, -9007199254740993, math.maxinteger, math.mininteger, 0 } do
                numbers[#numbers + 1] = v
            end
        end
        local keys = { "a", "B", "z", "10", "9", "", "é", "a b", "\0x", "x\0", "agent_name", "Agent_Name" }
        for n = 1, 2000 do
            local row = {}
            for _ = 1, rand(12) - 1 do
                local pick = rand(5)
                local v
                if pick == 1 then
                    local b = {}
                    for i = 1, rand(8) - 1 do
                        b[i] = string.char(rand(256) - 1)
                    end
                    v = table.concat(b)
                elseif pick == 2 then
                    v = numbers[rand(#numbers)]
                elseif pick == 3 then
                    v = rand(2) == 1
                elseif pick == 4 then
                    v = core.null
                else
                    v = "Bogotá \"D.C.\"\\\n" .. rand(100)
                end
                row[keys[rand(#keys)]] = v
            end
            check(row, "row " .. n)
        end
        check({}, "empty")
    end)

    it("keeps the keys' order right when rows change shape", function()
        -- Its order of the last row's keys is reused only for the same keys
        -- in the same order: the same keys put in another order, another
        -- key set of the same size, one more key.
        local rows = {
            { a = "1", b = "2", c = "3" }, { c = "3", b = "2", a = "1" }, { a = "1", b = "2", d = "3" },
            { b = "2", a = "1", c = "3", d = "4" }, { a = "1", b = "2", c = "3" },
        }
        for i = 1, 3 do
            local t = {}
            for j = 60, 1, -1 do
                t["k" .. (j * 7919 + i) % 1000] = j
            end
            rows[#rows + 1] = t
        end
        for i, row in ipairs(rows) do
            check(row, "row " .. i)
        end
        local wide = {}
        for i = 1, 300 do
            wide["k" .. i] = i -- (past the 256 members it takes)
        end
        assert.is_nil(core.json_row(wide))
        assert.equal(json.encode(wide), json.encode_row(wide))
    end)

    it("leaves to the Lua encoder what it does not take", function()
        local nested = { t = { 1, 2 }, u = {} }
        for _, row in ipairs { nested, setmetatable({ a = "1" }, {}), { [1] = "x" }, { f = print },
            { n = 0 / 0 }, { n = math.huge } } do
            assert.is_nil(core.json_row(row))
        end
        assert.equal('{"t":[1,2],"u":{}}', json.encode_row(nested))
        local text, why = json.encode_row({ n = math.huge })
        assert.is_nil(text)
        assert.matches("field 'n' cannot be written as JSON", why)
        assert.has_error(function() core.json_row("x") end)
    end)
end)

-- core.decoder { ndjson = encode_row }: each row's NDJSON line made from the
-- answer's text in C (csv.c's NDJSON mode), or by the encoder for the rows
-- it leaves to it: what encode_row makes of the decoded row.
describe("NDJSON lines from the answer's text", function()
    local json = require "wolkvox.json"
    local SECRET = "tok-12345"

    local function feed(pieces, opts)
        local d = core.decoder { ndjson = json.encode_row, secret = opts and opts.secret, skip = opts and opts.skip }
        local out = {}
        for _, piece in ipairs(pieces) do
            local text, err = d:feed(piece)
            if not text then
                return nil, err
            end
            out[#out + 1] = text
        end
        local _, last, n = d:finish()
        if not last then
            return nil, n
        end
        return table.concat(out) .. last
    end
    local function want(body, secret, skip)
        local out = {}
        for i, row in ipairs(core.decode(body, secret).data) do
            if i > (skip or 0) then
                out[#out + 1] = json.encode_row(row) .. "\n"
            end
        end
        return table.concat(out)
    end

    it("are what encode_row makes of the decoded rows", function()
        local rows = {
            '{"b":"2","a":"1","c":"3"}', '{"c":"6","a":"4","b":"5"}', '{"a":"13","b":"14","a":"15","c":"16"}',
            '{"a":"1","a":null}', '{"a":null,"a":"2"}', '{}', '{ "x" : true , "y" : false , "z" : null }',
            '{"n":1,"f":1.5,"e":1e2,"m":-0,"big":12345678901234567890,"i":9007199254740993,"t":0.1}',
            '{"esc":"q\\"r\\\\s\\/t\\u00e9\\ud83d\\ude00\\n\\u0001\\u007f","r\\u00e9":"\\u0041"}',
            '{"tok":"a' .. SECRET .. 'b","' .. SECRET .. '":"k","k' .. SECRET .. '":"' .. SECRET .. '"}',
            '{"nested":{"b":[1,null,{}],"a":[]},"s":"x"}', '{"Z":"1","a":"2","10":"3","9":"4","\\u0000":"5"}',
            '{"del":"\127","utf":"Bogotá São Paulo ñ"}',
        }
        local wide = {}
        for i = 1, 300 do
            wide[i] = string.format('"k%d":"%d"', i, i)
        end
        rows[#rows + 1] = "{" .. table.concat(wide, ",") .. "}"
        local body = '{"code":"200","data":[' .. table.concat(rows, ",") .. '],"msg":"ok"}'
        for _, secret in ipairs { false, SECRET } do
            assert.equal(want(body, secret or nil), feed({ body }, { secret = secret or nil }))
        end
        assert.equal(want(body, nil, 4), feed({ body }, { skip = 4 }))
    end)

    it("are the same however the answer is cut into pieces", function()
        local rows = {}
        for i = 1, 12 do
            rows[i] = string.format('{"a":"%s","n":%d,"b":"x\\"y,z","c":%s,"e":%s}', ("v"):rep(i), i * 7,
                i % 3 == 0 and '[1,{"d":"}"}]' or '"plain"', i % 2 == 0 and "null" or "1.5e3")
        end
        local body = '{"code":"200","data":[ ' .. table.concat(rows, " ,\n") .. ' ],"msg":"ok"}'
        assert.equal(want(body), same_cut_anywhere(body, feed))
    end)

    it("agree with encode_row on random rows, and on the realistic answer's", function()
        local rand = seeded(20261207)
        local rows = {}
        for i = 1, 400 do
            local members = {}
            for j = 1, rand(8) - 1 do
                members[j] = string.format('"k%d":%s', rand(6), random_json(rand, 2))
            end
            rows[i] = "{" .. table.concat(members, ",") .. "}"
        end
        local body = '{"data":[' .. table.concat(rows, ",") .. "]}"
        assert.equal(want(body, SECRET), feed({ body }, { secret = SECRET }))
        local text = dofile("bench/realistic.lua").answer { rows = 2000, seed = 7, escaped = true }
        assert.equal(want(text), feed({ text }))
    end)

    it("say which field the encoder cannot write, and refuse bad options", function()
        local body = '{"data":[{"a":"1"},{"agent":"x","cost":' .. ("9"):rep(400) .. '}]}'
        local text, err = feed({ body })
        assert.is_nil(text)
        assert.matches("field 'cost' cannot be written as JSON", err)
        assert.has_error(function() core.decoder { ndjson = true } end)
        assert.has_error(function() core.decoder { ndjson = json.encode_row, csv = { "a" } } end)
    end)
end)
