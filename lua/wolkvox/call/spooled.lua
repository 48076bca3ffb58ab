--- The rows of one answer kept on disk (a `wolkvox.spool`, see the C core)
-- rather than as tables: their count is known when the answer ends, since
-- the transfer checked and counted every row, and they are decoded again
-- in batches only when they are handed over, so a window of 60,000 rows
-- never exists whole in memory.
-- @module wolkvox.call.spooled

local errors = require "wolkvox.errors"

local setmetatable, getmetatable, tostring, ipairs = setmetatable, getmetatable, tostring, ipairs

local M = {}

--- Bytes read from the file per batch (a batch is the rows they complete).
M.CHUNK = 256 * 1024

local Spooled = {}
Spooled.__index = Spooled

-- Read `sp` back from its start: a function giving its next chunk, then
-- nil (the file closed at its end), and `fail(why)`, which closes it and
-- raises the structured error naming `endpoint` and `what` was spooled.
local function read_back(sp, endpoint, what)
    local function fail(why)
        sp:close()
        errors.throw("output", { endpoint = endpoint,
            message = "the spooled " .. what .. " could not be read back: " .. tostring(why) })
    end
    sp:rewind()
    return function()
        local chunk, why = sp:read(M.CHUNK)
        if chunk then
            return chunk
        end
        if why then
            fail(why)
        end
        sp:close()
        return nil
    end, fail
end

--- Rows on disk: `spool` (from a transport result: the answer, or nil
-- when only its lines were kept) and `count`; `lines`, when the transfer
-- also made the rows' CSV lines: `spool` (a `wolkvox.spool` of them),
-- `columns` (theirs), `extra` (the first row had a member none of them
-- takes), `times` (the rows' times when the transport gave them) and
-- `time_field`; or their NDJSON lines: `ndjson` true instead of `columns`.
function M.new(spool, count, lines)
    return setmetatable({ spool = spool, count = count, lines = lines }, Spooled)
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
-- rows left out; with `ndjson` (`wolkvox.json.encode_row`), their NDJSON
-- lines, what it makes of them (a row it cannot write raises an `output`
-- error saying why).
function Spooled:batches(endpoint, csv, skip, ndjson)
    local sp, done = self.spool, false
    if not sp then
        errors.throw("output", { endpoint = endpoint,
            message = "the answer was kept as CSV lines only (an internal error: lines_for() was not asked)" })
    end
    local dec = sp:decoder((csv or ndjson) and { csv = csv, ndjson = ndjson, skip = skip } or nil)
    local next_chunk, fail = read_back(sp, endpoint, "answer")
    if ndjson then
        -- (The answer was checked as it arrived: what fails now is a row
        -- the encoder cannot write.)
        fail = function(why)
            sp:close()
            errors.throw("output", { endpoint = endpoint, message = tostring(why) })
        end
    end
    return function()
        while not done do
            local chunk = next_chunk()
            local rows, err
            if chunk then
                rows, err = dec:feed(chunk)
            else
                done = true
                local _
                _, rows, err = dec:finish()
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

--- Whether the rows' CSV lines, made as they arrived, are the lines of
-- `columns` (a list of names): made with these very columns, and, unless
-- the columns are `settled` already, from a first row whose every member
-- has one of them (a first row with more would settle more columns).
function Spooled:lines_for(columns, settled)
    local l = self.lines
    if not l or not l.columns or (l.extra and not settled) or #l.columns ~= #columns then
        return false
    end
    for i = 1, #columns do
        if l.columns[i] ~= columns[i] then
            return false
        end
    end
    return true
end

--- Whether the rows' NDJSON lines were made as they arrived.
function Spooled:ndjson_lines()
    return self.lines ~= nil and self.lines.ndjson == true
end

--- A function that gives the next chunk of the rows' CSV lines (text
-- that may end inside a line), then nil; a file that cannot be read back
-- raises a structured error naming `endpoint`.
function Spooled:line_chunks(endpoint)
    return (read_back(self.lines.spool, endpoint, "lines"))
end

--- The rows reduced to one field each (`{ [field] = value }`; empty
-- tables when `field` is nil): a truncated window's row times, without
-- holding its rows.
function Spooled:only(field, endpoint)
    local out = {}
    local l = self.lines
    if l and l.times and l.time_field == field then
        for i, t in ipairs(l.times) do
            out[i] = { [field or 1] = field and t or nil }
        end
        return out
    end
    for rows in self:batches(endpoint) do
        for i = 1, #rows do
            out[#out + 1] = { [field or 1] = field and rows[i][field] or nil }
        end
    end
    return out
end

--- Let the files go (they have no name: closing them frees the disk).
function Spooled:close()
    if self.spool then
        self.spool:close()
    end
    if self.lines then
        self.lines.spool:close()
    end
end

return M
