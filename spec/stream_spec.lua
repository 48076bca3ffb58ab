-- wolkvox.core.decoder: answers fed in chunks give the tables core.decode
-- gives the whole text, wherever the chunks are cut.
local core = require "wolkvox.core"
local support = require "support"

-- Feed `text` in chunks of the given sizes (cycled); the envelope, every
-- row in order, and whether the rows were streamed; or nil, err.
local function stream(text, sizes, opts)
    local d = core.decoder(opts)
    local rows, i, k = {}, 1, 0
    while i <= #text do
        k = k + 1
        local n = sizes[(k - 1) % #sizes + 1]
        local got, err = d:feed(text:sub(i, i + n - 1))
        if not got then
            return nil, err
        end
        for _, r in ipairs(got) do
            rows[#rows + 1] = r
        end
        i = i + n
    end
    local env, last, count = d:finish()
    if env == nil and type(last) == "string" then
        return nil, last
    end
    for _, r in ipairs(last) do
        rows[#rows + 1] = r
    end
    assert.equal(#rows, count)
    if d:shape() == "value" then
        env = { value = env }
    end
    return env, rows, d:streamed()
end

-- What core.decode makes of `text`, in the decoder's terms.
local function whole(text, opts)
    local v, err = core.decode(text, opts and opts.secret)
    if v == nil then
        return nil, err
    end
    if type(v) ~= "table" or text:match("^%s*null%s*$") then
        return { value = v }, {}
    end
    if v[1] ~= nil or (next(v) == nil and text:match("^%s*%[")) then
        return {}, v -- a bare array of rows
    end
    local rows = type(v.data) == "table" and (v.data[1] ~= nil or next(v.data) == nil) and v.data or nil
    if rows then
        v.data = nil
        return v, rows
    end
    return v, {}
end

local function same(text, sizes, opts)
    local env, rows = stream(text, sizes, opts)
    local wenv, wrows = whole(text, opts)
    if wenv == nil then
        assert.is_nil(env, "the decoder took what core.decode refused: " .. text:sub(1, 80))
        return
    end
    assert.is_table(env, tostring(rows) .. " for " .. text:sub(1, 80))
    assert.same(wenv, env)
    assert.same(wrows, rows)
end

local TEXTS = {
    '{"code":200,"error":null,"msg":"2 records were found","data":[{"a":"1"},{"a":"2","b":"x"}]}',
    '{"data":[],"code":"200","msg":""}',
    '{"msg":"a","data":[{"n":"\\u00e9\\ud83d\\ude00 \\"]},{\\"","m":[1,[2,{"x":"}"}]]}],"code":200}',
    '[{"a":1},{"b":[true,false,null]},3,"s",[]]',
    '[]',
    '{}',
    '{"code":404,"error":"Validate dates entered","msg":"Validate dates entered"}',
    '{"code":200,"data":{"files":[{"name":"a"}]},"next_page_token":"x"}',
    '{"code":200,"data":"dtmf sent"}',
    '\239\187\191{"code":200,"data":[{"a":"bom"}]}',
    '  \n{ "code" : 200 , "data" : [ { "a" : "sp" } , { "a" : -1.5e3 } ] }  \n',
    '"just a string"',
    '12345',
    'null',
}

local BAD = {
    '{"data":[{"a":1},]}', '{"a":1,}', '{"a" 1}', '{"data":[{"a":1}', '{"data":[1 2]}', '{"a":1} x',
    '{"data":[{"a":"unterminated}]}', '[{"a":1}', '{"a":tru}', '{"a":"\\x"}', '',
    '{"data":[' .. ("["):rep(1100) .. ("]"):rep(1100) .. ']}',
    -- A byte order mark anywhere but at the very start (found by make fuzz-stream).
    '\n\239\187\191[]', '\239\187\191\n\239\187\191[]', ' \239\187\1910', '[1,\239\187\1912]',
}

describe("wolkvox.core.decoder", function()
    it("gives core.decode's tables for answers cut at every byte", function()
        for _, text in ipairs(TEXTS) do
            for cut = 1, #text do
                local env, rows = stream(text, { cut, #text })
                local wenv, wrows = whole(text)
                assert.same(wenv, env, "cut at " .. cut .. " of " .. text)
                assert.same(wrows, rows, "cut at " .. cut .. " of " .. text)
            end
            same(text, { 1 })
        end
    end)

    it("streams the rows of data, and keeps every other member whatever its place", function()
        local env, rows, streamed = stream(TEXTS[3], { 5 })
        assert.is_true(streamed)
        assert.equal("a", env.msg)
        assert.equal(200, env.code)
        assert.is_nil(env.data)
        assert.equal(1, #rows)
        local _, _, not_streamed = stream(TEXTS[8], { 5 })
        assert.is_false(not_streamed)
    end)

    it("refuses what core.decode refuses, fed whole or a byte at a time", function()
        for _, text in ipairs(BAD) do
            for _, sizes in ipairs { { 1 }, { 3 }, { #text + 1 } } do
                local env, err = stream(text, sizes)
                assert.is_nil(env, text)
                assert.is_string(err)
            end
            assert.is_nil(core.decode(text), text)
        end
    end)

    it("hands rows over as soon as each is complete", function()
        local d = core.decoder()
        assert.same({ { a = "1" } }, d:feed('{"code":200,"data":[{"a":"1"},{"a"'))
        assert.same({ { a = "2" } }, d:feed(':"2"}'))
        assert.same({}, d:feed(',{"a":"3"'))
        local env, err = d:finish()
        assert.is_nil(env)
        assert.matches("unexpected end of input", err)
        -- And after a failure, every call says the same.
        local again, err2 = d:feed("}]}")
        assert.is_nil(again)
        assert.equal(err, err2)
    end)

    it("delivers the rows of each data member when an answer repeats it", function()
        -- (core.decode keeps the last; rows already handed over stay handed over)
        local _, rows = stream('{"data":[{"a":1}],"data":[{"b":2}]}', { 3 })
        assert.same({ { a = 1 }, { b = 2 } }, rows)
    end)

    it("masks a secret in every decoded string, as core.decode does", function()
        local text = '{"msg":"token s3cr3t-t0k","data":[{"s3cr3t-t0k":"x\\u0073\\u00333cr3t-t0k"}]}'
        same(text, { 4 }, { secret = "s3cr3t-t0k" })
        local env, rows = stream(text, { 4 }, { secret = "s3cr3t-t0k" })
        assert.equal("token **********", env.msg)
        assert.is_nil(next(rows[1]):find("s3cr3t", 1, true))
    end)

    describe("on the fake server's answers", function()
        local srv
        setup(function() srv = support.fake { rows_per_day = 300 } end)
        teardown(function() srv:stop() end)

        it("matches core.decode on real answers in random chunks", function()
            local s = core.session { token = srv.token, timeout = 10 }
            local urls = {
                "/api/v2/reports_manager.php?api=cdr_1&date_ini=20260101000000&date_end=20260103235959",
                "/api/v2/information.php?api=services",
                "/api/v2/information.php?api=routing_points",
                "/api/v2/reports_manager.php?api=agent_1&date_ini=20260101000000&date_end=20260101235959",
                "/api/v2/reports_manager.php?api=cdr_4&date_ini=20260101000000&date_end=20260102235959",
                "/api/v2/real_time.php?api=campaigns",
            }
            math.randomseed(7)
            for _, path in ipairs(urls) do
                local res = s:request { url = srv.url .. path, decode = false }
                assert.equal(200, res.status, path)
                for _ = 1, 5 do
                    local sizes = {}
                    for i = 1, 8 do
                        sizes[i] = math.random(1, 700)
                    end
                    same(res.body, sizes)
                end
            end
            s:close()
        end)
    end)

    describe("in a session", function()
        it("decodes an answer while it arrives: the body never exists whole", function()
            local hostile = require "hostile"
            -- 3 MB of rows, sent in 64 KiB pieces with a pause between them.
            local row = '{"conn_id":"%d","note":"%s"},'
            local h = hostile.start { responses = { function(c)
                local parts = {}
                for i = 1, 30000 do
                    parts[i] = row:format(i, ("x"):rep(80))
                end
                local body = '{"code":200,"msg":"ok","data":[' .. table.concat(parts):sub(1, -2) .. ']}'
                c:send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " .. #body
                    .. "\r\nConnection: close\r\n\r\n")
                for at = 1, #body, 65536 do
                    c:send(body:sub(at, at + 65535))
                    c:sleep(0.02)
                end
            end } }
            local s = core.session { token = "a-token-of-some-length-0123456789", timeout = 30 }
            assert(s:start { url = h.url .. "/x" })
            local most, got, res = 0
            repeat
                got, res = s:wait(0.05)
                most = math.max(most, s:stats().buffered)
            until got ~= false
            s:close()
            h:stop()
            assert.equal(200, res.status)
            assert.is_table(res.value, tostring(res.decode_error) .. " " .. tostring(res.error and res.error.message))
            assert.equal(30000, #res.value.data)
            assert.equal("30000", res.value.data[30000].conn_id)
            assert.equal("ok", res.value.msg)
            assert.is_true(res.bytes > 3000000)
            -- Never more than the decode threshold and a piece or two undecoded.
            assert.is_true(most < 1024 * 1024, "most bytes held at once: " .. most)
        end)
    end)
end)
