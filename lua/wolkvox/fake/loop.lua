--- A small event loop for the fake server: coroutines over LuaSocket's select.
-- A task is a coroutine; inside it, `loop:readable(sock)`,
-- `loop:writable(sock)` and `loop:sleep(seconds)` suspend it until the
-- socket is ready or the time has come.  One process then serves many
-- connections at once, which the fake needs to show the concurrency limit.
-- @module wolkvox.fake.loop

local socket = require "socket"

local create, resume, yield, running, status =
    coroutine.create, coroutine.resume, coroutine.yield, coroutine.running, coroutine.status
local gettime, select, sort, remove = socket.gettime, socket.select, table.sort, table.remove

-- poll(2) from the C core when it is there: LuaSocket's select refuses
-- descriptors from 1024 up, which a process with many files open reaches.
local has_core, core = pcall(require, "wolkvox.core")
local poll = has_core and core.poll

local M = {}
local Loop = {}
Loop.__index = Loop

function M.new()
    return setmetatable({ readers = {}, writers = {}, sleepers = {}, stopped = false,
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

--- Suspend the running task until `sock` can be read.
function Loop:readable(sock)
    self.readers[sock] = running()
    yield()
end

--- Suspend the running task until `sock` can be written.
function Loop:writable(sock)
    self.writers[sock] = running()
    yield()
end

--- Suspend the running task for `seconds`.
function Loop:sleep(seconds)
    local s = self.sleepers
    s[#s + 1] = { at = gettime() + seconds, co = running() }
    sort(s, function(a, b) return a.at < b.at end)
    yield()
end

--- Forget a socket (closed by its task).
function Loop:forget(sock)
    self.readers[sock], self.writers[sock] = nil, nil
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
        while self.sleepers[1] and self.sleepers[1].at <= now do
            local item = remove(self.sleepers, 1)
            if status(item.co) == "suspended" then
                self:step(item.co)
            end
        end
    end
end

return M
