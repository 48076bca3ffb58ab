--- Where the `wolkvox` command writes what is not an export (`call`,
-- `endpoints`): stdout, or a file written under a name nobody can guess
-- beside it and renamed at the end (`wolkvox.out.file`), so a failed run
-- never leaves a half file under the final name.
-- @module wolkvox.cli.output

local file_out = require "wolkvox.out.file"
local errors = require "wolkvox.errors"

local M = {}

local Stdout = {}
Stdout.__index = Stdout

function Stdout.commit(self)
    local ok, err = self.file:flush()
    if not ok then
        return nil, "cannot write to stdout: " .. tostring(err)
    end
    return true
end

function Stdout.abort()
end

--- Open the output `path` (nil or "-": stdout).
-- @treturn table `file`, `commit()`, `abort()`; or nil and a message
function M.open(path)
    if path == nil or path == "-" then
        return setmetatable({ file = io.stdout }, Stdout)
    end
    -- (Ctrl-C is 130, not a failure to open)
    local ok, out = errors.try(function()
        file_out.check(path, "--output")
        return file_out.new(path)
    end)
    if not ok then
        return nil, type(out) == "table" and out.message or tostring(out)
    end
    return out
end

return M
