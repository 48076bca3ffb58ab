-- wolkvox.export: rows to CSV and NDJSON, every write checked.
local cjson = require "cjson"
local export = require "wolkvox.export"

local function export_to_string(format, rows, opts)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    local w = assert(export.writer(format, f, opts))
    for _, row in ipairs(rows) do
        assert(w:write(row))
    end
    assert(w:close())
    f:close()
    f = assert(io.open(path, "rb"))
    local text = f:read("*a")
    f:close()
    os.remove(path)
    return text, w
end

describe("wolkvox.export", function()
    it("writes RFC 4180 CSV: header first, the given columns in order, then other keys sorted", function()
        local text, w = export_to_string("csv", {
            { b = "2", a = "1", zeta = "z", extra = "e" },
            { a = 'say "hi", then', b = "line\nbreak" },
        }, { columns = { "b", "a" } })
        assert.equal('b,a,extra,zeta\r\n2,1,e,z\r\n"line\nbreak","say ""hi"", then",,\r\n', text)
        assert.equal(2, w.rows)
    end)

    it("starts with a byte order mark when asked (Excel)", function()
        local text = export_to_string("csv", { { a = "ñ" } }, { bom = true })
        assert.equal("\239\187\191a\r\nñ\r\n", text)
    end)

    it("writes the header of an empty CSV when the columns are known", function()
        assert.equal("x,y\r\n", export_to_string("csv", {}, { columns = { "x", "y" } }))
    end)

    it("writes NDJSON: one object a line, keys and values as the API sends them", function()
        local rows = { { conn_id = "1", note = 'a "b"\n' }, { conn_id = "2" } }
        local text = export_to_string("ndjson", rows)
        local i = 0
        for line in text:gmatch("([^\n]*)\n") do
            i = i + 1
            assert.same(rows[i], cjson.decode(line))
        end
        assert.equal(2, i)
    end)

    it("writes one JSON array, row by row, and [] for no row", function()
        local rows = { { a = "1" }, { a = "2", b = 'q"' } }
        assert.same(rows, cjson.decode((export_to_string("json", rows))))
        assert.equal("[]\n", export_to_string("json", {}))
    end)

    it("writes an aligned table for a terminal, columns as for CSV", function()
        local text = export_to_string("table", { { name = "Ana", n = "1" }, { name = "Bartolomé", n = "22" } },
            { columns = { "name", "n" } })
        assert.equal("name       n\n---------  --\nAna        1\nBartolomé  22\n", text)
    end)

    it("writes the same CSV line in C as in Lua, cell for cell", function()
        local core = require "wolkvox.core"
        local values = { "", "plain", "a,b", 'q"uote', '""', "line\nbreak", "cr\rx", "ñandú", " lead", "trail ",
            1, -2.5, 1e300, 2 ^ 53, 0.1, true, false, ("x,\""):rep(30000) }
        for _, v in ipairs(values) do
            assert.equal(export.csv_cell(v) .. "\r\n", core.csv_row({ a = v }, { "a" }))
        end
        -- (C reads a cell 8 bytes at a time: each of the four bytes that
        -- make it quoted, at every place in cells of 1 to 25 bytes)
        for _, special in ipairs { ",", '"', "\r", "\n" } do
            for n = 1, 25 do
                for at = 1, n do
                    local v = ("a"):rep(at - 1) .. special .. ("b"):rep(n - at)
                    assert.equal(export.csv_cell(v) .. "\r\n", core.csv_row({ a = v }, { "a" }))
                end
            end
        end
        assert.equal(',"x,y",3\r\n', core.csv_row({ b = "x,y", c = 3, z = "not a column" }, { "a", "b", "c" }))
        assert.equal("\r\n", core.csv_row({}, {}))
        -- A row's __index is not consulted (rows are plain tables).
        local tricky = setmetatable({}, { __index = function() return "made up" end })
        assert.equal(",\r\n", core.csv_row(tricky, { "a", "b" }))
    end)

    it("takes an endpoint's columns from the registry, in the API's order", function()
        local cols = export.columns("cdr_1")
        assert.is_true(#cols > 5)
        assert.equal(export.columns("reports_manager/cdr_1")[1], cols[1])
        for _, c in ipairs(cols) do
            assert.is_nil(c:find("[%.%[]"), c)
        end
    end)

    it("reports a full disk as nil, err, and keeps failing after it", function()
        local f = assert(io.open("/dev/full", "wb"))
        local w = assert(export.writer("ndjson", f))
        local ok, err
        for _ = 1, 2000 do -- past stdio's buffer, so a write reaches the disk
            ok, err = w:write({ a = ("x"):rep(100) })
            if not ok then
                break
            end
        end
        if ok then
            ok, err = w:close()
        end
        assert.is_nil(ok)
        assert.matches("cannot write", err)
        assert.is_nil(w:close())
        f:close()
    end)

    it("refuses an unknown format with the known ones, and a row that is not a table", function()
        local w, err = export.writer("xml", io.stdout)
        assert.is_nil(w)
        assert.matches("unknown format 'xml' %(csv, html, json, ndjson, singer, table, xlsx%)", err)
        assert.has_error(function() assert(export.writer("csv", io.stdout)):write("x") end)
    end)
end)
