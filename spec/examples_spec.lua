-- The examples run as the README says, against the bundled fake server.
local support = require "support"

local function run(script, args)
    local code = string.format("arg = { %s }; dofile(%q)", args or "", script)
    local p = assert(io.popen(support.lua_command(code) .. " 2>/dev/null", "r"))
    local out = p:read("*a")
    local ok = p:close()
    return out, ok
end

describe("examples", function()
    it("seed_report.lua prints the five seed reads", function()
        local out = run("examples/seed_report.lua")
        assert.matches("Services %(1 row%)", out)
        assert.matches("Routing points %(4 rows%)", out)
        assert.matches("Billing: screen recording %(1 row%)", out)
        assert.matches("Billing: chat licences %(2 rows%)", out)
        assert.matches("Billing: interactions %(1 row%)", out)
        assert.matches("5 calls spent", out)
    end)

    it("calls_into_sqlite.lua loads last month into SQLite and queries it; run again, it spends no call", function()
        local dir = support.tmpdir()
        local db = dir .. "/calls.db"
        local out = run("examples/calls_into_sqlite.lua", '"' .. db .. '"')
        local n = tonumber(out:match("cdr_1: (%d+) rows loaded into sqlite:"))
        assert.is_true(n and n > 2000, out)
        assert.matches("\nday%s+calls%s+avg_seconds%s+agents\n", out)
        assert.matches("\n%d%d%d%d%-%d%d%-01%s+%d+%s+%d", out) -- the first day of the month
        out = run("examples/calls_into_sqlite.lua", '"' .. db .. '"')
        assert.matches("last month is already in sqlite:", out, 1, true)
        assert.matches("no call spent", out, 1, true)
        os.execute("rm -rf '" .. dir .. "'")
    end)

    it("cdr_to_csv.lua writes a header and one line per row", function()
        local out = run("examples/cdr_to_csv.lua", '"2026-01-01", "2026-01-10"')
        local lines = {}
        for line in out:gmatch("[^\n]+") do
            lines[#lines + 1] = line
        end
        assert.equal(1001, #lines)
        assert.matches("^agent_name,date,", lines[1])
        assert.matches("2026%-01%-10 23:45:36", lines[#lines])
    end)

end)

-- Run `script` with `args`, its stdout to `target`: exit status, stderr, seconds.
local function run_to(script, args, target)
    local socket = require "socket"
    local err_file = os.tmpname()
    local code = string.format("arg = { %s }; dofile(%q)", args or "", script)
    local cmd = support.lua_command(code):gsub("^exec ", "exec timeout 60 ")
    local t0 = socket.gettime()
    local p = assert(io.popen("sh -c " .. string.format("%q", cmd .. " >" .. target .. " 2>" .. err_file)
        .. "; echo $?", "r"))
    local status = tonumber(p:read("*a"))
    p:close()
    local f = io.open(err_file, "r")
    local err = f and f:read("*a") or ""
    if f then
        f:close()
    end
    os.remove(err_file)
    return status, err, socket.gettime() - t0
end

describe("examples and commands that cannot write", function()
    local function devfull()
        local f = io.open("/dev/full", "w")
        if f then
            f:close()
        end
        return f ~= nil
    end

    it("cdr_to_csv.lua > /dev/full fails with a message instead of reporting rows", function()
        assert.is_true(devfull(), "/dev/full is needed")
        local status, err = run_to("examples/cdr_to_csv.lua", '"2026-01-01", "2026-01-10"', "/dev/full")
        assert.equal(1, status, err)
        assert.matches("cdr_to_csv: the CSV is incomplete %(cannot write: No space left on device%)", err)
        assert.is_nil(err:find("%d+ rows, %d+ call"), err)    -- no success summary
    end)

    it("seed_report.lua > /dev/full fails with a message", function()
        local status, err = run_to("examples/seed_report.lua", "", "/dev/full")
        assert.equal(1, status, err)
        assert.matches("seed_report: cannot write to stdout", err)
    end)

    it("wolkvox-fake --help > /dev/full fails with a message", function()
        local p = assert(io.popen("env -u LD_PRELOAD lua5.4 bin/wolkvox-fake --help 2>&1 >/dev/full; echo \" $?\"",
            "r"))
        local out = p:read("*a")
        p:close()
        assert.matches("wolkvox%-fake: cannot write to stdout.* 1\n$", out)
    end)

    it("cdr_to_csv.lua --help and a bad date end at once, the fake server with them", function()
        local status, err, took = run_to("examples/cdr_to_csv.lua", '"--help"', "/dev/null")
        assert.equal(0, status, err)
        assert.is_true(took < 10, "took " .. took .. " s")
        status, err, took = run_to("examples/cdr_to_csv.lua", '"2026-13-45"', "/dev/null")
        assert.equal(2, status, err)
        assert.matches("cdr_to_csv: .*params", err)
        assert.is_true(took < 10, "took " .. took .. " s")
    end)
end)
