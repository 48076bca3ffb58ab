-- `make docs`: the guides and the API reference as one HTML site whose
-- local links all resolve; the contents lists and docs/api.md current.
local support = require "support"

-- `cmd` run by sh: its output (stdout and stderr together) and exit status.
local function run(cmd)
    local code, out = support.sh(cmd)
    return out, code
end

-- The local targets of a page: every href, and every img's src.
local function links(html)
    local out = {}
    for href in html:gmatch('href%s*=%s*"([^"]*)"') do
        out[#out + 1] = href
    end
    for src in html:gmatch('<img[^>]-src%s*=%s*"([^"]*)"') do
        out[#out + 1] = src
    end
    return out
end

describe("the docs site", function()
    local dir

    setup(function()
        dir = support.tmpdir()
    end)
    teardown(function()
        support.sh("rm -rf " .. dir)
    end)

    it("builds, every guide a page, and every local link and anchor resolves", function()
        local out, status = run("lua5.4 tools/docs-site.lua " .. dir)
        assert.equal(0, status, out)

        local pages, ids = {}, {}
        -- (no preload: under the ASan flavour a sed would abort, and the
        -- check would see no page at all)
        local p = io.popen("cd " .. dir .. " && env -u LD_PRELOAD find . -name '*.html' | env -u LD_PRELOAD "
            .. "sed 's|^\\./||' | env -u LD_PRELOAD sort")
        for path in p:lines() do
            local html = support.read(dir .. "/" .. path)
            pages[path] = html
            local set = {}
            for id in html:gmatch('%sid="([^"]*)"') do
                set[id] = true
            end
            for id in html:gmatch('<a%s+name%s*=%s*"([^"]*)"') do
                set[id] = true
            end
            ids[path] = set
        end
        p:close()

        for _, guide in ipairs({ "README", "cli", "library", "api", "reports", "excel", "html", "databases",
            "plans", "metrics", "endpoints", "fake", "openresty", "fleet", "security", "speed", "development" }) do
            local page = pages["topics/" .. guide .. ".md.html"]
            assert.is_truthy(page, guide .. " has no page")
            assert.matches('<h1 id="', page, 1, true)
        end

        local bad, seen = {}, 0
        for path, html in pairs(pages) do
            local base = path:match("^(.*/)") or ""
            -- (an image's src too: the screenshots are copied with the pages)
            for _, href in ipairs(links(html)) do
                if not href:match("^%a[%w+.-]*:") then   -- http:, https:, mailto: are not local
                    seen = seen + 1
                    local file, frag = href:match("^([^#]*)#?(.*)$")
                    local target = file == "" and path or base .. file
                    -- fold "a/../b" away
                    local n
                    repeat
                        target, n = target:gsub("[^/]+/%.%./", "", 1)
                    until n == 0
                    if not pages[target] and not io.open(dir .. "/" .. target) then
                        bad[#bad + 1] = path .. ": " .. href .. " (no file)"
                    elseif frag ~= "" and pages[target] and not ids[target][frag] then
                        bad[#bad + 1] = path .. ": " .. href .. " (no anchor)"
                    end
                end
            end
        end
        table.sort(bad)
        assert.same({}, bad)
        assert.is_true(seen > 500, "local links seen: " .. seen)
    end)

    it("has the contents list of each guide current (lua5.4 tools/docs-toc.lua)", function()
        local out, status = run("lua5.4 tools/docs-toc.lua --check")
        assert.equal(0, status, out)
    end)

    it("has docs/api.md current (lua5.4 tools/gen-api-summary.lua)", function()
        local out, status = run("lua5.4 tools/gen-api-summary.lua --check")
        assert.equal(0, status, out)
    end)
end)
