#!/usr/bin/env lua5.4
-- `make docs`: the guides (README.md and docs/*.md, LDoc topics) and the
-- LDoc API reference as one HTML site.
--
--   lua5.4 tools/docs-site.lua [DIR]      (default: build/docs, config.ld's dir)
--
-- LDoc writes the site from config.ld; then, in every page of topics/:
-- - each heading gets the id GitHub gives it (tools/docs-toc.lua's slug),
--   so the guides' `#anchor` links work in the site as they do on GitHub;
-- - a link to a guide (`docs/cli.md`, `reports.md#formats`, `../README.md`)
--   goes to its page, `NAME.md.html` beside it (LDoc puts every topic in
--   one folder).
-- Exits with LDoc's status, 1 when a page cannot be rewritten.

local here = (arg[0]:match("^(.*)/[^/]*$") or ".")
package.path = here .. "/?.lua;" .. package.path
local toc = require "docs-toc"

local dir = arg[1] or "build/docs"

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

local function q(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local ok = os.execute("ldoc -q -d " .. q(dir) .. " .")
if not ok then
    os.exit(1)
end

--- A topic page with GitHub's heading ids and guide links to pages.
local function rewrite(html)
    local seen = {}
    html = html:gsub("<h([1-6])>(.-)</h%1>", function(level, inner)
        local slug = toc.slug(inner)
        local n = seen[slug]
        seen[slug] = (n or -1) + 1
        if n then
            slug = slug .. "-" .. (n + 1)
        end
        return "<h" .. level .. ' id="' .. slug .. '">' .. inner .. "</h" .. level .. ">"
    end)
    local function page(path, frag)
        return 'href="' .. path:match("([^/]*)$") .. ".md.html" .. (frag or "") .. '"'
    end
    html = html:gsub('href="([^"#:]*)%.md"', page):gsub('href="([^"#:]*)%.md(#[^"]*)"', page)
    -- Screenshots: docs/img/ is copied to topics/img/ (README names it docs/img/).
    html = html:gsub('(<img[^>]-src=")docs/img/', "%1img/")
    return html
end

if not os.execute("cp -r docs/img " .. q(dir .. "/topics/")) then
    os.exit(1)
end

local p = assert(io.popen("ls " .. q(dir .. "/topics")))
for name in p:lines() do
    if name:match("%.html$") then
        local path = dir .. "/topics/" .. name
        local html = rewrite(read(path))
        local f = assert(io.open(path, "wb"))
        assert(f:write(html))
        assert(f:close())
    end
end
p:close()
