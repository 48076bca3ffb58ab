--- Where the `wolkvox` command writes: stdout, or a file written under a
-- temporary name beside it and renamed at the end, so a failed run never
-- leaves a half file under the final name.
-- @module wolkvox.cli.output

local M = {}

local Out = {}
Out.__index = Out

--- Open the output `path` (nil or "-": stdout).
-- @treturn table `file`, `commit()`, `abort()`; or nil and a message
function M.open(path)
    if path == nil or path == "-" then
        return setmetatable({ file = io.stdout }, Out)
    end
    local dir, base = path:match("^(.*/)([^/]*)$")
    dir, base = dir or "", base or path
    if base == "" then
        return nil, "--output names a directory: " .. path
    end
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
    local tmp = string.format("%s.%s.part-%06d", dir, base, math.random(0, 999999))
    local f, err = io.open(tmp, "wb")
    if not f then
        return nil, "cannot write " .. path .. ": " .. tostring(err)
    end
    return setmetatable({ file = f, tmp = tmp, path = path }, Out)
end

--- Finish: close the temporary file and rename it to the final name.
-- @return true, or nil and a message (the temporary file is removed)
function Out:commit()
    if not self.tmp then
        local ok, err = self.file:flush()
        if not ok then
            return nil, "cannot write to stdout: " .. tostring(err)
        end
        return true
    end
    local ok, err = self.file:close()
    if ok then
        ok, err = os.rename(self.tmp, self.path)
    end
    if not ok then
        os.remove(self.tmp)
        return nil, "cannot write " .. self.path .. ": " .. tostring(err)
    end
    self.tmp = nil
    return true
end

--- Give up: remove the temporary file (stdout is left as it is).
function Out:abort()
    if self.tmp then
        pcall(self.file.close, self.file)
        os.remove(self.tmp)
        self.tmp = nil
    end
end

return M
