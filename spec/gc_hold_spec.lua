-- wolkvox.transport.gc_hold: the collector of an nginx worker held while an
-- answer becomes rows (issue #26: a worker that never pauses), and its
-- bounds.  Here on the VM busted runs on, with `after` recording the
-- safety timer it is given and `sleep` counting the yields of the
-- catch-up; spec/nginx_spec.lua runs it inside nginx, with ngx.timer.at and
-- ngx.sleep.
local gc_hold = require "wolkvox.transport.gc_hold"

describe("wolkvox.transport.gc_hold", function()
    local timers
    local function after(seconds, fn)
        timers[#timers + 1] = { seconds = seconds, fn = fn }
        return true
    end
    local clock, yields = 100, 0
    local function now()
        return clock
    end
    local function sleep()
        yields = yields + 1
    end
    local function start(deadline, at)
        return gc_hold.start(deadline, now, at or after, sleep)
    end
    local function running()
        return collectgarbage("isrunning")
    end

    before_each(function()
        timers, clock, yields = {}, 100, 0
        collectgarbage("restart")
    end)
    after_each(function()
        assert.equal(0, gc_hold.open(), "a hold was left open")
        collectgarbage("restart")
    end)

    it("stops the collector while held; overlapping holds restart it when the last one ends", function()
        local a = assert(start(160))
        assert.is_false(running())
        local b = assert(start(160))
        assert.equal(2, gc_hold.open())
        a:release()
        a:release()   -- (twice is once)
        assert.is_false(running())
        assert.equal(1, gc_hold.open())
        b.release()
        assert.is_true(running())
    end)

    it("first collects what earlier work left, a step at a time, yielding; a hold that joins does not", function()
        local left = setmetatable({}, { __mode = "k" })
        left[{}] = true   -- garbage made before the hold
        local pace = gc_hold.PACE
        gc_hold.PACE = 0  -- (a yield after every step)
        local a = assert(start(160))
        gc_hold.PACE = pace
        assert.is_nil(next(left), "collected before the hold")
        assert.is_true(yields >= 2, "yields: " .. yields)
        -- A second hold while the first is open joins it: no step, nothing collected.
        left[{}] = true
        local before = yields
        local b = assert(start(160))
        assert.is_not_nil(next(left))
        assert.equal(before, yields)
        a:release()
        b:release()
    end)

    -- The hold starts once the second cycle has ended, its sweep too: the
    -- memory of what earlier work left is freed first.  (Stopped at the
    -- end of that cycle's marking, the sweep was left for after the hold,
    -- and the cycle after it had its indivisible last step fall after the
    -- answer: 80-180 ms inside nginx, bench/users.lua's /ping.)
    it("frees what earlier work left before it holds", function()
        -- As in a worker: an answer's rows made under a hold, then
        -- dropped, and the next answer's hold.
        local a = assert(start(160))
        local rows = {}
        for i = 1, 200000 do
            rows[i] = { i }
        end
        a:release()
        assert.equal(200000, #rows)
        rows = nil -- luacheck: ignore 311
        local before = collectgarbage("count")
        local b = assert(start(160))
        local freed = before - collectgarbage("count")
        b:release()
        assert.is_true(freed > 8 * 1024, "freed " .. freed .. " KB of about 12,000")
    end)

    it("starts no hold when its timer comes during the catch-up", function()
        local pace = gc_hold.PACE
        gc_hold.PACE = 0
        local h = gc_hold.start(160, now, after, function()
            clock = 161   -- (the deadline passed a second ago)
            timers[1].fn()
        end)
        gc_hold.PACE = pace
        assert.is_nil(h)
        assert.equal(0, gc_hold.open())
        assert.is_true(running())
    end)

    -- A bound of the answer's bytes plus 64 KB (the module's own again when
    -- the test ends), and 2000 small tables that pass it.
    local function tight_bound()
        local growth, slack = gc_hold.GROWTH, gc_hold.SLACK_KB
        gc_hold.GROWTH, gc_hold.SLACK_KB = 1, 64
        finally(function() gc_hold.GROWTH, gc_hold.SLACK_KB = growth, slack end)
    end
    local function garbage()
        local keep = {}
        for i = 1, 2000 do
            keep[i] = { i, tostring(i) }
        end
        return keep
    end

    it("gives the collector back once the heap grows past its bound", function()
        tight_bound()
        local h = assert(start(160))
        local keep = garbage()
        h:check(1024)   -- 1 KB of answer: at most 65 KB more heap
        assert.is_true(running())
        assert.equal(0, gc_hold.open())
        h:release()   -- (already released: nothing more)
        assert.equal(2000, #keep)
    end)

    it("holds within the bound", function()
        local h = assert(start(160))
        h:check(1024 * 1024)
        assert.is_false(running())
        h:release()
    end)

    it("looks again every half second: the bound, then a second past the deadline, once", function()
        local h = assert(start(160))
        assert.equal(1, #timers)
        assert.equal(gc_hold.TICK, timers[1].seconds)
        h:check(1024 * 1024)
        timers[1].fn()   -- within the bound and the deadline: a new look set
        assert.equal(2, #timers)
        assert.is_false(running())
        clock = 161
        timers[2].fn()
        assert.is_true(running())
        assert.equal(0, gc_hold.open())
        assert.equal(2, #timers)
        h:release()   -- (the request's own release after the timer's: nothing)
        timers[2].fn()
        assert.equal(0, gc_hold.open())
        assert.is_true(running())
    end)

    it("ends the hold at a look when others' garbage passes the bound while the answer is slow", function()
        tight_bound()
        local h = assert(start(160))
        h:check(1024)
        assert.is_false(running())
        local keep = garbage()   -- (no piece arrives meanwhile)
        timers[1].fn()
        assert.is_true(running())
        assert.equal(0, gc_hold.open())
        assert.equal(2000, #keep)
    end)

    it("ends the hold when the next look cannot be set", function()
        local n = 0
        local h = assert(start(160, function(_, fn)
            n = n + 1
            timers[n] = { fn = fn }
            return n == 1
        end))
        assert.is_false(running())
        timers[1].fn()
        assert.is_true(running())
        assert.equal(0, gc_hold.open())
        h:release()
    end)

    it("starts no hold where no timer can be set; a deadline already past ends it at the first look", function()
        assert.is_nil(start(160, function() return nil, "too many pending timers" end))
        assert.is_true(running())
        assert.equal(0, gc_hold.open())
        clock = 200
        local h = assert(start(50))   -- (a deadline past: no catch-up; the first look ends it)
        assert.is_false(running())
        timers[1].fn()
        assert.is_true(running())
        h:release()
    end)
end)
