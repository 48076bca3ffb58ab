--- The progress line of the `wolkvox` command: on stderr, only when stderr
-- is a terminal, redrawn in place and cleared at the end.  It is drawn from
-- the library's `on_progress` hook.
-- @module wolkvox.cli.progress

local words = require "wolkvox.cli.words"

local format, floor = string.format, math.floor

local M = {}

--- True when file descriptor `fd` (0, 1 or 2; default 2, stderr) is a terminal.
function M.stderr_is_tty(fd)
    local a, _, c = os.execute("test -t " .. (fd == 0 and 0 or fd == 1 and 1 or 2))
    if type(a) == "number" then -- Lua 5.1 / LuaJIT: the status
        return a == 0
    end
    return a == true and (c == 0 or c == nil)
end

local function clock(s)
    s = floor(s + 0.5)
    if s >= 3600 then
        return format("%d:%02d:%02d", floor(s / 3600), floor(s / 60) % 60, s % 60)
    end
    return format("%d:%02d", floor(s / 60), s % 60)
end

--- The text of one progress line for a hook's table `p`.
-- @tparam table p `endpoint`, `done`, `total`, `rows`, `calls`, `elapsed`
-- @treturn string
function M.line(p)
    local eta = ""
    if p.done > 0 and p.total > p.done then
        eta = "  ETA " .. clock(p.elapsed / p.done * (p.total - p.done))
    end
    return format("%s  %d/%d windows  %s  %s  %s%s", p.endpoint, p.done, p.total, words.count(p.rows, "row"),
        words.count(p.calls, "call"), clock(p.elapsed), eta)
end

--- The line of a wait for a slot an abandoned call may still hold.
-- @tparam table t `endpoint`, `until` (epoch seconds)
function M.waiting(t)
    return format("%s  waiting until %s for a slot that an earlier, abandoned call (Ctrl-C, a kill) may "
        .. "still hold at wolkvox", t.endpoint, os.date("%H:%M:%S", floor(t["until"])))
end

--- A progress display.
-- @tparam boolean enabled draw (false: every method does nothing)
-- @tparam[opt] file file where to draw (default io.stderr)
-- @treturn table `update(p)` (an `on_progress` hook), `throttle(t)` (an
--   `on_throttle` hook) and `clear()`
function M.new(enabled, file)
    file = file or io.stderr
    local drawn = false
    local self = {}
    function self.update(p)
        if enabled then
            file:write("\r", M.line(p), "\027[K")
            file:flush()
            drawn = true
        end
    end
    -- A wait worth explaining (an `on_throttle` hook): a rerun after Ctrl-C
    -- waits for the slot its predecessor's abandoned call may still hold at
    -- wolkvox, up to a minute; say so, and until when, instead of looking hung.
    function self.throttle(t)
        if enabled and t.why == "abandoned" and t["until"] then
            file:write("\r", M.waiting(t), "\027[K")
            file:flush()
            drawn = true
        end
    end
    function self.clear()
        if drawn then
            file:write("\r\027[K")
            file:flush()
            drawn = false
        end
    end
    return self
end

return M
