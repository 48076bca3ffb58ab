#!/usr/bin/env lua5.4
-- Writes the endpoint table of README.md from the registry, between the
-- markers <!-- endpoints:begin --> and <!-- endpoints:end -->.
--
--   lua5.4 tools/gen-readme.lua           rewrite README.md
--   lua5.4 tools/gen-readme.lua --check   exit 1 when README.md is not current
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local registry = require "wolkvox.registry"

local BEGIN, END = "<!-- endpoints:begin -->", "<!-- endpoints:end -->"

local function params_of(e)
    local out = {}
    if e.dates then
        out[#out + 1] = "from, to"
    end
    for _, q in ipairs(e.query) do
        if q.name ~= "date_ini" and q.name ~= "date_end" then
            local s = q.name
            if q.values then
                s = s .. " (" .. table.concat(q.values, "\\|") .. ")"
            end
            out[#out + 1] = q.required and s or ("[" .. s .. "]")
        end
    end
    if e.body then
        if e.body.kind == "json_array" then
            out[#out + 1] = "records"
        elseif e.body.kind == "multipart" then
            out[#out + 1] = "file(s)"
        else
            local fields = {}
            for _, f in ipairs(e.body.fields) do
                fields[#fields + 1] = f.name
            end
            out[#out + 1] = "body: " .. table.concat(fields, ", ")
        end
    end
    return table.concat(out, "; ")
end

local function notes_of(e)
    local out = {}
    if e.free then out[#out + 1] = "quota-free" end
    if e.split then out[#out + 1] = "split by " .. e.split end
    if e.max_hours then out[#out + 1] = "at most " .. e.max_hours .. " h" end
    if e.no_split then out[#out + 1] = "one call per range" end
    if e.chunk then out[#out + 1] = "chunks of " .. e.chunk end
    if e.max_parts then out[#out + 1] = "at most " .. e.max_parts .. " files" end
    if e.max_rows then out[#out + 1] = "split above " .. e.max_rows .. " rows" end
    if e.multi_status then out[#out + 1] = "207 per file" end
    return table.concat(out, ", ")
end

local function table_md()
    local lines = {
        "| call | HTTP | kind | parameters ([optional]) | what | notes |",
        "|---|---|---|---|---|---|",
    }
    for _, family in ipairs(registry.families) do
        for _, e in ipairs(registry.endpoints) do
            if e.family == family then
                local call = registry.bare(e.api) == e and ("`c:" .. e.api .. "`")
                    or ("`c." .. e.family .. ":" .. e.api .. "`")
                lines[#lines + 1] = string.format("| %s | %s | %s | %s | %s | %s |", call, e.method,
                    e.kind, params_of(e), e.title, notes_of(e))
            end
        end
    end
    return table.concat(lines, "\n")
end

local f = assert(io.open("README.md", "rb"))
local text = f:read("a")
f:close()
local a = text:find(BEGIN, 1, true)
local b = text:find(END, 1, true)
assert(a and b, "README.md lacks the endpoint markers")
local new = text:sub(1, a + #BEGIN - 1) .. "\n" .. table_md() .. "\n" .. text:sub(b)
if arg[1] == "--check" then
    if new ~= text then
        io.stderr:write("README.md's endpoint table is not current: run lua5.4 tools/gen-readme.lua\n")
        os.exit(1)
    end
    os.exit(0)
end
f = assert(io.open("README.md", "wb"))
f:write(new)
f:close()
