--- A small event loop for the fake server: coroutines over LuaSocket's select.
-- A task is a coroutine; inside it, `loop:readable(sock[, timeout])`,
-- `loop:writable(sock[, timeout])` and `loop:sleep(seconds)` suspend it
-- until the socket is ready or the time has come (a wait with a timeout
-- gives nil and "timeout" when it ran out; `loop:wake(sock, why)` ends a
-- socket's wait early with nil and `why`), and `loop:pause()` lets the
-- other tasks run.  One process then serves many connections at once,
-- which the fake needs to show the concurrency limit.
-- @module wolkvox.fake.loop

local socket = require "socket"

local create, resume, yield, running, status =
    coroutine.create, coroutine.resume, coroutine.yield, coroutine.running, coroutine.status
local gettime, select, insert, remove, floor = socket.gettime, socket.select, table.insert, table.remove, math.floor

-- poll(2) from the C core when it is there: LuaSocket's select refuses
-- descriptors from 1024 up, which a process with many files open reaches.
local has_core, core = pcall(require, "wolkvox.core")
local poll = has_core and core.poll

local M = {}
local Loop = {}
Loop.__index = Loop

-- How often waits with a timeout are checked (seconds).
local SWEEP = 0.25

function M.new()
    return setmetatable({ readers = {}, writers = {}, sleepers = {}, deadlines = {}, stopped = false,
        on_error = function(msg) io.stderr:write("wolkvox-fake: ", tostring(msg), "\n") end }, Loop)
end

-- Resume a task and report an error it raised (the loop itself goes on).
function Loop:step(co, ...)
    local ok, err = resume(co, ...)
    if not ok then
        self.on_error(debug.traceback(co, err))
    end
end

--- Start `fn(...)` as a task.
function Loop:spawn(fn, ...)
    self:step(create(fn), ...)
end

-- Wait in `map` (readers or writers) for `sock`, at most `timeout`
-- seconds when given: true, or nil and why the wait ended without it.
local function wait_for(self, map, sock, timeout)
    local co = running()
    map[sock] = co
    if timeout then
        self.deadlines[co] = { at = gettime() + timeout, map = map, sock = sock }
    end
    local why = yield()
    self.deadlines[co] = nil
    if why then
        return nil, why
    end
    return true
end

--- Suspend the running task until `sock` can be read, or `timeout`
-- seconds (when given) have passed: true, or nil and "timeout" (or the
-- reason given to `wake`).
function Loop:readable(sock, timeout)
    return wait_for(self, self.readers, sock, timeout)
end

--- Suspend the running task until `sock` can be written (as `readable`).
function Loop:writable(sock, timeout)
    return wait_for(self, self.writers, sock, timeout)
end

--- End the wait of the task waiting on `sock` (readable or writable): it
-- gets nil and `why`.  True when a task was waiting.
function Loop:wake(sock, why)
    for _, map in ipairs { self.readers, self.writers } do
        local co = map[sock]
        if co then
            map[sock] = nil
            self.deadlines[co] = nil
            self:step(co, why or "woken")
            return true
        end
    end
    return false
end

--- Suspend the running task for `seconds`.
function Loop:sleep(seconds)
    local s = self.sleepers
    local item = { at = gettime() + seconds, co = running() }
    -- (after the ones due at the same time: binary search, no sort)
    local lo, hi = 1, #s
    while lo <= hi do
        local mid = floor((lo + hi) / 2)
        if s[mid].at <= item.at then
            lo = mid + 1
        else
            hi = mid - 1
        end
    end
    insert(s, lo, item)
    yield()
end

--- Let the other tasks run (and the sockets be polled), then go on.
function Loop:pause()
    self:sleep(0)
end

-- Wake the tasks whose wait ran out (`now`).
function Loop:sweep(now)
    local due = {}
    for co, d in pairs(self.deadlines) do
        if d.at <= now then
            due[#due + 1] = co
        end
    end
    for _, co in ipairs(due) do
        local d = self.deadlines[co]
        if d then -- (still waiting: an earlier one did not end it)
            self.deadlines[co] = nil
            if d.map[d.sock] == co then
                d.map[d.sock] = nil
            end
            self:step(co, "timeout")
        end
    end
end

--- Forget a socket (closed by its task).
function Loop:forget(sock)
    for _, map in ipairs { self.readers, self.writers } do
        local co = map[sock]
        if co then
            map[sock] = nil
            self.deadlines[co] = nil
        end
    end
end

function Loop:stop()
    self.stopped = true
end

local function keys(t)
    local out = {}
    for k in pairs(t) do
        out[#out + 1] = k
    end
    return out
end

-- Add `sock` to `map` (by descriptor) and `fds`; a closed socket has none (-1).
local function add(map, fds, sock)
    local fd = sock:getfd()
    if fd >= 0 then
        map[fd] = sock
        fds[#fds + 1] = fd
    end
end

-- Wait for the readers and writers, as socket.select(readers, writers, timeout).
local function wait(readers, writers, timeout)
    if not poll then
        return select(keys(readers), keys(writers), timeout)
    end
    local r, rmap, rfds, wmap, wfds = {}, {}, {}, {}, {}
    for sock in pairs(readers) do
        if sock.dirty and sock:dirty() then
            r[#r + 1] = sock    -- LuaSocket holds data for it: ready without a wait
            timeout = 0
        else
            add(rmap, rfds, sock)
        end
    end
    for sock in pairs(writers) do
        add(wmap, wfds, sock)
    end
    local rr, wr = poll(rfds, wfds, timeout)
    local w = {}
    for _, fd in ipairs(rr) do
        r[#r + 1] = rmap[fd]
    end
    for _, fd in ipairs(wr) do
        w[#w + 1] = wmap[fd]
    end
    return r, w
end

--- Run until `stop()` is called or `deadline` (absolute time) passes.
function Loop:run(deadline)
    while not self.stopped do
        local now = gettime()
        if deadline and now >= deadline then
            break
        end
        local timeout = 1
        if next(self.deadlines) then
            timeout = SWEEP
        end
        if self.sleepers[1] then
            timeout = math.max(0, math.min(timeout, self.sleepers[1].at - now))
        end
        local r, w = wait(self.readers, self.writers, timeout)
        for _, sock in ipairs(r) do
            local co = self.readers[sock]
            if co then
                self.readers[sock] = nil
                self:step(co)
            end
        end
        for _, sock in ipairs(w) do
            local co = self.writers[sock]
            if co then
                self.writers[sock] = nil
                self:step(co)
            end
        end
        now = gettime()
        -- (only the sleepers due now: one that sleeps again waits a turn)
        local due = 0
        while self.sleepers[due + 1] and self.sleepers[due + 1].at <= now do
            due = due + 1
        end
        for _ = 1, due do
            local item = remove(self.sleepers, 1)
            if status(item.co) == "suspended" then
                self:step(item.co)
            end
        end
        if next(self.deadlines) and (not self.swept or now - self.swept >= SWEEP) then
            self.swept = now
            self:sweep(now)
        end
    end
end

return M
