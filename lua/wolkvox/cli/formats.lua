--- The output formats of the `wolkvox` command: the library's
-- `wolkvox.export` writers (csv, ndjson) and two more, `json` (one array,
-- streamed) and `table` (aligned columns for a terminal, written at the end:
-- it must see every row to size its columns).
-- @module wolkvox.cli.formats

local export = require "wolkvox.export"
local json = require "wolkvox.json"

local ipairs, tostring, concat = ipairs, tostring, table.concat

local M = {}

-- The formats this module adds to `wolkvox.export`'s, by name.
M.EXTRA = {
    -- One JSON array, written row by row as the rows come.
    json = {
        start = function(w)
            w.bracket = true
            return "["
        end,
        row = function(w, row)
            return (w.rows > 0 and ",\n" or "\n") .. json.encode(row)
        end,
        finish = function(w)
            if not w.bracket then
                return "[]\n"
            end
            return (w.rows > 0 and "\n" or "") .. "]\n"
        end,
    },
    -- Aligned columns for a terminal (columns as for CSV).  A table must
    -- know every row to size its columns: it is written at the end.
    table = {
        start = function(w, row)
            export.settle_columns(w, row)
            w.held = {}
            return ""
        end,
        row = function(w, row)
            local cells = {}
            for i, c in ipairs(w.cols) do
                local v = row[c]
                cells[i] = v == nil and "" or tostring(v):gsub("[%c]", " ")
            end
            w.held[#w.held + 1] = cells
            return ""
        end,
        finish = function(w)
            if not w.cols then
                return ""
            end
            local width = {}
            local function len(s)
                return #s:gsub("[\128-\191]", "")
            end
            for i, c in ipairs(w.cols) do
                width[i] = len(c)
                for _, cells in ipairs(w.held) do
                    local n = len(cells[i])
                    if n > width[i] then
                        width[i] = n
                    end
                end
            end
            local function line(cells)
                local out = {}
                for i, v in ipairs(cells) do
                    out[i] = i == #cells and v or v .. (" "):rep(width[i] - len(v))
                end
                return (concat(out, "  "):gsub(" +$", "")) .. "\n"
            end
            local out, rule = { line(w.cols) }, {}
            for i = 1, #w.cols do
                rule[i] = ("-"):rep(width[i])
            end
            out[2] = line(rule)
            for _, cells in ipairs(w.held) do
                out[#out + 1] = line(cells)
            end
            w.held = nil
            return concat(out)
        end,
    },
}

--- A writer of `format` ("csv", "ndjson", "json" or "table") to `file`.
-- @tparam string format
-- @tparam file file an open file
-- @tparam[opt] table opts `columns`, `bom` (see `wolkvox.export.writer`)
-- @return the writer, or nil and a message
function M.writer(format, file, opts)
    local f = M.EXTRA[format]
    if f then
        return export.custom(f, file, opts)
    end
    return export.writer(format, file, opts)
end

return M
