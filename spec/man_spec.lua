-- The manual page wolkvox(1): man/wolkvox.1 is what tools/gen-man.lua makes
-- from the parser of `wolkvox --help` (so it never drifts from it), groff
-- renders it without a warning, and it has every command, option and exit code.
local support = require "support"

local PAGE = "man/wolkvox.1"

describe("man/wolkvox.1", function()
    local page = support.read(PAGE)

    it("is what tools/gen-man.lua makes from the parser (make man)", function()
        local dir = support.tmpdir()
        finally(function()
            support.sh("rm -rf " .. support.q(dir))
        end)
        local code, out = support.sh("lua5.4 tools/gen-man.lua " .. support.q(dir .. "/wolkvox.1"))
        assert.equal(0, code, out)
        assert.is_true(support.read(dir .. "/wolkvox.1") == page, PAGE .. " is not current: run make man")
        code, out = support.sh("lua5.4 tools/gen-man.lua --check")
        assert.equal(0, code, out)
    end)

    it("renders with groff -man -ww without a warning", function()
        local code, out = support.sh("groff -man -Tutf8 -ww -z " .. PAGE)
        assert.equal(0, code, out)
        assert.equal("", out)
        code, out = support.sh("MANWIDTH=80 man --warnings -l " .. PAGE .. " 2>&1 >/dev/null")
        assert.equal(0, code, out)
        assert.equal("", out)
    end)

    it("has the sections of a Debian man page, every command and option, and the exit codes", function()
        local code, text = support.sh("MANWIDTH=200 man -l " .. PAGE .. " 2>/dev/null | col -b")
        assert.equal(0, code, text)
        for _, s in ipairs { "NAME", "SYNOPSIS", "DESCRIPTION", "GLOBAL OPTIONS", "COMMANDS", "EXIT STATUS",
            "ENVIRONMENT", "FILES", "SEE ALSO" } do
            assert.is_truthy(text:find("\n" .. s .. "\n", 1, true), s)
        end
        local parser = require("wolkvox.cli.args").parser()
        for _, o in ipairs(parser._options) do
            assert.is_truthy(text:find(o._name, 1, true), o._name)
        end
        for _, c in ipairs(parser._commands) do
            assert.is_truthy(text:find("\n   " .. c._name .. "\n", 1, true), c._name)
            assert.is_truthy(text:find(c._description:match("^[^\n]*"), 1, true), c._description)
            for _, o in ipairs(c._options) do
                for _, alias in ipairs(o._public_aliases) do
                    assert.is_truthy(text:find(alias, 1, true), c._name .. " " .. alias)
                end
            end
        end
        local exit = text:match("\nEXIT STATUS(\n.-)\nENVIRONMENT\n")
        for n = 0, 9 do
            assert.is_truthy(exit:find("\n       " .. n .. " ", 1, true), "exit " .. n)
        end
        assert.is_truthy(exit:find("130", 1, true))
        for _, v in ipairs { "WOLKVOX_TOKEN", "WOLKVOX_SERVER", "WOLKVOX_CONFIG", "WOLKVOX_PROFILE" } do
            assert.is_truthy(text:match("\nENVIRONMENT\n.-" .. v), v)
        end
        assert.is_truthy(text:match("\nFILES\n.-~/%.config/wolkvox/config.-~/%.cache/lua%-wolkvox"))
    end)
end)
