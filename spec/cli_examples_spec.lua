-- The command line's examples (examples/*.sh) run against the fake server.
local support = require "support"

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

describe("command line examples", function()
    local srv, state, dir

    -- Run `script` with `env` (WOLKVOX pointing at the fake): code, stdout, stderr.
    local function run(script, env)
        local out, err = os.tmpname(), os.tmpname()
        local vars = { "WOLKVOX=" .. q("lua5.4 bin/wolkvox --base-url " .. srv.url .. " --state-dir " .. state),
            "WOLKVOX_TOKEN=" .. q(srv.token), "HOME=" .. q(dir) }
        for k, v in pairs(env or {}) do
            vars[#vars + 1] = k .. "=" .. q(v)
        end
        local p = io.popen("env -u LD_PRELOAD -u WOLKVOX_CONFIG " .. table.concat(vars, " ") .. " sh " .. script
            .. " >" .. out .. " 2>" .. err .. "; echo $?")
        local code = tonumber(p:read("*a"))
        p:close()
        local fo, fe = io.open(out), io.open(err)
        local o, e = fo:read("*a"), fe:read("*a")
        fo:close()
        fe:close()
        os.remove(out)
        os.remove(err)
        return code, o, e
    end

    setup(function()
        srv = support.fake { rows_per_day = 10 }
        state, dir = support.tmpdir(), support.tmpdir()
    end)
    teardown(function()
        srv:stop()
        os.execute("rm -rf " .. q(state) .. " " .. q(dir))
    end)
    before_each(function() srv:control("reset") end)

    it("nightly_export.sh writes the day's CSV under its final name, silently", function()
        local code, out, err = run("examples/nightly_export.sh " .. q(dir), { DAY = "2026-01-05" })
        assert.equal(0, code, err)
        assert.equal("", out)
        assert.equal("", err)
        local f = assert(io.open(dir .. "/cdr-2026-01-05.csv"))
        local text = f:read("*a")
        f:close()
        assert.equal(11, select(2, text:gsub("\r\n", "")))
    end)

    it("nightly_export.sh without DAY exports yesterday on the operation's clock, even under another TZ", function()
        local dates = require "wolkvox.dates"
        local day = dates.iso(dates.relative("yesterday", false, dates.now(-5 * 3600))):sub(1, 10)
        local code, _, err = run("examples/nightly_export.sh " .. q(dir), { TZ = "Asia/Tokyo" })
        assert.equal(0, code, err)
        assert.is_truthy(support.slurp(dir .. "/cdr-" .. day .. ".csv"), "no cdr-" .. day .. ".csv")
    end)

    it("nightly_export.sh says why it failed, and exits with the command's code", function()
        support.faults(srv, { { forbidden = "quota" } })
        local code, _, err = run("examples/nightly_export.sh " .. q(dir), { DAY = "2026-01-06" })
        assert.equal(4, code)
        assert.matches("quota is spent", err)
        assert.is_nil(io.open(dir .. "/cdr-2026-01-06.csv"))
    end)

    it("realtime_poll.sh appends a timestamped snapshot, never polls faster than 300 s, stops on exit 4", function()
        local path = dir .. "/agents.ndjson"
        local code, out, err = run("examples/realtime_poll.sh " .. q(path), { COUNT = "1", INTERVAL = "10" })
        assert.equal(0, code, err)
        assert.equal("", out)
        assert.matches("below 300 s: using 300", err)
        local f = assert(io.open(path))
        local n = 0
        for line in f:lines() do
            n = n + 1
            assert.matches('^{"polled_at":"%d%d%d%d%-%d%d%-%d%dT', line)
            assert.is_string(require("cjson").decode(line).polled_at)
        end
        f:close()
        assert.is_true(n > 0)
        assert.equal(1, #support.calls(srv, "agents"))
        support.faults(srv, { { forbidden = "quota" } })
        code, out, err = run("examples/realtime_poll.sh " .. q(path), { COUNT = "3" })
        assert.equal(4, code)
        assert.equal("", out)
        assert.matches("stopping %(exit 4%)", err)
    end)

    it("month_to_date.sh prints the plan, then the table of the month so far", function()
        local code, out, err = run("examples/month_to_date.sh", { TODAY = "2026-03-15" })
        assert.equal(0, code, err)
        assert.matches("reports_manager/cdr_2: 1 window, 1 call", err)
        assert.matches("2026%-03%-01 00:00:00 .. 2026%-03%-15 23:59:59", err)
        assert.matches("^calls%s+agent_name%s+cost\n", out)
        assert.equal(1, #support.calls(srv, "cdr_2"))
    end)
end)
