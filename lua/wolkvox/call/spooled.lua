--- The rows of one answer kept on disk (a `wolkvox.spool`, see the C core)
-- rather than as tables: their count is known when the answer ends, since
-- the transfer checked and counted every row, and they are decoded again
-- in batches only when they are handed over, so a window of 60,000 rows
-- never exists whole in memory.
-- @module wolkvox.call.spooled

local errors = require "wolkvox.errors"

local setmetatable, getmetatable, tostring = setmetatable, getmetatable, tostring

local M = {}

--- Bytes read from the file per batch (a batch is the rows they complete).
M.CHUNK = 256 * 1024

local Spooled = {}
Spooled.__index = Spooled

--- Rows on disk: `spool` (from a transport result) and `count`.
function M.new(spool, count)
    return setmetatable({ spool = spool, count = count }, Spooled)
end

--- True when `t` holds spooled rows.
function M.is(t)
    return getmetatable(t) == Spooled
end

--- The number of rows of `data`: spooled or a list.
function M.count(data)
    if M.is(data) then
        return data.count
    end
    return #data
end

--- A function that gives the next batch of rows (a non-empty list), then
-- nil; a file that cannot be read back raises a structured error naming
-- `endpoint`.  With `csv` (a list of columns) each batch is instead the
-- CSV lines of its rows, made by the C core straight from the answer's
-- text (what `core.csv_row` makes of the decoded rows), the first `skip`
-- rows left out.
function Spooled:batches(endpoint, csv, skip)
    local sp, done = self.spool, false
    local dec = sp:decoder(csv and { csv = csv, skip = skip } or nil)
    sp:rewind()
    local function fail(why)
        sp:close()
        errors.throw("output", { endpoint = endpoint,
            message = "the spooled answer could not be read back: " .. tostring(why) })
    end
    return function()
        while not done do
            local chunk, rerr = sp:read(M.CHUNK)
            local rows, err
            if chunk then
                rows, err = dec:feed(chunk)
            elseif rerr then
                fail(rerr)
            else
                done = true
                local _
                _, rows, err = dec:finish()
                sp:close()
            end
            if not rows then
                fail(err)
            end
            if #rows > 0 then
                return rows   -- a list of rows, or a string of CSV lines
            end
        end
        return nil
    end
end

--- The rows reduced to one field each (`{ [field] = value }`; empty
-- tables when `field` is nil): a truncated window's row times, without
-- holding its rows.
function Spooled:only(field, endpoint)
    local out = {}
    for rows in self:batches(endpoint) do
        for i = 1, #rows do
            out[#out + 1] = { [field or 1] = field and rows[i][field] or nil }
        end
    end
    return out
end

--- Let the file go (it has no name: closing it frees the disk).
function Spooled:close()
    self.spool:close()
end

return M
