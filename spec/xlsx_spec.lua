-- The xlsx format (issue #25): workbooks written through libxlsxwriter
-- (wolkvox.xlsx) and read back by an independent reader, Python's openpyxl
-- (spec/xlsx_read.py): typed cells and their formats, row counts, the
-- frozen header and the autofilter, the About sheet, the charts of a report
-- by period and their series, hostile values read back as text.
local export = require "wolkvox.out.formats"
local schema = require "wolkvox.api.schema"
local registry = require "wolkvox.api.registry"
local core = require "wolkvox.core"
local support = require "support"

local have_module = pcall(require, "wolkvox.xlsx")
local PYTHON = "/usr/bin/python3"
local has_reader = support.sh(PYTHON .. " -c 'import openpyxl'") == 0

-- What the reader found in the workbook at `path` (the first `rows` rows of each sheet).
local function read_book(path, rows)
    local code, out = support.sh(PYTHON .. " spec/xlsx_read.py " .. support.q(path) .. " " .. (rows or 10))
    assert(code == 0, out)
    return core.decode(out)
end

-- The About sheet as a table: label -> value.
local function about(book)
    local out = {}
    for _, row in ipairs(book.sheet.About.cells) do
        out[row[1].v] = row[2] and row[2].v
    end
    return out
end

-- Column index of `name` in the header row of sheet `s`.
local function col(s, name)
    for i, cell in ipairs(s.cells[1]) do
        if cell.v == name then
            return i
        end
    end
    error("no column " .. name)
end

local function usable(pending)
    if not have_module then
        pending("wolkvox.xlsx is not built here (libxlsxwriter-dev)")
        return false
    end
    if not has_reader then
        pending("python3-openpyxl is not installed")
        return false
    end
    return true
end

-- Rows through a writer of the xlsx format to a new file: its path and the writer.
local function write_rows(rows, opts, dir)
    local path = dir .. "/w" .. tostring(math.random(1, 1e9)) .. ".xlsx"
    local f = assert(io.open(path, "wb"))
    local w = assert(export.writer("xlsx", f, opts))
    for _, r in ipairs(rows) do
        if r.window then
            w.window = r.window
            r = r.row
        end
        assert(w:write(r))
    end
    assert(w:close())
    f:close()
    return path, w
end

describe("xlsx", function()
    local dir
    setup(function() dir = support.tmpdir() end)
    teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

    describe("the C module", function()
        it("keeps its files in a private directory, removed by discard or by the collector", function()
            if not have_module then
                return pending("wolkvox.xlsx is not built here")
            end
            local xlsx = require "wolkvox.xlsx"
            local tmp = dir .. "/own"
            assert(os.execute("mkdir " .. tmp) == true or true)
            local b = assert(xlsx.new(tmp))
            local s = assert(b:sheet("Data"))
            assert(b:row(s, 0, { "a", 1 }, nil, 2))
            -- A row before one already written is refused, not silently lost.
            assert(b:row(s, 2, { "c" }, nil, 1))
            local ok, why = b:row(s, 1, { "b" }, nil, 1)
            assert.is_nil(ok)
            assert.matches("^xlsx: row: ", why)
            local _, dup = b:sheet("Data")
            assert.matches("xlsx: Data: ", dup)
            local path = assert(b:close())
            assert.equal(tmp, path:match("^(.*)/wolkvox%-xlsx%-%d+%-%w+/book%.xlsx$"))
            assert.equal("PK", support.read(path):sub(1, 2))
            local again, closed = b:row(s, 3, { "d" }, nil, 1)
            assert.is_nil(again)
            assert.matches("closed", closed)
            assert.equal(path, b:close())       -- (idempotent: the same file)
            b:discard()
            b:discard()
            assert.is_nil(io.open(path, "rb"))
            -- One never closed: the collector removes its directory.
            local b2 = assert(xlsx.new(tmp))
            assert(b2:row(assert(b2:sheet("x")), 0, { ("y"):rep(100) }, nil, 1))
            b2 = nil -- luacheck: ignore 311
            collectgarbage()
            collectgarbage()
            local _, listing = support.sh("ls -A " .. support.q(tmp))
            assert.equal("", listing)
        end)

        it("sweeps the private directory of a process killed outright, and nothing else", function()
            if not have_module then
                return pending("wolkvox.xlsx is not built here")
            end
            local xlsx = require "wolkvox.xlsx"
            local tmp = dir .. "/sweep"
            local p = io.popen("sh -c 'echo $$'")
            local dead = p:read("*l")
            p:close()
            local function make(name, mode, files)
                assert(os.execute("mkdir -m " .. mode .. " " .. support.q(tmp .. "/" .. name)))
                for _, f in ipairs(files) do
                    support.spit(tmp .. "/" .. name .. "/" .. f, "unfinished")
                end
            end
            assert(os.execute("mkdir -p " .. support.q(tmp .. "/elsewhere")))
            make("wolkvox-xlsx-" .. dead .. "-aB3xYz", "700", { "book.xlsx" })   -- stale: removed
            make("wolkvox-xlsx-" .. dead .. "-qqqqqq", "700", {})                -- stale, empty: removed
            make("wolkvox-xlsx-1-aaaaaa", "700", { "book.xlsx" })                -- pid 1 lives: kept
            make("wolkvox-xlsx-" .. dead .. "-bbbbbb", "700", { "book.xlsx", "notes.txt" }) -- not only ours
            make("wolkvox-xlsx-" .. dead .. "-cccccc", "755", { "book.xlsx" })  -- not private
            make("wolkvox-xlsx-" .. dead .. "-dd", "700", {})                    -- not a name we make
            support.spit(tmp .. "/elsewhere/book.xlsx", "someone's")
            assert(os.execute("ln -s elsewhere " .. support.q(tmp .. "/wolkvox-xlsx-" .. dead .. "-eeeeee")))
            local b = assert(xlsx.new(tmp))
            local mine = assert(b:close()):match("/(wolkvox%-xlsx%-[^/]+)/book%.xlsx$")
            local f = assert(io.open("/proc/self/stat"))
            local self = f:read("*l"):match("^%d+")
            f:close()
            assert.equal(self, mine:match("^wolkvox%-xlsx%-(%d+)%-%w%w%w%w%w%w$"))
            local _, listing = support.sh("ls -A " .. support.q(tmp) .. " | sort")
            local stale = "wolkvox-xlsx-" .. dead
            local want = { "elsewhere", mine, stale .. "-bbbbbb", stale .. "-cccccc", stale .. "-dd",
                stale .. "-eeeeee", "wolkvox-xlsx-1-aaaaaa" }
            table.sort(want)
            assert.equal(table.concat(want, "\n") .. "\n", listing)
            assert.equal("someone's", support.read(tmp .. "/elsewhere/book.xlsx"))
            assert.equal("unfinished", support.read(tmp .. "/wolkvox-xlsx-" .. dead .. "-bbbbbb/notes.txt"))
            assert.equal("unfinished", support.read(tmp .. "/wolkvox-xlsx-1-aaaaaa/book.xlsx"))
            b:discard()
        end)

        it("refuses a string longer than a cell holds and one with a NUL byte", function()
            if not have_module then
                return pending("wolkvox.xlsx is not built here")
            end
            local xlsx = require "wolkvox.xlsx"
            local b = assert(xlsx.new(dir))
            local s = assert(b:sheet("S"))
            local ok, why = b:row(s, 0, { ("x"):rep(xlsx.max_string + 1) }, nil, 1)
            assert.is_nil(ok)
            assert.matches("32,767", why, 1, true)
            ok, why = b:row(s, 1, { "a\0b" }, nil, 1)
            assert.is_nil(ok)
            assert.matches("NUL", why)
            b:discard()
        end)
    end)

    describe("typed cells", function()
        it("cdr_1 through a writer: numbers, times, dates, text; hostile values read back as text", function()
            if not usable(pending) then
                return
            end
            local long = ("é"):rep(40000)
            local rows = {
                { agent_name = "Ana", date = "2026-01-05 10:00:00", telephone = "0031", cost = "1,234.5",
                  time_seg = "01:02:03", time_min = "62.05", conn_id = "000123", skill_id = 7, comment = "ok" },
                { agent_name = "=HYPERLINK(\"http://evil.example\",\"click\")", date = "not a date",
                  telephone = "=cmd|' /C calc'!A0", cost = "n/a", time_seg = "abc", conn_id = "2",
                  comment = "<script>alert(1)</script></table>\"'&", destiny = "ctl\1\8\11\27x",
                  description_cod_act = "_x0041_ stays", customer_id = "bad \255 byte", hang_up = "a\0b",
                  skill_name = long },
            }
            local path = write_rows(rows, { endpoint = "cdr_1", utc_offset = -5 * 3600 }, dir)
            local book = read_book(path)
            assert.is_true(book.xml_ok)
            assert.same({ "Data", "About" }, book.sheets)
            local d = book.sheet.Data
            assert.equal(3, d.rows)
            assert.equal("A2", d.freeze)
            assert.equal("A1:T3", d.filter)
            local head = {}
            for i, c in ipairs(d.cells[1]) do
                head[i] = c.v
                assert.equal("s", c.t)
            end
            assert.same(export.columns("cdr_1"), head)
            local r = d.cells[2]
            local function cell(row, name)
                return row[col(d, name)]
            end
            assert.same({ v = "2026-01-05 10:00:00", t = "d", f = "yyyy-mm-dd hh:mm:ss" }, cell(r, "date"))
            assert.same({ v = 3723, t = "d", f = "[h]:mm:ss" }, cell(r, "time_seg"))
            assert.same({ v = 1234.5, t = "n", f = "General" }, cell(r, "cost"))
            assert.same({ v = 62.05, t = "n", f = "General" }, cell(r, "time_min"))
            assert.same({ v = "0031", t = "s", f = "General" }, cell(r, "telephone"))
            assert.same({ v = "000123", t = "s", f = "General" }, cell(r, "conn_id"))
            assert.same({ v = "7", t = "s", f = "General" }, cell(r, "skill_id"))
            assert.is_nil(cell(r, "destiny").v)       -- (no value: a blank cell)
            -- The hostile row: every value as the text sent, nothing as a formula.
            r = d.cells[3]
            for _, c in ipairs(r) do
                assert.is_true(c.t == "s" or c.t == "n", "cell of type " .. tostring(c.t))
            end
            assert.equal(rows[2].agent_name, cell(r, "agent_name").v)
            assert.equal(rows[2].telephone, cell(r, "telephone").v)
            assert.equal(rows[2].comment, cell(r, "comment").v)
            assert.equal(rows[2].destiny, cell(r, "destiny").v)
            assert.equal("_x0041_ stays", cell(r, "description_cod_act").v)
            assert.equal("bad \239\191\189 byte", cell(r, "customer_id").v)
            assert.equal("a\0b", cell(r, "hang_up").v)
            -- Values that do not fit their type: the text sent.
            assert.same({ v = "not a date", t = "s", f = "General" }, cell(r, "date"))
            assert.same({ v = "abc", t = "s", f = "General" }, cell(r, "time_seg"))
            assert.same({ v = "n/a", t = "s", f = "General" }, cell(r, "cost"))
            -- Text past Excel's limit: cut, and saying so.
            local cut = cell(r, "skill_name").v
            assert.equal(32767, utf8 and utf8.len(cut) or #cut:gsub("[\128-\191]", ""))
            assert.matches("%[cut: 40000 characters in all%]$", cut)
            assert.equal(("é"):rep(10), cut:sub(1, 20))
            local a = about(book)
            assert.equal("reports_manager/cdr_1 — Call detail", a.Endpoint)
            assert.equal("UTC-05:00", a["Operation clock"])
            assert.equal(2, a.Rows)
            assert.matches("^3 ", a["Values kept as text"])
            assert.matches("^1 ", a["Cells cut"])
            assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d UTC$", a.Generated)
            assert.equal(require("wolkvox.version"), a["lua-wolkvox"])
            -- Widths from the header and the values.
            assert.is_true(d.widths.A >= #"agent_name")
            assert.is_true(d.widths.B >= 19)
        end)

        it("percentages as fractions shown as %, typed (--typed) values as numbers", function()
            if not usable(pending) then
                return
            end
            local rows = {
                { agent_id = "1001", agent_name = "Ana", calls = 12, occupancy = "45.5 %", aht = 125,
                  login = "2026-01-05 08:00:00" },
                { agent_id = "1002", agent_name = "Bo", calls = "7", occupancy = 9.25, aht = "00:02:05" },
            }
            local path = write_rows(rows, { endpoint = "agent_1" }, dir)
            local d = read_book(path).sheet.Data
            assert.same({ v = 0.455, t = "n", f = "0.00%" }, d.cells[2][col(d, "occupancy")])
            assert.same({ v = 0.0925, t = "n", f = "0.00%" }, d.cells[3][col(d, "occupancy")])
            assert.same({ v = 125, t = "d", f = "[h]:mm:ss" }, d.cells[2][col(d, "aht")])
            assert.same({ v = 125, t = "d", f = "[h]:mm:ss" }, d.cells[3][col(d, "aht")])
            assert.same({ v = 7, t = "n", f = "General" }, d.cells[3][col(d, "calls")])
            assert.same({ "d yyyy-mm-dd hh:mm:ss" }, d.kinds.login)
        end)

        it("rolls over to Data 2, ... past the rows a sheet holds; an empty report is its header", function()
            if not usable(pending) then
                return
            end
            local xl = require "wolkvox.out.xlsx"
            local max = xl.MAX_ROWS
            xl.MAX_ROWS = 4   -- (a sheet of 1,048,576 rows works the same way, slowly)
            local rows = {}
            for i = 1, 7 do
                rows[i] = { conn_id = tostring(i), time_seg = i }
            end
            local ok, path = pcall(write_rows, rows, { endpoint = "cdr_1" }, dir)
            xl.MAX_ROWS = max
            assert(ok, path)
            local book = read_book(path)
            assert.same({ "Data", "Data 2", "Data 3", "About" }, book.sheets)
            local got = {}
            for _, name in ipairs { "Data", "Data 2", "Data 3" } do
                local s = book.sheet[name]
                assert.equal("conn_id", s.cells[1][col(s, "conn_id")].v)
                assert.equal("A2", s.freeze)
                for r = 2, #s.cells do
                    got[#got + 1] = s.cells[r][col(s, "conn_id")].v
                end
            end
            assert.same({ "1", "2", "3", "4", "5", "6", "7" }, got)
            assert.equal("A1:T4", book.sheet.Data.filter)
            assert.equal("A1:T2", book.sheet["Data 3"].filter)
            assert.equal(7, about(book).Rows)
            assert.equal("Data, Data 2, Data 3", about(book)["Data sheets"])

            path = write_rows({}, { endpoint = "cdr_1", columns = export.columns("cdr_1") }, dir)
            book = read_book(path)
            assert.equal(1, book.sheet.Data.rows)
            assert.equal("agent_name", book.sheet.Data.cells[1][1].v)
            assert.equal(0, about(book).Rows)
        end)

        it("two workbooks written at once do not mix", function()
            if not usable(pending) then
                return
            end
            local p1, p2 = dir .. "/one.xlsx", dir .. "/two.xlsx"
            local f1, f2 = assert(io.open(p1, "wb")), assert(io.open(p2, "wb"))
            local w1 = assert(export.writer("xlsx", f1, { endpoint = "cdr_2" }))
            local w2 = assert(export.writer("xlsx", f2, { endpoint = "cdr_2" }))
            for i = 1, 5 do
                assert(w1:write { agent_name = "one " .. i, calls = i })
                assert(w2:write { agent_name = "two " .. i, calls = 10 * i })
            end
            assert(w2:write { agent_name = "two 6", calls = 60 })
            assert(w1:close())
            assert(w2:close())
            f1:close()
            f2:close()
            local a, b = read_book(p1).sheet.Data, read_book(p2).sheet.Data
            assert.equal(6, a.rows)
            assert.equal(7, b.rows)
            assert.equal("one 5", a.cells[6][col(a, "agent_name")].v)
            assert.equal(60, b.cells[7][col(b, "calls")].v)
        end)
        it("a file that refuses the workbook: close fails and says why", function()
            if not usable(pending) then
                return
            end
            local path = dir .. "/ro.xlsx"
            support.spit(path, "")
            local f = assert(io.open(path, "rb"))   -- (open for reading: every write fails)
            local w = assert(export.writer("xlsx", f, { endpoint = "cdr_2" }))
            assert(w:write { agent_name = "a", calls = 1 })
            local ok, why = w:close()
            f:close()
            assert.is_nil(ok)
            assert.matches("^cannot write", why)
            assert.equal("", support.read(path))
        end)
    end)

    describe("charts of a report by period", function()
        it("one row a period: each numeric field charted from the Data sheet's own ranges", function()
            if not usable(pending) then
                return
            end
            local rows = {}
            for i, p in ipairs { "2026-01", "2026-02", "2026-03" } do
                rows[i] = { window = { label = p }, row = { agent_name = "all", calls = 10 * i, cost = "1.5" } }
            end
            local path = write_rows(rows, { endpoint = "cdr_2", about = { per = "month", from = "2026-01-01 00:00:00",
                to = "2026-03-31 23:59:59" } }, dir)
            local book = read_book(path)
            assert.same({ "Data", "Charts", "About" }, book.sheets)
            local d = book.sheet.Data
            assert.equal("period", d.cells[1][1].v)
            assert.equal("2026-02", d.cells[3][1].v)
            local charts = book.sheet.Charts.charts
            assert.equal(2, #charts)
            assert.equal("lineChart", charts[1].type)
            assert.equal("calls", charts[1].title)
            local c = col(d, "calls") - 1
            local letter = string.char(65 + c)
            assert.same({ { name = "'Data'!$" .. letter .. "$1", cat = "'Data'!$A$2:$A$4",
                val = "'Data'!$" .. letter .. "$2:$" .. letter .. "$4" } }, charts[1].series)
            assert.equal("month", about(book).Per)
        end)

        it("c:export agent_1 per day: a chart per numeric field, a line per agent, from Chart data", function()
            if not usable(pending) then
                return
            end
            local srv = support.fake({ rows_per_day = 24 })
            local c = support.client(srv)
            local out = dir .. "/agents.xlsx"
            local ok, n = pcall(c.export, c, "agent_1", { from = "2026-01-05", to = "2026-01-08", per = "day" },
                { format = "xlsx", output = out })
            local want = {}
            for _, period in ipairs(ok and c:report("agent_1", { from = "2026-01-05", to = "2026-01-08",
                    per = "day" }) or {}) do
                for _, row in ipairs(period.rows) do
                    want[#want + 1] = row
                end
            end
            c:close()
            srv:stop()
            assert(ok, n)
            local book = read_book(out, 40)
            assert.same({ "Data", "Charts", "Chart data", "About" }, book.sheets)
            local d = book.sheet.Data
            assert.equal(#want + 1, d.rows)
            assert.equal(n, #want)
            assert.equal("period", d.cells[1][1].v)
            assert.equal("2026-01-05", d.cells[2][1].v)
            -- As the API gave them.
            local first = want[1]
            local oc = d.cells[2][col(d, "occupancy")]
            assert.equal("0.00%", oc.f)
            assert.near(schema.value("percent", first.occupancy) / 100, oc.v, 1e-12)
            assert.equal(first.agent_name, d.cells[2][col(d, "agent_name")].v)
            -- One chart per numeric field of the endpoint.
            local numeric = {}
            for _, cl in ipairs(schema.columns(registry.bare("agent_1"))) do
                if cl.type == "integer" or cl.type == "decimal" or cl.type == "duration" or cl.type == "percent" then
                    numeric[#numeric + 1] = cl.name
                end
            end
            local charts = book.sheet.Charts.charts
            assert.equal(#numeric, #charts)
            local titles = {}
            for _, ch in ipairs(charts) do
                titles[#titles + 1] = ch.title
            end
            table.sort(titles)
            table.sort(numeric)
            assert.same(numeric, titles)
            -- Each series: the periods as categories, one agent's values, its name from the block's header.
            local cd = book.sheet["Chart data"]
            local agents = #want / 4
            assert.equal(agents, #charts[1].series)
            assert.equal(charts[1].title, cd.cells[1][1].v)
            assert.same({ name = "'Chart data'!$B$1", cat = "'Chart data'!$A$2:$A$5", val = "'Chart data'!$B$2:$B$5" },
                charts[1].series[1])
            assert.equal("2026-01-05", cd.cells[2][1].v)
            assert.equal("2026-01-08", cd.cells[5][1].v)
            assert.equal(first.agent_name, cd.cells[1][2].v)
            local a = about(book)
            assert.equal("day", a.Per)
            assert.equal(4, a.Calls)
            assert.equal(4, a.Windows)
            assert.equal("2026-01-05 00:00:00", a.From)
        end)
    end)

    describe("the command line #children", function()
        local srv
        setup(function() srv = support.fake({ rows_per_day = 30 }) end)
        teardown(function() srv:stop() end)
        before_each(function() srv:control("reset") end)

        it("wolkvox report ... -o FILE.xlsx; --format xlsx to a pipe", function()
            if not usable(pending) then
                return
            end
            local out = dir .. "/calls.xlsx"
            local code, _, err = support.wolkvox(srv, "report cdr_1 --from 2026-01-01 --to 2026-01-03 -q -o " .. out)
            assert.equal(0, code, err)
            local book = read_book(out, 2)
            local d = book.sheet.Data
            assert.equal(91, d.rows)
            assert.same({ "d yyyy-mm-dd hh:mm:ss" }, d.kinds.date)
            assert.same({ "d [h]:mm:ss" }, d.kinds.time_seg)
            assert.equal(90, about(book).Rows)
            -- To a pipe: the same workbook through `cat`.
            local piped = dir .. "/piped.xlsx"
            code, err = support.sh("WOLKVOX_TOKEN=" .. srv.token .. " lua5.4 bin/wolkvox --base-url " .. srv.url
                .. " report cdr_1 --from 2026-01-01 --to 2026-01-03 -q --format xlsx | cat > " .. support.q(piped))
            assert.equal(0, code, err)
            local again = read_book(piped, 2)
            assert.equal(91, again.sheet.Data.rows)
            assert.same(d.cells[2], again.sheet.Data.cells[2])
            -- Per month: the period column and the charts.
            code, _, err = support.wolkvox(srv, "report cdr_2 --from 2026-01-01 --to 2026-03-31 --per month -q -o "
                .. out)
            assert.equal(0, code, err)
            book = read_book(out, 100)
            assert.same({ "Data", "Charts", "Chart data", "About" }, book.sheets)
            d = book.sheet.Data
            assert.equal("period", d.cells[1][1].v)
            assert.equal(d.rows, #d.cells)
            assert.equal("2026-01", d.cells[2][1].v)
            assert.equal("2026-03", d.cells[d.rows][1].v)
            assert.equal(2, #book.sheet.Charts.charts)   -- calls, cost
            assert.equal(3, #support.calls(srv, "cdr_2"))
        end)

        -- `wolkvox report cdr_1` over three months to `out`, started in the
        -- background with TMPDIR=`tmp`, the fake slowed down: its pid, and a
        -- function that waits for its end and gives its exit status and stderr.
        local function slow_export(out, tmp, state)
            srv:control("config", { latency = 0.3 })
            local rc, err = out .. ".rc", out .. ".err"
            local cmd = "env -u LD_PRELOAD -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE HOME=" .. support.q(dir)
                .. " TMPDIR=" .. support.q(tmp) .. " WOLKVOX_TOKEN=" .. srv.token .. " lua5.4 bin/wolkvox --base-url "
                .. srv.url .. " --state-dir " .. support.q(state) .. " report cdr_1 --from 2026-01-01 --to 2026-03-31"
                .. " max_concurrent=1 -q -o " .. support.q(out)
            local p = io.popen("env -u LD_PRELOAD sh -c " .. support.q(cmd .. " 2>" .. support.q(err)
                .. " >/dev/null & echo $!; wait $!; echo $? >" .. support.q(rc)) .. " 2>/dev/null &")
            local pid = assert(tonumber(p:read("*l")))
            p:close()
            return pid, function()
                local code = support.wait_for(function() return (support.slurp(rc) or ""):match("%d+") end, 30,
                    "the export's end")
                return tonumber(code), support.slurp(err) or ""
            end
        end

        -- The private directories under `tmp`.
        local function private_dirs(tmp)
            local _, listing = support.sh("ls -A " .. support.q(tmp) .. " | grep '^wolkvox-xlsx-' || true")
            return listing
        end

        -- slow_export to `name`.xlsx with a TMPDIR of its own, under way (two
        -- calls made): its TMPDIR, output, pid and `finish`.
        local function export_underway(name)
            local tmp, out = support.tmpdir(), dir .. "/" .. name .. ".xlsx"
            local pid, finish = slow_export(out, tmp, dir .. "/state-" .. name)
            support.wait_for(function() return #support.calls(srv, "cdr_1") >= 2 end, 20, "two calls")
            return tmp, out, pid, finish
        end

        it("Ctrl-C mid-export: 130, nothing under the final name, no private directory left", function()
            if not usable(pending) then
                return
            end
            local tmp, out, pid, finish = export_underway("int")
            assert.matches("^wolkvox%-xlsx%-" .. pid .. "%-", private_dirs(tmp))
            os.execute("kill -INT " .. pid)
            local code, err = finish()
            assert.equal(130, code, err)
            assert.matches("interrupted", err, 1, true)
            assert.is_nil(support.slurp(out))
            assert.equal("", private_dirs(tmp))
            local _, hidden = support.sh("ls -A " .. support.q(dir) .. " | grep '^\\.' || true")
            assert.equal("", hidden)
        end)

        it("kill -9 mid-export leaves its private directory; the next export removes it and finishes", function()
            if not usable(pending) then
                return
            end
            local tmp, out, pid, finish = export_underway("k9")
            os.execute("kill -9 " .. pid)
            assert.equal(137, (finish()))
            assert.matches("^wolkvox%-xlsx%-" .. pid .. "%-%w+\n$", private_dirs(tmp))
            assert.is_nil(support.slurp(out))
            support.wait_for(function() return srv:control("stats").inflight == 0 end, 20, "the fake's calls to end")
            srv:control("reset")
            local code, _, err = support.wolkvox(srv, "report cdr_1 --from 2026-01-01 --to 2026-01-02 -q -o " .. out,
                { env = "TMPDIR=" .. support.q(tmp), state_dir = dir .. "/state-k9b" })
            assert.equal(0, code, err)
            assert.equal("", private_dirs(tmp))
            assert.equal(61, read_book(out, 1).sheet.Data.rows)
        end)

        it("a full TMPDIR: exit 1 saying which directory is full, nothing left behind", function()
            if not usable(pending) then
                return
            end
            local tmp = support.disk("size=1m", true, finally, pending)
            if not tmp then
                return
            end
            local out = dir .. "/full.xlsx"
            local code, _, err = support.wolkvox(srv, "report cdr_1 --from 2026-01-01 --to 2026-01-02 -q -o " .. out,
                { env = "TMPDIR=" .. support.q(tmp), state_dir = dir .. "/state-full" })
            assert.equal(1, code, err)
            assert.matches(tmp, err, 1, true)
            assert.matches("No space left on device", err, 1, true)
            assert.is_nil(support.slurp(out))
            assert.equal("", private_dirs(tmp))
            assert.is_true(#support.calls(srv, "cdr_1") <= 1)
        end)

        it("without wolkvox.xlsx: an error naming libxlsxwriter-dev, and no call spent", function()
            if not have_module then
                return pending("wolkvox.xlsx is not built here")
            end
            -- A C module path with the core and without xlsx.so.
            local cdir = dir .. "/cpath/wolkvox"
            assert.equal(0, (support.sh("mkdir -p " .. support.q(cdir) .. " && ln -s " .. support.q(
                io.popen("pwd"):read("*l") .. "/build/5.4/wolkvox/core.so") .. " " .. support.q(cdir))))
            local code, out = support.sh("env -u LD_PRELOAD lua5.4 -e " .. support.q(
                "package.path = 'lua/?.lua;lua/?/init.lua;' .. package.path; package.cpath = "
                .. string.format("%q", dir .. "/cpath/?.so") .. "; "
                .. "local c = require('wolkvox').new { base_url = " .. string.format("%q", srv.url)
                .. ", token = " .. string.format("%q", srv.token) .. ", state_dir = " .. string.format("%q", dir)
                .. " }; local n, err = c:export('cdr_1', { from = '2026-01-01', to = '2026-01-02' }, "
                .. "{ format = 'xlsx', output = " .. string.format("%q", dir .. "/none.xlsx") .. " }); "
                .. "print(n, err.kind, err.message)"))
            assert.equal(0, code, out)
            assert.matches("^nil\tparams\t", out)
            assert.matches("libxlsxwriter-dev", out, 1, true)
            assert.matches("make", out, 1, true)
            assert.equal(0, #support.calls(srv, "cdr_1"))
            assert.is_nil(io.open(dir .. "/none.xlsx", "rb"))
        end)
    end)
end)
