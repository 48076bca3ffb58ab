--- tools/generated.lua: how every generator of a committed file ends
-- (tools/gen-docs.lua, gen-api-summary.lua, gen-man.lua, gen-completion.lua).
--
--   local generated = dofile("tools/generated.lua")
--   generated.finish(path, text, "make man", check)
--
-- Writes `text` to `path` (its directory made if missing; a temporary name
-- renamed when whole), or with `check` writes nothing and exits 1 when
-- `path` holds anything else, naming `how` to make it again.

local M = {}

--- The content of `path`, or nil when it cannot be read.
function M.read(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local text = f:read("a")
    f:close()
    return text
end

function M.finish(path, text, how, check)
    if check then
        if M.read(path) ~= text then
            io.stderr:write(path, " is not current: run ", how, "\n")
            os.exit(1)
        end
        return
    end
    local dir = path:match("^(.*)/")
    if dir then
        os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'")
    end
    local tmp = path .. ".tmp"
    local f = assert(io.open(tmp, "wb"))
    assert(f:write(text))
    assert(f:close())
    assert(os.rename(tmp, path))
end

return M
