#!/usr/bin/env lua5.4
-- docs/api.md, "API at a glance": one line per public function, with its
-- signature and the first sentence of its LDoc comment.
--
--   lua5.4 tools/gen-api-summary.lua [--check]
--
-- Read from the public modules' sources (MODULES below): each documented
-- `function M.name(args)`, `function Client:name(args)` or
-- `Client.name = errors.protect(function(self, args)`. --check writes
-- nothing and exits 1 when docs/api.md is not what this makes.

local MODULES = {
    { "wolkvox", "lua/wolkvox/client.lua", only = { new = true }, prefix = "wolkvox." },
    { "client", "lua/wolkvox/client.lua", methods = "Client", prefix = "c:" },
    { "wolkvox.export", "lua/wolkvox/out/formats.lua", prefix = "export." },
    { "wolkvox.coerce", "lua/wolkvox/coerce.lua", prefix = "coerce." },
    { "wolkvox.dates", "lua/wolkvox/dates.lua", prefix = "dates." },
    { "wolkvox.fake", "lua/wolkvox/fake/init.lua", prefix = "fake.", skip = { child = true, main = true } },
    { "wolkvox.out.metrics", "lua/wolkvox/out/metrics.lua", prefix = "metrics." },
}

local OUT = "docs/api.md"

local generated = dofile("tools/generated.lua")
local read = generated.read

--- The first sentence of a comment, on one line, pipes escaped.
local function summary(lines)
    local text = table.concat(lines, " "):gsub("%s+", " "):gsub("^%s+", "")
    local first = text:match("^(.-[%.:;])%s") or text:match("^(.-[%.:;])$") or text
    first = first:gsub("[:;]$", ".")
    return (first:gsub("|", "\\|"))
end

--- { name, args, doc } of the documented public functions of one source.
local function functions(src, mod)
    local out, comment = {}, nil
    for line in (src .. "\n"):gmatch("(.-)\n") do
        local doc = line:match("^%-%-%-%s?(.*)$")
        if doc then
            comment = { doc }
        elseif comment and line:match("^%-%-") then
            local more = line:match("^%-%-%s?(.*)$")
            if not more:match("^%s*@") and #comment < 8 and not comment.done then
                comment[#comment + 1] = more
            else
                comment.done = true
            end
        else
            local name, args
            if mod.methods then
                name, args = line:match("^function " .. mod.methods .. ":([%w_]+)%((.-)%)")
                if not name then
                    name, args = line:match("^" .. mod.methods .. "%.([%w_]+) = [%w_.]*%(?function%(self,?%s*(.-)%)")
                end
            else
                name, args = line:match("^function M%.([%w_]+)%((.-)%)")
            end
            if name and comment and not (mod.only and not mod.only[name]) and not (mod.skip and mod.skip[name])
                and not name:match("^_") then
                comment.done = nil
                out[#out + 1] = { name = name, args = args, doc = summary(comment) }
            end
            comment = nil
        end
    end
    return out
end

local function make()
    local lines = {
        "# API at a glance",
        "",
        "One line per public function: its signature and what it does, from the",
        "LDoc comments of the sources (`lua5.4 tools/gen-api-summary.lua` writes this",
        "page; `spec/docs_site_spec.lua` checks it is current). Options, results and",
        "errors: [library.md](library.md) and [reports.md](reports.md); every",
        "endpoint method (`c:cdr_1 {...}`, `c:services()`...): [endpoints.md](endpoints.md);",
        "the whole reference: `make docs`, `build/docs/index.html`.",
    }
    for _, mod in ipairs(MODULES) do
        local src = assert(read(mod[2]), mod[2])
        local list = functions(src, mod)
        lines[#lines + 1] = ""
        lines[#lines + 1] = "## " .. mod[1]
        lines[#lines + 1] = ""
        lines[#lines + 1] = "| function | |"
        lines[#lines + 1] = "|---|---|"
        for _, f in ipairs(list) do
            lines[#lines + 1] = "| `" .. mod.prefix .. f.name .. "(" .. f.args .. ")` | " .. f.doc .. " |"
        end
    end
    return table.concat(lines, "\n") .. "\n"
end

local text = make()
generated.finish(OUT, text, "lua5.4 tools/gen-api-summary.lua", arg[1] == "--check")
