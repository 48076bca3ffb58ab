--- Output files: where rows leave the process for a file.  One place for
-- the hand-offs that lose data when done carelessly:
--
-- * `check` looks at a path before the first call is spent (a directory
--   given as a file, a directory that is missing or not writable);
-- * `new` writes under a name nobody can guess, created with O_EXCL and
--   O_NOFOLLOW (a file or a link another user planted is never opened),
--   renamed to the final name only when the result is whole (`commit`);
--   a result cut short is kept as `PATH.part` (`keep`), never under the
--   final name.  Its writer holds the file's lock from its creation to its
--   rename; what a writer killed meanwhile left under such a name (its
--   lock gone, untouched for `STALE` seconds) the next `new` of that path
--   removes;
-- * `resume` goes on writing a file a checkpoint or a sync state vouches
--   for: only a regular file of this user, whose vouched bytes still match
--   their digest, cut back to them (what lies after is this job's own
--   unfinished write, or refused when it is not).
-- @module wolkvox.out.file

local errors = require "wolkvox.errors"

local io_open, os_rename, os_remove, tostring, format, setmetatable, ipairs =
    io.open, os.rename, os.remove, tostring, string.format, setmetatable, ipairs

local M = {}

--- How long a temporary file whose lock nobody holds is left before `new`
-- removes it (seconds): a live writer holds its lock all along, so this
-- only guards against clocks that disagree (a shared file system).
M.STALE = 600

local function fail(message)
    errors.throw("output", { message = message })
end

--- The C core, which writes every file (O_EXCL, O_NOFOLLOW, renames,
-- digests); raises an `output` error saying so where this Lua cannot load
-- it (nginx with the pure-Lua transport: calls work there, files do not).
function M.core()
    local ok, core = pcall(require, "wolkvox.core")
    if not ok then
        fail("writing files (an output, a checkpoint, a sync state) needs the C core, wolkvox.core, which "
            .. "this Lua cannot load: build it for this VM (make; make LUA=luajit for LuaJIT and nginx) or "
            .. "take the rows with on_rows")
    end
    return core
end
local core = M.core

--- The directory and the last component of `path`.
function M.split(path)
    local dir, base = path:match("^(.*/)([^/]*)$")
    return dir or "", base or path
end

--- Check, before any call, that `path` can be written as a file (`what`
-- names it in messages: "--output", "the sync state"): it is not a
-- directory, and its directory exists and is writable.  Raises an `output`
-- error otherwise.
function M.check(path, what)
    local st = core().stat(path, true)
    if st and st.type == "directory" then
        fail(format("%s %s is a directory: give a file name", what, path))
    end
    if st and st.type == "other" then
        return true -- a device or a FIFO (/dev/stdout) is written where it is
    end
    local dir = M.split(path)
    dir = dir == "" and "." or dir
    local ok, why, code = core().writable_dir(dir)
    if not ok then
        fail(format("%s %s: %s", what, path, code == "missing" and ("the directory " .. dir
            .. " does not exist") or tostring(why)))
    end
    return true
end

local File = {}
File.__index = File

--- A new file that becomes `path` on `commit`: written under a hidden name
-- beside it (`.NAME.tmp-` and 16 random hex digits).
-- @return the file object: `file` (an io file open for writing), `commit`,
--   `keep`, `abort`
function M.new(path)
    local dir, base = M.split(path)
    if base == "" then
        fail("the output names a directory: " .. path)
    end
    -- A device or a pipe (/dev/stdout, a FIFO a reader waits on) is
    -- written as it is: it cannot be replaced, and holds no half result.
    local target = core().stat(path, true)
    if target and target.type == "other" then
        -- Only one of this user's or root's (a FIFO another user planted in
        -- a shared directory would hand the rows to that user).
        local entry = core().stat(path) or target
        for _, st in ipairs { entry, target } do
            if not (st.mine or st.uid == 0) then
                fail(format("%s belongs to uid %d, not to this user or root: refused (write to a file of your "
                    .. "own)", path, st.uid))
            end
        end
        local f, err = io_open(path, "wb")
        if not f then
            fail("cannot write " .. path .. ": " .. tostring(err))
        end
        return setmetatable({ file = f, path = path, direct = true }, File)
    end
    -- (a run killed while writing this path left its temporary file)
    core().sweep_tmp(dir == "" and "." or dir, base, M.STALE)
    local tmp, err, code, hold
    for _ = 1, 8 do
        tmp = dir .. "." .. base .. ".tmp-" .. core().random_hex(8)
        hold, err, code = core().create(tmp)
        if hold then
            break
        end
        tmp = nil
        if code ~= "exists" then
            break
        end
    end
    if not tmp then
        fail("cannot write " .. path .. ": " .. tostring(err))
    end
    -- Our own new file: in a sticky or private directory nobody else can
    -- replace it between its creation and this open.
    local f, oerr = io_open(tmp, "r+b")
    if not f then
        os_remove(tmp)
        hold:release()
        fail("cannot write " .. path .. ": " .. tostring(oerr))
    end
    return setmetatable({ file = f, tmp = tmp, path = path, hold = hold }, File)
end

-- The temporary name is gone (renamed or removed): its lock is let go.
local function let_go(self)
    self.tmp = nil
    if self.hold then
        self.hold:release()
        self.hold = nil
    end
end

local function close(self)
    local f = self.file
    self.file = nil
    if f and io.type(f) == "file" then
        return f:close()
    end
    return true
end

--- The whole result: close and rename over the final name (a link there is
-- replaced, never followed).
-- @return true, or nil and a message (the temporary file is removed)
function File:commit()
    local ok, err = close(self)
    if self.direct then
        if not ok then
            return nil, "cannot write " .. self.path .. ": " .. tostring(err)
        end
        return true
    end
    if ok then
        ok, err = os_rename(self.tmp, self.path)
    end
    if not ok then
        os_remove(self.tmp)
        let_go(self)
        return nil, "cannot write " .. self.path .. ": " .. tostring(err)
    end
    let_go(self)
    return true
end

--- A result cut short: keep its first `bytes` bytes (all, when nil) as
-- `PATH.part`, replacing an older one (a link there is replaced, never
-- followed).
-- @return the path kept, or nil and a message
function File:keep(bytes)
    close(self)
    if self.direct then
        return self.path
    end
    local part = self.path .. ".part"
    local ok, err = true, nil
    if bytes then
        ok, err = core().truncate(self.tmp, bytes)
    end
    if ok then
        ok, err = os_rename(self.tmp, part)
    end
    if not ok then
        os_remove(self.tmp)
        let_go(self)
        return nil, tostring(err)
    end
    let_go(self)
    return part
end

--- Give the file its name now and go on writing it (a file a checkpoint
-- will vouch for: it must be found under that name if the run stops).
-- @return true, or nil and a message
function File:move(path)
    if self.direct then
        return nil, "cannot write " .. self.path .. ": a checkpoint needs a regular file"
    end
    local ok, err = os_rename(self.tmp, path)
    if not ok then
        self:abort()
        return nil, "cannot write " .. path .. ": " .. tostring(err)
    end
    let_go(self)
    self.path = path
    return true
end

--- Give up: remove the temporary file.
function File:abort()
    if self.direct then
        pcall(close, self)
    end
    if self.tmp then
        pcall(close, self)
        os_remove(self.tmp)
        let_go(self)
    end
end

--- What a state keeps of the first `bytes` bytes of `path` (see
-- `wolkvox.core.digest`).
function M.digest(path, bytes)
    local d, why = core().digest(path, bytes)
    if not d then
        fail("cannot read " .. path .. ": " .. tostring(why))
    end
    return d
end

--- Go on writing `path`, which `saved` (`bytes`, `digest`) vouches for;
-- `what` names the file that vouches ("checkpoint", "sync state").  Bytes
-- after those vouched for are cut when `saved.pending` says a run of this
-- job was writing them when it stopped; otherwise they are someone else's
-- and the file is refused (kind `params`: nothing is removed).
-- @return an io file open for writing at the end
function M.resume(e, path, saved, what)
    local function refuse(why, todo)
        errors.refuse(e, format("cannot go on writing %s from its %s: %s (%s)", path, what, why,
            todo or ("move the file aside and remove the " .. what .. " to start over")))
    end
    local st, why = core().stat(path)
    if not st then
        refuse(tostring(why))
    end
    if st.type ~= "file" then
        refuse(st.type == "link" and "it is a symbolic link" or "it is not a regular file")
    end
    if not st.mine then
        refuse(format("it belongs to uid %d, not to this user", st.uid))
    end
    local bytes = saved.bytes
    if st.size < bytes then
        refuse(format("it holds %d bytes, fewer than the %d the %s vouches for", st.size, bytes, what))
    end
    if st.size > bytes and not saved.pending then
        refuse(format("%d bytes were added after the last run (%d vouched for); they are not this "
            .. "job's and are never cut", st.size - bytes, bytes), "move them to another file, or move "
            .. "the file aside and remove the " .. what .. " to start over")
    end
    if saved.digest and core().digest(path, bytes) ~= saved.digest then
        refuse("its content is not what the " .. what .. " vouches for (the file was replaced or edited)")
    end
    local ok, terr = core().truncate(path, bytes)
    if not ok then
        refuse(tostring(terr))
    end
    local f, err = io_open(path, "r+b")
    if not f then
        fail("cannot open " .. path .. ": " .. tostring(err))
    end
    f:seek("end")
    return f
end

return M
