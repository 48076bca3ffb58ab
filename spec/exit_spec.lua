-- The exit code of each error kind, through bin/wolkvox against the fake
-- (issue #21: a planted-bug check found no spec for these).
local support = require "support"

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

describe("wolkvox exit codes by kind", function()
    local srv, dir

    setup(function()
        srv = support.fake()
        dir = support.tmpdir()
    end)
    teardown(function()
        srv:stop()
        os.execute("rm -rf " .. q(dir))
    end)
    before_each(function() srv:control("reset") end)

    -- `wolkvox ARGV` with a config of `ini` lines: code, stderr.
    local function run(argv, ini)
        local config = dir .. "/config"
        support.spit(config, "[default]\n" .. (ini or ""))
        os.execute("chmod 600 " .. q(config))
        local code, _, err = support.wolkvox(srv, "--config " .. q(config) .. " " .. argv,
            { home = dir, state_dir = dir .. "/state" })
        return code, err or ""
    end

    local CALL = "call information services retries=0"

    for _, case in ipairs {
        { "maintenance (after its retries)", { forbidden = "maintenance", times = 10 }, 5, "maintenance" },
        { "concurrency (after its retries)", { forbidden = "concurrency", times = 10 }, 5, "concurrency" },
        { "decode", { bad_json = true, times = 10 }, 5, "decode" },
        { "quota", { forbidden = "quota" }, 4, "quota" },
        { "auth", { forbidden = "token" }, 3, "auth" },
    } do
        it(case[1] .. " exits " .. case[3], function()
            support.faults(srv, { case[2] })
            local code, err = run(CALL)
            assert.equal(case[3], code, err)
            assert.matches("wolkvox " .. case[4], err, 1, true)
        end)
    end

    it("too_large exits 5", function()
        local code, err = run(CALL, "max_bytes = 100\n")
        assert.equal(5, code, err)
        assert.matches("too_large", err, 1, true)
    end)

    it("state (fleet mode, Redis unreachable, refuse) exits 5, spending nothing", function()
        local code, err = run(CALL .. " --redis redis://127.0.0.1:9", "redis_failure = refuse\n")
        assert.equal(5, code, err)
        assert.matches("state", err, 1, true)
        assert.equal(0, srv:control("stats").requests)
    end)

    it("truncated exits 6", function()
        srv:control("config", { max_rows = 10 })
        local code, err = run("report cdr_1 --from 2026-01-01 --to 2026-01-01 max_rows=10 min_span=86400 retries=0")
        assert.equal(6, code, err)
        assert.matches("truncated", err, 1, true)
    end)
end)
