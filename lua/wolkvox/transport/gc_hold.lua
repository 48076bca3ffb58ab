--- The collector of an nginx worker held while an answer is decoded into
-- rows (the ngx transport's streaming decode).
--
-- LuaJIT's collector ends each cycle with one atomic step, and that step
-- marks at once every table stored, since the cycle began, into one it had
-- already marked: the list of rows an answer is decoded into, and so every
-- row made meanwhile.  Inside a decode of tens of thousands of rows such
-- steps held the worker 50-200 ms, every other request of the worker
-- waiting behind them.  So, once an answer is big (`FROM` bytes):
--
--  * the collector first finishes the cycle under way and one more, a
--    step at a time with a yield to the worker every `PACE` seconds: what
--    earlier calls left is collected now, while no rows are being made, and
--    never in one long step;
--  * then it is stopped until the answer is read, so no cycle ends inside
--    the decode;
--  * the heap may grow meanwhile by at most `GROWTH` times the answer's
--    bytes so far plus `SLACK_KB` (rows take two to three times their JSON,
--    the pieces read about once more): past that the collector runs again,
--    and pauses come back rather than a worker out of memory;
--  * a timer looks every `TICK` seconds: past that bound (the worker's
--    other requests make garbage too, while the answer may be slow to
--    come), or a second past the call's deadline, should the request end
--    without releasing its hold (killed, an error), the collector runs again.
--
-- Holds of several requests of one worker overlap (the later ones join
-- without the catch-up): the collector runs again when the last one ends.
-- One worker is one Lua VM: the count is the module's own, shared by every
-- request of that worker and only by those.  bench/users.lua measures it
-- (/ping while the worker fetches, with and without).
-- @module wolkvox.transport.gc_hold

local collectgarbage, setmetatable, next = collectgarbage, setmetatable, next

local M = {}

M.GROWTH = 5
M.SLACK_KB = 32 * 1024
M.STEP_KB = 256
M.PACE = 0.005
M.FROM = 1024 * 1024
M.TICK = 0.5

local holds = 0   -- holds not yet released in this worker

-- A table whose one key goes when a cycle of the collector ends.
local WEAK = { __mode = "k" }
local function marker()
    return setmetatable({ [{}] = true }, WEAK)
end

local function stop()
    holds = holds + 1
    if holds == 1 then
        collectgarbage("stop")
    end
end

local function restart()
    holds = holds - 1
    if holds == 0 then
        collectgarbage("restart")
    end
end

--- Hold the collector for a decode that must end by `deadline` (in
-- `now()` seconds; `after(seconds, fn)` runs fn later (true, or nil when it
-- cannot): `ngx.timer.at`;
-- `sleep(seconds)` yields: `ngx.sleep`).  When no other hold is open, the
-- collector first finishes the cycle under way and one more, a little at a
-- time (`STEP_KB` of work a step, a yield every `PACE` seconds): what the
-- last hold left is collected before this one starts, without a pause.
-- @return a hold: `hold:check(bytes)` after each piece (the answer's bytes
-- so far; gives the collector back past the bound), `hold:release()` at
-- the end (more than once is fine); or nil when no hold starts (no timer
-- could be set, or the deadline came during the catch-up)
function M.start(deadline, now, after, sleep)
    local hold = { held = false }
    function hold.release()
        hold.over = true
        if hold.held then
            hold.held = false
            restart()
        end
    end
    function hold.check(_, bytes)
        hold.bytes = bytes or hold.bytes
        if hold.held and collectgarbage("count") - hold.base > M.GROWTH * hold.bytes / 1024 + M.SLACK_KB then
            hold.release()
        end
    end
    -- Every TICK seconds the bound is checked again (the worker's other
    -- requests make garbage too, while this answer may be slow to come),
    -- and the hold ends a second past the deadline.
    local function tick()
        if hold.over then
            return
        end
        if now() >= deadline + 1 then
            return hold.release()
        end
        hold:check()
        if not hold.over and not after(M.TICK, tick) then
            hold.release()
        end
    end
    hold.bytes = 0
    if not after(M.TICK, tick) then
        return nil
    end
    -- Two cycles: the one under way ends when its marker goes (made now, it
    -- is unmarked garbage for that cycle), the next when a marker made
    -- after it goes; each once its sweep is over too (the step that ends a
    -- cycle says so).  Held in the middle of a sweep, the collector left
    -- the rest of it, and the next cycle's marking, for after the answer,
    -- and that cycle's last step, which cannot be split, took 80-180 ms
    -- inside nginx (bench/users.lua's /ping, realistic rows) depending on
    -- what else the worker had loaded.  At most about four steps per KB of
    -- heap: LuaJIT's step marks about 2 KB, Lua 5.4's STEP_KB; the deadline
    -- bounds it too.
    local cycles, t, probe = 0, now(), marker()
    local budget = 4 * collectgarbage("count") + 1000
    -- (a step while another hold is open would start the collector again)
    while holds == 0 and cycles < 2 and t < deadline and not hold.over and budget > 0 do
        local ended = collectgarbage("step", M.STEP_KB)
        budget = budget - 1
        if next(probe) == nil and ended then
            cycles, probe = cycles + 1, marker()
        end
        if now() - t >= M.PACE then
            sleep(0.001)
            t = now()
        end
    end
    if hold.over then
        return nil -- (its timer came first)
    end
    hold.base, hold.held = collectgarbage("count"), true
    stop()
    return hold
end

--- How many holds are open in this worker (for the specs and the bench).
function M.open()
    return holds
end

return M
