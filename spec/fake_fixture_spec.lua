-- Recorded fixtures: an answer captured from a real server, stripped of the
-- token and personal fields, replayed by the fake for matching requests; a
-- user's script runs against it.
local cjson = require "cjson"
local wolkvox = require "wolkvox"
local fake = require "wolkvox.fake"
local support = require "support"

local REAL_TOKEN = "real-token-5d1e0b77c2"

-- What a real server answered for cdr_1 on 2026-01-05 (as a capture would
-- decode it), token echoed in one field.
local RECORDED = {
    code = 200, error = cjson.null, msg = "2 records were found",
    data = {
        { conn_id = "880011", date = "2026-01-05 08:01:12", agent_id = "1001", agent_name = "Ana Pérez",
            telephone = "573001234567", customer_id = "79123456", skill_id = "12", time = "00:03:10",
            result = "ANSWER", note = "callback for " .. REAL_TOKEN },
        { conn_id = "880012", date = "2026-01-05 09:15:40", agent_id = "1002", agent_name = "Luis Gómez",
            telephone = "573009876543", customer_id = "80111222", skill_id = "12", time = "-",
            result = "NO ANSWER", note = "" },
    },
}

-- A JSON file of `t`.
local function write(t)
    local path = os.tmpname()
    support.spit(path, cjson.encode(t))
    return path
end

local function user_script(c)
    local rows = assert(c:cdr_1 { from = "2026-01-05", to = "2026-01-05" })
    local other = assert(c:cdr_1 { from = "2026-01-06", to = "2026-01-06" })
    return rows, other
end

describe("recorded fixtures", function()
    local fixture = fake.fixture(RECORDED, REAL_TOKEN,
        { match = "cdr_1", params = { date_ini = "20260105000000" }, name = "cdr_1 2026-01-05" })

    it("are stripped of the token and personal fields", function()
        local text = cjson.encode(fixture)
        assert.falsy(text:find(REAL_TOKEN, 1, true))
        assert.falsy(text:find("573001234567", 1, true))
        assert.falsy(text:find("Ana P", 1, true))
        assert.falsy(text:find("79123456", 1, true))
        local row = fixture.body.data[1]
        assert.equal("<telephone>", row.telephone)
        assert.equal("<agent_name>", row.agent_name)
        assert.equal("<customer_id>", row.customer_id)
        assert.equal("880011", row.conn_id)
        assert.equal("00:03:10", row.time)
        assert.equal("callback for " .. string.rep("*", #REAL_TOKEN), row.note)
    end)

    it("are replayed by a spawned fake for matching requests only", function()
        local path = write { fixtures = { fixture }, rows_per_day = 4 }
        finally(function() os.remove(path) end)
        local srv = support.fake { scenario = path }
        finally(function() srv:stop() end)
        local c = support.client(srv, { retries = 0, state_dir = false })
        finally(function() c:close() end)
        local rows, other = user_script(c)
        assert.equal(2, #rows)
        assert.equal("880011", rows[1].conn_id)
        assert.equal("-", rows[2].time)
        assert.equal("<telephone>", rows[1].telephone)
        assert.equal(4, #other) -- not recorded: the fake's own rows
        local log = srv:log()
        assert.equal("cdr_1 2026-01-05", log[1].fixture)
        assert.is_nil(log[2].fixture)
    end)

    it("are replayed by the in-process transport", function()
        local c = wolkvox.new { transport = "fake", fake = { fixtures = { fixture }, rows_per_day = 4 },
            server = "0031", token = "test-token", state_dir = false }
        finally(function() c:close() end)
        local rows, other = user_script(c)
        assert.equal(2, #rows)
        assert.equal("880012", rows[2].conn_id)
        assert.equal(4, #other)
    end)
end)
