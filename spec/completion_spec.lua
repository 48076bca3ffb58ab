-- Bash completion (completion/wolkvox.bash): what tools/gen-completion.lua
-- makes from the parser and the registry (never drifts); sourced in bash
-- (no bash-completion package needed), _wolkvox completes commands, options,
-- their choices, endpoint names and the config file's profile names.
local support = require "support"

local FILE = "completion/wolkvox.bash"

-- COMPREPLY for the command line `line` (the word being completed is the
-- last one: "" after a trailing space), in bash with `env` set; sorted.
local function complete(line, env)
    local words = {}
    for w in line:gmatch("%S+") do
        words[#words + 1] = w
    end
    if line:match("%s$") then
        words[#words + 1] = ""
    end
    local quoted = {}
    for i, w in ipairs(words) do
        quoted[i] = support.q(w)
    end
    local script = string.format(". %s; COMP_WORDS=(%s); COMP_CWORD=%d; _wolkvox; "
        .. "printf '%%s\\n' \"${COMPREPLY[@]}\"", FILE, table.concat(quoted, " "), #words - 1)
    local code, out = support.sh((env or "") .. " bash --norc --noprofile -c " .. support.q(script))
    assert.equal(0, code, out)
    local list = {}
    for w in out:gmatch("[^\n]+") do
        list[#list + 1] = w
    end
    table.sort(list)
    return list
end

local function has(list, word)
    for _, w in ipairs(list) do
        if w == word then
            return true
        end
    end
    return false
end

describe("completion/wolkvox.bash", function()
    it("is what tools/gen-completion.lua makes from the parser and the registry (make completion)", function()
        local dir = support.tmpdir()
        finally(function()
            support.sh("rm -rf " .. support.q(dir))
        end)
        local code, out = support.sh("lua5.4 tools/gen-completion.lua " .. support.q(dir .. "/c.bash"))
        assert.equal(0, code, out)
        assert.is_true(support.read(dir .. "/c.bash") == support.read(FILE),
            FILE .. " is not current: run make completion")
        code, out = support.sh("bash -n " .. FILE)
        assert.equal(0, code, out)
    end)

    it("completes the commands", function()
        assert.same({ "report" }, complete("wolkvox re"))
        assert.same({ "schema", "status", "sync" }, complete("wolkvox s"))
        local all = complete("wolkvox ")
        for _, c in ipairs(require("wolkvox.cli.args").parser()._commands) do
            assert.is_true(has(all, c._name), c._name)
        end
    end)

    it("completes the options of the command and the global ones, before or after the command", function()
        local o = complete("wolkvox report cdr_1 --f")
        assert.same({ "--format", "--from" }, o)
        o = complete("wolkvox report --")
        assert.is_true(has(o, "--checkpoint") and has(o, "--profile") and has(o, "--help"))
        assert.is_false(has(o, "--append")) -- sync's
        assert.same({ "--version" }, complete("wolkvox --vers"))
    end)

    it("completes the choices of an option, after a space or an =", function()
        assert.same({ "ndjson" }, complete("wolkvox report cdr_1 --format n"))
        assert.same({ "csv", "html", "json", "ndjson", "singer", "table", "xlsx" },
            complete("wolkvox report cdr_1 --format "))
        assert.same({ "csv", "json", "ndjson", "table" }, complete("wolkvox call information services --format "))
        assert.same({ "day", "month", "week" }, complete("wolkvox report agent_1 --per "))
        assert.same({ "postgresql" }, complete("wolkvox schema cdr_1 --dialect = p"))
    end)

    it("completes endpoint names for report, sync, schema and call", function()
        local r = complete("wolkvox report cdr")
        assert.is_true(has(r, "cdr_1"), table.concat(r, " "))
        assert.is_true(has(complete("wolkvox sync cdr"), "cdr_1"))
        assert.is_true(has(complete("wolkvox schema agent"), "agent_1"))
        assert.is_true(has(complete("wolkvox report reports_manager/cd"), "reports_manager/cdr_1"))
        -- An option's value is not the report: still its name after --from DATE.
        assert.is_true(has(complete("wolkvox --profile acme report --from 2026-01-01 cdr"), "cdr_1"))
        assert.is_true(has(complete("wolkvox call "), "information"))
        assert.same({ "services" }, complete("wolkvox call information serv"))
        assert.same({}, complete("wolkvox report cdr_1 cdr"))
    end)

    it("completes profile names from the config file ($WOLKVOX_CONFIG, --config, ~/.config)", function()
        local dir = support.tmpdir()
        finally(function()
            support.sh("rm -rf " .. support.q(dir))
        end)
        support.spit(dir .. "/config", "[default]\nserver = 0031\n\n[profile acme]\nlicenses = 5\n"
            .. "  [ profile  beta ]  \n# [profile commented]\n")
        local env = "WOLKVOX_CONFIG=" .. support.q(dir .. "/config")
        assert.same({ "acme" }, complete("wolkvox --profile a", env))
        assert.same({ "acme", "beta", "default" }, complete("wolkvox --profile ", env))
        assert.same({ "acme" }, complete("wolkvox report cdr_1 --profile a", env))
        assert.same({ "acme", "beta", "default" },
            complete("wolkvox --config " .. dir .. "/config --profile ", "WOLKVOX_CONFIG=/nonexistent"))
        support.sh("mkdir -p " .. support.q(dir .. "/home/.config/wolkvox") .. " && cp " .. support.q(dir .. "/config")
            .. " " .. support.q(dir .. "/home/.config/wolkvox/config"))
        local home = "env -u WOLKVOX_CONFIG -u XDG_CONFIG_HOME HOME=" .. support.q(dir .. "/home")
        assert.same({ "acme", "beta", "default" }, complete("wolkvox --profile ", home))
        assert.same({}, complete("wolkvox --profile ", "WOLKVOX_CONFIG=/nonexistent"))
    end)
end)
