#!/usr/bin/env lua5.4
-- The contents list at the top of each guide, made from its headings.
--
--   lua5.4 tools/docs-toc.lua [--check] [FILE...]
--
-- A page asks for one with a line `<!-- contents -->`; the list of its `##`
-- and `###` headings goes between that line and `<!-- /contents -->`, each a
-- link to the heading's anchor as GitHub makes it (and as tools/docs-site.lua
-- gives the HTML site). Without FILEs: README.md and docs/*.md. --check
-- changes nothing and exits 1 when a list is not what the headings make.

local M = {}

--- GitHub's anchor for a heading's text (markdown or HTML): lower case,
-- tags and punctuation dropped, each space a hyphen.
function M.slug(text)
    local s = text:gsub("<[^>]*>", "")
    s = s:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&#39;", "'"):gsub("&amp;", "&")
    -- (the quotes discount makes curly in a page: punctuation, dropped below as GitHub drops them)
    s = s:gsub("&[lr]squo;", "'"):gsub("&[lr]dquo;", '"'):gsub("&#82%d%d;", "'")
    s = s:lower():gsub("[^%w%-_ \128-\255]", "")
    return (s:gsub(" ", "-"))
end

--- The headings of a markdown text outside fenced blocks: { level, text, slug }.
function M.headings(text)
    local out, seen, fence = {}, {}, false
    for line in (text .. "\n"):gmatch("(.-)\n") do
        if line:match("^%s*```") then
            fence = not fence
        elseif not fence then
            local hashes, title = line:match("^(#+)%s+(.-)%s*$")
            if hashes then
                local slug = M.slug(title)
                local n = seen[slug]
                seen[slug] = (n or -1) + 1
                if n then
                    slug = slug .. "-" .. (n + 1)
                end
                out[#out + 1] = { level = #hashes, text = title, slug = slug }
            end
        end
    end
    return out
end

--- The contents list of a markdown text.
function M.contents(text)
    local lines = {}
    for _, h in ipairs(M.headings(text)) do
        if h.level == 2 or h.level == 3 then
            lines[#lines + 1] = string.rep("  ", h.level - 2) .. "- [" .. h.text .. "](#" .. h.slug .. ")"
        end
    end
    return table.concat(lines, "\n")
end

--- The text with its contents list made anew (the text as it was when it asks for none).
function M.update(text)
    local head, rest = text:match("^(.-<!%-%- contents %-%->\n)(.*)$")
    if not head then
        return text
    end
    local tail = rest:match("^.-<!%-%- /contents %-%->\n(.*)$") or ("\n" .. rest:gsub("^\n+", ""))
    return head .. M.contents(text) .. "\n<!-- /contents -->\n" .. tail
end

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

local function main(args)
    local check, files = false, {}
    for _, a in ipairs(args) do
        if a == "--check" then
            check = true
        else
            files[#files + 1] = a
        end
    end
    if #files == 0 then
        files[1] = "README.md"
        local p = io.popen("ls docs/*.md")
        for path in p:lines() do
            files[#files + 1] = path
        end
        p:close()
    end
    local stale = 0
    for _, path in ipairs(files) do
        local text = read(path)
        local new = M.update(text)
        if new ~= text then
            if check then
                io.stderr:write(path, ": the contents list is not current (run lua5.4 tools/docs-toc.lua)\n")
                stale = stale + 1
            else
                local f = assert(io.open(path, "wb"))
                assert(f:write(new))
                assert(f:close())
            end
        end
    end
    return stale == 0 and 0 or 1
end

if arg and arg[0] and arg[0]:match("docs%-toc%.lua$") then
    os.exit(main(arg))
end
return M
