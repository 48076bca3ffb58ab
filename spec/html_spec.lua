-- The html format (issue #25): one self-contained page with charts and the
-- first rows, every value of the API escaped.  The pure parts (escaping, the
-- charts' JSON, what the rows add up to) run under every flavour; the
-- exports run the fake server and bin/wolkvox (#children); the pages are
-- then opened in headless Chromium with the network off (#browser), by
-- spec/html_check.py (python3-selenium, chromium-driver).
local core = require "wolkvox.core"
local formats = require "wolkvox.out.formats"
local html = require "wolkvox.out.html"
local support = require "support"

-- The page `rows` make through a writer of `opts`; each row may carry
-- `_window` (the label of the window it came from, as an export sets).
local function page(rows, opts)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    local w = assert(formats.writer("html", f, opts))
    for _, r in ipairs(rows) do
        local label = r._window
        r._window = nil
        w.window = label and { label = label } or nil
        assert(w:write(r))
    end
    assert(w:close())
    f:close()
    local text = support.read(path)
    os.remove(path)
    return text, w
end

-- The charts' data of a page, decoded.
local function charts_of(text)
    local data = text:match('<script type="application/json" id="wolkvox%-data">(.-)</script>')
    assert(data, "no data element")
    return core.decode(data).charts
end

-- The figure titles of a page, in order.
local function titles(text)
    local out = {}
    for t in text:gmatch('<figcaption><strong>(.-)</strong>') do
        out[#out + 1] = t
    end
    return out
end

-- The data of the chart titled `title` on page `text`.
local function series(text, title)
    local list = titles(text)
    for i, t in ipairs(list) do
        if t == title then
            return charts_of(text)[i]
        end
    end
    error("no chart titled " .. title .. " (" .. table.concat(list, ", ") .. ")")
end

describe("the html format", function()
    it("escapes & < > \" ' in HTML text and attributes (a NUL as U+FFFD)", function()
        assert.equal("&lt;script&gt;alert(1)&lt;/script&gt;", html.escape("<script>alert(1)</script>"))
        assert.equal("&quot;&gt;&lt;img src=x onerror=&#39;a()&#39;&gt; &amp;amp;",
            html.escape("\"><img src=x onerror='a()'> &amp;"))
        assert.equal("a\239\191\189b", html.escape("a\0b"))
        assert.equal("12", html.escape(12))
    end)

    it("writes JSON that no value can break out of a <script> element", function()
        local text = html.json { s = "</script><!-- \226\128\168\226\128\169 & \"q\" \\ \1",
            l = html.list({ 1, nil, 2.5 }, 3), e = html.list({}), n = 0 / 0 }
        assert.equal('{"e":[],"l":[1,null,2.5],"n":null,"s":"\\u003c/script\\u003e\\u003c!-- \\u2028\\u2029 '
            .. '\\u0026 \\"q\\" \\\\ \\u0001"}', text)
        assert.falsy(text:find("[<>&]"))
        assert.falsy(text:find("\226\128\168", 1, true))
        local back = core.decode(text)
        assert.equal("</script><!-- \226\128\168\226\128\169 & \"q\" \\ \1", back.s)
        assert.equal(2.5, back.l[3])
    end)

    it("hashes a script for its Content-Security-Policy as sha256 in base64", function()
        assert.equal("", html.base64(""))
        assert.equal("Zg==", html.base64("f"))
        assert.equal("Zm8=", html.base64("fo"))
        assert.equal("Zm9vYmFy", html.base64("foobar"))
        assert.equal("'sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0='", html.csp_hash("abc"))
    end)

    it("is ready when Chart.js is there, and names libjs-chart.js when it is not", function()
        assert.is_true(formats.ready("html"))
        local was, bad = html.chartjs_path, os.tmpname()
        -- (busted keeps one finally a test: the last one given)
        finally(function()
            html.chartjs_path = was
            os.remove(bad)
        end)
        html.chartjs_path = "/nonexistent/chart.min.js"
        local ok, why = formats.ready("html")
        assert.is_nil(ok)
        assert.matches("libjs%-chart%.js", why)
        assert.matches("/nonexistent/chart.min.js", why, 1, true)
        -- A file that would end its <script> element is refused.
        support.spit(bad, "var Chart = 1; // </script>" .. ("x"):rep(20000))
        html.chartjs_path = bad
        ok, why = html.ready()
        assert.is_nil(ok)
        assert.matches("cannot be inlined", why)
    end)

    it("has a CSP that allows its own scripts and style only, by hash, and no URL", function()
        local text = page({ { date = "2026-01-05 10:00:00", time_seg = "70", conn_id = "1" } },
            { endpoint = "cdr_1", about = { from = "2026-01-05 00:00:00", to = "2026-01-05 23:59:59" } })
        local csp = text:match('<meta http%-equiv="Content%-Security%-Policy" content="([^"]*)">')
        assert.truthy(csp)
        assert.matches("^default%-src 'none'; script%-src 'sha256%-[%w+/=]+' 'sha256%-[%w+/=]+'; style%-src "
            .. "'sha256%-[%w+/=]+'; img%-src data:; base%-uri 'none'; form%-action 'none'$", csp)
        -- Each script and the style sheet is what its hash says.
        local hashes = {}
        for h in csp:gmatch("'(sha256%-[%w+/=]+)'") do
            hashes["'" .. h .. "'"] = true
        end
        local n = 0
        for body in text:gmatch("<script>(.-)</script>") do
            n = n + 1
            assert.is_true(hashes[html.csp_hash(body)], "script " .. n .. " is not in the CSP")
        end
        assert.equal(2, n)
        assert.is_true(hashes[html.csp_hash(text:match("<style>(.-)</style>"))])
        -- No attribute loads anything; the only URLs are Chart.js's licence comment.
        assert.falsy(text:find("%s[Ss][Rr][Cc]%s*="))
        assert.falsy(text:find("%s[Hh][Rr][Ee][Ff]%s*="))
        local outside = text:gsub("/%*!.-%*/", "")
        assert.falsy(outside:find("https?://"), "a URL outside a comment")
    end)

    it("counts the rows of a detail report per day, per hour and by duration bucket", function()
        local rows = {
            { date = "2026-01-05 09:10:00", time_seg = "5", conn_id = "1" },
            { date = "2026-01-05 09:50:00", time_seg = "00:01:05", conn_id = "2" },
            { date = "2026-01-07 23:00:00", time_seg = "3600", conn_id = "3" },
            { date = "yesterday", time_seg = "-", conn_id = "4" },
            { date = "2026-01-07 23:30:00", time_seg = "soon", conn_id = "5" },
        }
        local text = page(rows, { endpoint = "cdr_1", utc_offset = -5 * 3600,
            about = { from = "2026-01-05 00:00:00", to = "2026-01-08 23:59:59" } })
        assert.same({ "Rows per day", "Rows per hour of day", "Rows by time_seg" }, titles(text))
        local day = series(text, "Rows per day")
        assert.same({ "2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08" }, day.labels)
        assert.same({ 2, 0, 2, 0 }, day.datasets[1].data)
        local hour = series(text, "Rows per hour of day").datasets[1].data
        assert.equal(24, #hour)
        assert.equal(2, hour[10])
        assert.equal(2, hour[24])
        local dur = series(text, "Rows by time_seg")
        assert.same({ "under 10 s", "1 h or more" }, { dur.labels[1], dur.labels[10] })
        -- 5 s; 65 s (1 to 2 min); 3600 s (1 h or more)
        assert.same({ 1, 0, 0, 1, 0, 0, 0, 0, 0, 1 }, dur.datasets[1].data)
        -- What was left out is said.
        assert.matches("1 row without a readable date is left out", text, 1, true)
        assert.matches("2 rows without a duration there are left out", text, 1, true)
        -- The header: what, the range, the clock, the numbers.
        assert.matches("<h1>Call detail <small>reports_manager/cdr_1</small></h1>", text, 1, true)
        assert.matches("<dt>Range</dt><dd>2026-01-05 00:00:00 to 2026-01-08 23:59:59</dd>", text, 1, true)
        assert.matches("<dt>Clock</dt><dd>UTC\226\136\14605:00</dd>", text, 1, true)
        assert.matches("<dt>Rows</dt><dd>5</dd>", text, 1, true)
    end)

    it("charts each numeric field over the periods: sums of counts, lowest and highest of averages", function()
        local rows = {
            { _window = "2026-01", agent_id = "7", calls = "10", ready_time = "01:00:00", occupancy = "50.00 %",
                aht = "00:02:00" },
            { _window = "2026-01", agent_id = "8", calls = "5", ready_time = "00:30:00", occupancy = "70.00 %",
                aht = "00:04:00" },
            { _window = "2026-03", agent_id = "7", calls = "n/a", ready_time = "00:10:00", occupancy = "60 %",
                aht = "00:03:00" },
        }
        local text = page(rows, { endpoint = "agent_1", columns = { "agent_id", "calls", "ready_time", "occupancy",
            "aht" }, about = { from = "2026-01-01 00:00:00", to = "2026-03-31 23:59:59", per = "month" } })
        assert.same({ "Rows per period", "calls", "ready_time", "occupancy", "aht" }, titles(text))
        local counts = series(text, "Rows per period")
        assert.same({ "2026-01", "2026-02", "2026-03" }, counts.labels)
        assert.same({ 2, 0, 1 }, counts.datasets[1].data)
        -- A month without rows is a gap, not a zero.
        local calls = series(text, "calls")
        assert.equal("calls: sum of the period's rows", calls.datasets[1].label)
        assert.equal(15, calls.datasets[1].data[1])
        assert.equal(core.null, calls.datasets[1].data[2])
        assert.matches("1 value was not a number and left out", text, 1, true)
        -- Durations in a unit their size reads well in (90 min = 1.5 h).
        local ready = series(text, "ready_time")
        assert.equal("minutes", ready.unit)
        assert.equal(90, ready.datasets[1].data[1])
        assert.equal(10, ready.datasets[1].data[3])
        for _, name in ipairs { "occupancy", "aht" } do
            local s = series(text, name)
            assert.same({ name .. ": lowest row", name .. ": highest row" },
                { s.datasets[1].label, s.datasets[2].label })
        end
        local occ = series(text, "occupancy")
        assert.equal("%", occ.unit)
        assert.same({ 50, 70 }, { occ.datasets[1].data[1], occ.datasets[2].data[1] })
        local aht = series(text, "aht")
        assert.equal("minutes", aht.unit)
        assert.same({ 2, 4 }, { aht.datasets[1].data[1], aht.datasets[2].data[1] })
        -- The library's rows carry no period: the table takes the window's.
        assert.matches("<th>period</th><th>agent_id</th>", text, 1, true)
        assert.matches("<tr><td>2026-03</td><td>7</td>", text, 1, true)
    end)

    it("keeps the first TABLE_ROWS rows and counts the rest", function()
        local was = html.TABLE_ROWS
        finally(function() html.TABLE_ROWS = was end)
        html.TABLE_ROWS = 5
        local rows = {}
        for i = 1, 1234 do
            rows[i] = { date = string.format("2026-01-05 %02d:00:00", i % 24), conn_id = tostring(i),
                comment = ("c"):rep(600) }
        end
        local text, w = page(rows, { endpoint = "cdr_1" })
        local _, shown = text:match('<table class="rows">(.-)</table>'):gsub("<tr><td", "")
        assert.equal(5, shown)
        assert.matches("The first 5 of 1,234 rows; the other 1,229 are not on this page", text, 1, true)
        assert.matches("<dt>Rows</dt><dd>1,234</dd>", text, 1, true)
        assert.is_nil(w.html.shown)
        -- A long value is cut (on a character) and says so.
        assert.matches(("c"):rep(500) .. "\226\128\166</td>", text, 1, true)
        assert.falsy(text:find(("c"):rep(501), 1, true))
    end)

    it("says so when there is no row, and draws nothing", function()
        local text = page({}, { endpoint = "cdr_1", columns = formats.columns("cdr_1"),
            about = { from = "2026-01-05 00:00:00", to = "2026-01-05 23:59:59", totals = function()
                return { calls = 1, windows = 1 }
            end } })
        assert.matches("The API gave no rows for this range.", text, 1, true)
        assert.same({}, titles(text))
        assert.matches("<dt>Calls</dt><dd>1</dd>", text, 1, true)
    end)

    it("draws no chart for rows with no time nor duration, and says why", function()
        local text = page({ { agent_name = "Ana", calls = "12", cost = "3.5" } }, { endpoint = "cdr_2" })
        assert.same({}, titles(text))
        assert.matches("No chart: the rows have no readable time field nor duration", text, 1, true)
        assert.matches("<tr><td>12</td><td>Ana</td><td>3.5</td></tr>", text:gsub('<td class="n">', "<td>"), 1, true)
    end)

    it("shows a hostile row as text: every value and key escaped", function()
        local evil = '<script>window.__pwned=1</script></table></script>"\'><img src=x onerror=alert(1)>'
        local text = page({ { date = evil, agent_name = evil, [evil] = evil, conn_id = "1" } },
            { endpoint = "cdr_1" })
        assert.falsy(text:find("<script>window", 1, true))
        assert.falsy(text:find("<img", 1, true))
        local _, n = text:gsub("&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;/table&gt;&lt;/script&gt;&quot;"
            .. "&#39;&gt;&lt;img src=x onerror=alert%(1%)&gt;", "")
        assert.equal(4, n)   -- date, agent_name, the key's header, its value
        local _, tables = text:gsub("</table>", "")
        local _, opened = text:gsub("<table", "")
        assert.equal(opened, tables)
    end)
end)

-- ---- through the fake server and bin/wolkvox, then in a browser ----------------

-- What a hostile server could put in a row: each sets window.__pwned if it runs.
local EVIL = {
    script = '<script>window.__pwned="script"</script>',
    close = '</table></script><script>window.__pwned="close"</script>',
    img = '"><img src=x onerror="window.__pwned=\'img\'">',
    quotes = "' onmouseover='window.__pwned=1' x=\"",
    entity = "&lt;b&gt; stays &amp;lt;",
    separators = "a\226\128\168b\226\128\169c </script><!--",
}
-- A key that is a duration by its name ("_time"): a column, a chart, a JSON label.
local EVIL_KEY = '</script><img src=x onerror="window.__pwned=\'key\'">_time'

-- The fake's answer for cdr_1 on 2026-02-02 and agent_1's week of 2026-02-02.
local FIXTURES = {
    { match = "cdr_1", params = { date_ini = "20260202000000" }, name = "hostile cdr_1", body = { code = 200,
        msg = "ok", data = {
            { date = "2026-02-02 09:15:00", agent_name = EVIL.script, comment = EVIL.close, time_seg = "75",
                skill_name = EVIL.img, description_cod_act = EVIL.quotes, telephone = EVIL.entity,
                destiny = EVIL.separators, conn_id = "9001" },
            { date = EVIL.script, agent_name = "Ana", time_seg = EVIL.close, conn_id = "9002" },
            { date = "2026-02-02 17:40:00", agent_name = "Luis", time_seg = "00:12:30", conn_id = "9003" },
        } } },
    { match = "agent_1", params = { date_ini = "20260202000000" }, name = "hostile agent_1", body = { code = 200,
        msg = "ok", data = {
            { agent_id = "7", agent_name = EVIL.script, calls = "12", ready_time = "01:00:00", occupancy = "55 %",
                [EVIL_KEY] = "00:10:00" },
        } } },
}

describe("html reports #children", function()
    local srv, c, dir, shots
    setup(function()
        srv = support.fake { rows_per_day = 24, fixtures = FIXTURES }
        c = support.client(srv)
        dir = support.tmpdir()
        shots = os.getenv("WOLKVOX_ARTIFACTS") or (dir .. "/shots")
    end)
    teardown(function()
        c:close()
        srv:stop()
        -- (the screenshots stay: they are the test's artifact)
        support.sh("rm -rf " .. support.q(dir) .. "/*.html " .. support.q(dir) .. "/state")
    end)

    -- The reports, made once (the browser's tests open them all): name -> path.
    local made, metas = {}, {}
    local function report(name)
        if made[name] then
            return made[name], metas[name]
        end
        local path = dir .. "/" .. name .. ".html"
        local n, meta
        if name == "detail" then
            n, meta = c:export("cdr_1", { from = "2026-01-05", to = "2026-01-07" }, { format = "html", output = path })
        elseif name == "period" then
            n, meta = c:export("agent_1", { from = "2026-01-01", to = "2026-03-31", per = "week" },
                { format = "html", output = path })
        elseif name == "hostile_detail" then
            n, meta = c:export("cdr_1", { from = "2026-02-02", to = "2026-02-02" }, { format = "html",
                output = path })
        elseif name == "hostile_period" then
            n, meta = c:export("agent_1", { from = "2026-02-02", to = "2026-02-15", per = "week" },
                { format = "html", output = path })
        elseif name == "cli_period" then
            local code, out, err = support.wolkvox(srv, "report agent_1 --from 2026-01-01 --to 2026-06-30 --per month"
                .. " -o " .. support.q(path), { state_dir = dir .. "/state" })
            assert(code == 0, tostring(out) .. tostring(err))
            meta = { err = err }
        elseif name == "nocsp" then
            -- The hostile page without its CSP: the escaping alone must hold.
            local text = support.read(report("hostile_detail"))
            local stripped, k = text:gsub('<meta http%-equiv="Content%-Security%-Policy" content="[^"]*">\n', "")
            assert.equal(1, k)
            support.spit(path, stripped)
            n = k
        end
        assert(n or meta, tostring(meta))
        made[name], metas[name] = path, meta or n
        return path, meta
    end

    it("c:export writes one page with the run's numbers in its header", function()
        local text = support.read(report("detail"))
        local meta = metas.detail
        assert.matches("^<!DOCTYPE html>", text)
        assert.matches("<dt>Rows</dt><dd>72</dd>", text, 1, true)
        assert.matches("<dt>Calls</dt><dd>" .. meta.calls .. "</dd>", text, 1, true)
        assert.matches("<dt>Range</dt><dd>2026-01-05 00:00:00 to 2026-01-07 23:59:59</dd>", text, 1, true)
        assert.matches("<dt>Version</dt><dd>lua%-wolkvox " .. require("wolkvox.version") .. "</dd>", text)
        assert.same({ "Rows per day", "Rows per hour of day", "Rows by time_seg" }, titles(text))
        assert.same({ 24, 24, 24 }, series(text, "Rows per day").datasets[1].data)
        -- In the registry's order, as the CLI's CSV.
        assert.matches("<th>agent_name</th><th>date</th><th>destiny</th>", text, 1, true)
        local per = support.read(report("period"))
        assert.matches("<dt>Per</dt><dd>week</dd>", per, 1, true)
        assert.same({ "Rows per period", "calls", "inbound", "outbound", "internal" },
            { table.unpack(titles(per), 1, 5) })
        assert.equal(14, #series(per, "calls").labels)
    end)

    it("bin/wolkvox report -o FILE.html writes the page, a period column first under --per", function()
        local text = support.read(report("cli_period"))
        assert.matches("<th>period</th><th>agent_id</th>", text, 1, true)
        local _, periods = text:gsub("<th>period</th>", "")
        assert.equal(1, periods)
        assert.same({ "2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06" },
            series(text, "Rows per period").labels)
    end)

    it("without Chart.js, the CLI says to install libjs-chart.js before any call", function()
        srv:control("reset")
        local out = dir .. "/none.html"
        local code, _, err = support.wolkvox(srv, "report cdr_1 --from 2026-01-05 --to 2026-01-05 -o " .. out,
            { state_dir = dir .. "/state", env = "WOLKVOX_CHARTJS=/nonexistent/chart.min.js" })
        assert.not_equal(0, code)
        assert.matches("libjs%-chart%.js", err)
        assert.same({}, support.calls(srv, "cdr_1"))
        assert.is_nil(support.slurp(out))
    end)

    it("escapes the hostile rows in the page's text", function()
        for _, name in ipairs { "hostile_detail", "hostile_period" } do
            local text = support.read(report(name))
            assert.falsy(text:find("window.__pwned=\"", 1, true), name)
            assert.falsy(text:find("<img", 1, true), name)
            local _, scripts = text:gsub("<script", "")
            assert.equal(3, scripts, name)
        end
        local per = support.read(report("hostile_period"))
        assert.is_truthy(per:find(html.escape(EVIL_KEY), 1, true))
        local data = per:match('<script type="application/json" id="wolkvox%-data">(.-)</script>')
        assert.is_truthy(data:find("\\u003c/script\\u003e\\u003cimg", 1, true))
    end)

    describe("opened in headless Chromium with the network off #browser", function()
        local results = {}
        local NAMES = { "detail", "period", "hostile_detail", "hostile_period", "cli_period", "nocsp" }
        setup(function()
            local paths = {}
            for i, name in ipairs(NAMES) do
                paths[i] = support.q(report(name))
            end
            paths[#paths + 1] = support.q("nojs:" .. report("detail"))
            local p = assert(io.popen("env -u LD_PRELOAD /usr/bin/python3 spec/html_check.py --shots "
                .. support.q(shots) .. " --height 1200 " .. table.concat(paths, " ") .. " 2>&1"))
            local out = p:read("*a")
            p:close()
            for line in out:gmatch("[^\n]+") do
                local ok, r = pcall(core.decode, line)
                if ok and type(r) == "table" and r.file then
                    results[r.file:match("([^/]+)%.html$") .. (r.nojs and "_nojs" or "")] = r
                end
            end
            assert(results.detail, "spec/html_check.py gave nothing (chromium, chromium-driver and "
                .. "python3-selenium installed? tools/install-deps): " .. out)
        end)

        it("loads each page with no console error and no request but the file", function()
            for _, name in ipairs(NAMES) do
                local r = results[name]
                assert.is_table(r, name)
                assert.is_nil(r.error, name)
                assert.same({}, r.severe, name)
                assert.same({}, r.foreign_requests, name)
                assert.equal(1, #r.requests, name)
            end
        end)

        it("draws every chart, each canvas with pixels", function()
            local want = { detail = 3, period = 18, hostile_detail = 3, hostile_period = 19, cli_period = 18,
                nocsp = 3 }
            for name, n in pairs(want) do
                local r = results[name]
                assert.equal(tostring(n), r.drawn, name)
                assert.equal(n, #r.canvases, name)
                for i, cv in ipairs(r.canvases) do
                    assert.is_true(cv.width > 0 and cv.inked > 500, name .. " canvas " .. i .. " is blank")
                end
            end
        end)

        it("shows the hostile rows as text and runs none of them, with or without the CSP", function()
            for _, name in ipairs { "hostile_detail", "nocsp" } do
                local r = results[name]
                assert.is_false(r.pwned, name)
                assert.equal(0, r.injected_img, name)
                assert.equal(3, r.scripts, name)
                assert.equal(1, r.tables, name)
                local cells = {}
                for _, t in ipairs(r.cells) do
                    cells[t] = true
                end
                for what, v in pairs(EVIL) do
                    if what ~= "separators" then
                        assert.is_true(cells[v], name .. ": the " .. what .. " cell is not shown as sent")
                    end
                end
                assert.is_true(cells[EVIL.separators], name .. ": the separators cell")
                assert.equal(3, r.body_rows, name)
            end
            local r = results.hostile_period
            assert.is_false(r.pwned)
            assert.equal(0, r.injected_img)
            local heads, caps = {}, {}
            for _, h in ipairs(r.headers) do
                heads[h] = true
            end
            for _, h in ipairs(r.figcaptions) do
                caps[h] = true
            end
            assert.is_true(heads[EVIL_KEY], "the hostile key as a column")
            assert.is_true(caps[EVIL_KEY], "the hostile key as a chart's title")
        end)

        it("reads without JavaScript: the header, the numbers of each chart and the rows", function()
            local r = results.detail_nojs
            assert.is_table(r)
            assert.is_nil(r.error)
            assert.is_nil(r.drawn)
            assert.equal(3, r.figures)
            assert.equal(3, r.open_details)
            assert.equal(3, r.hidden_plots)
            assert.equal("72", r.facts.Rows)
            assert.equal("2026-01-05 00:00:00 to 2026-01-07 23:59:59", r.facts.Range)
            assert.equal(72, r.body_rows)
            assert.same({}, r.severe)
            -- With its scripts, the numbers fold away and the charts show.
            assert.same({ 0, 0 }, { results.detail.open_details, results.detail.hidden_plots })
        end)

        it("keeps a screenshot of each page", function()
            for _, name in ipairs { "detail", "period", "hostile_detail", "hostile_period", "cli_period", "nocsp",
                "detail_nojs" } do
                local r = results[name]
                local size = r.screenshot and support.slurp(r.screenshot)
                assert.is_true(size ~= nil and #size > 10000, name)
                assert.equal("\137PNG", size:sub(1, 4))
                print("# screenshot: " .. r.screenshot .. " (" .. r.screenshot_bytes .. " bytes)")
            end
        end)
    end)
end)
