-- The daily quota ledger: counted per operation and day, shared by the
-- processes of a machine, measured through token_info, guarded by a reserve.
local quota = require "wolkvox.limits.quota"
local support = require "support"

describe("the quota ledger", function()
    local srv

    setup(function() srv = support.fake() end)
    teardown(function() srv:stop() end)
    before_each(function() srv:control("reset") end)

    it("counts every call, retried attempts included, and keeps the count across clients", function()
        local dir = support.tmpdir()
        local a = support.client(srv, { state_dir = dir, retry_base = 0.001 })
        support.faults(srv, { { status = 500 } })
        assert(a:services())            -- 2 attempts
        assert(a:routing_points())
        a:close()
        local b = support.client(srv, { state_dir = dir })
        local q = assert(b:quota { measure = false })
        assert.equal(3, q.used)
        assert.equal("counted", q.source)
        assert.equal(0, q.calls)
        assert.matches("^%d%d%d%d%-%d%d%-%d%d$", q.day)
        b:close()
        assert.equal(3, #srv:log())
    end)

    it("measures through token_info, which costs one call and says so", function()
        srv:control("config", { daily_limit = 500, quota_used = 40 })  -- other tokens spent 40
        local x = support.client(srv, { state_dir = support.tmpdir() })
        local q = assert(x:quota())
        assert.equal("measured", q.source)
        assert.equal(1, q.calls)
        assert.equal(41, q.used)         -- 40 + the token_info call itself
        assert.equal(500, q.limit)
        assert.equal(459, q.remaining)
        assert.equal(1, q.token_use_today)
        -- later calls are counted on top of the measurement
        assert(x:services())
        assert.equal(42, x:quota({ measure = false }).used)
        x:close()
    end)

    it("refuses a request that would cross the limit less the reserve, spending nothing", function()
        local x = support.client(srv, { state_dir = support.tmpdir(), daily_limit = 10, reserve = 3,
            max_rows = 60000 })
        for _ = 1, 5 do
            assert(x:services())
        end
        -- 5 used; 7 allowed (10 - 3): a report of 3 windows would make 8.
        local plan = assert(x:plan("cdr_1", { from = "2026-01-01", to = "2026-03-31" }))
        assert.equal(3, plan.calls)
        assert.same({ 5, 10, 5, 3 }, { plan.quota.used, plan.quota.limit, plan.quota.remaining, plan.quota.reserve })
        local rows, err = x:cdr_1 { from = "2026-01-01", to = "2026-03-31" }
        assert.is_nil(rows)
        assert.equal("quota", err.kind)
        assert.equal(0, err.calls)
        assert.matches("3 call%(s%) planned, 5 of 10 used today", err.message)
        assert.equal(5, #srv:log())
        -- two windows still fit
        assert(x:cdr_1 { from = "2026-01-01", to = "2026-02-28" })
        assert.equal(7, #srv:log())
        x:close()
    end)

    it("takes the limit from licences x 1000", function()
        local x = support.client(srv, { state_dir = false, licenses = 3 })
        assert.equal(3000, x:quota({ measure = false }).limit)
        x:close()
    end)

    it("does not count agentbox calls, nor refuse them when the budget is spent", function()
        local x = support.client(srv, { state_dir = support.tmpdir(), daily_limit = 1 })
        assert(x:services())
        assert.is_nil((x:services()))
        assert(x.agentbox:dial { agent_id = "7", customer_phone = "3001234567" })
        assert.equal(1, x:quota({ measure = false }).used)
        x:close()
    end)

    it("keeps a week of daily files and drops older ones", function()
        local dir = support.tmpdir()
        local l = quota.new { dir = dir }
        local old, kept = l:day_before(9), l:day_before(3)
        for _, day in ipairs { old, kept } do
            local f = assert(io.open(dir .. "/calls-" .. day, "wb"))
            f:write("...")
            f:close()
        end
        l:spend(1)
        assert.is_nil(io.open(dir .. "/calls-" .. old, "rb"))
        local f = assert(io.open(dir .. "/calls-" .. kept, "rb"))
        assert.equal("...", f:read("*a"))
        f:close()
        assert.equal(1, l:status().used)
    end)

    it("turns the day at midnight on the operation's clock", function()
        local dir = support.tmpdir()
        local now = os.time()
        -- Offsets that put "now" on different days: UTC-12 and UTC+14 differ by 26 h.
        local west = quota.new { dir = dir, utc_offset = -12 * 3600 }
        local east = quota.new { dir = dir, utc_offset = 14 * 3600 }
        assert.equal(os.date("!%Y-%m-%d", now - 12 * 3600), west:day())
        assert.equal(os.date("!%Y-%m-%d", now + 14 * 3600), east:day())
        assert.are_not.equal(west:day(), east:day())
        west:spend(2)
        assert.equal(2, west:status().used)
        assert.equal(0, east:status().used)
    end)
end)
