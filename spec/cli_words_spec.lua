-- The command line speaks its own language (issue #24): errors and warnings
-- name the options a shell user types, not Lua; did-you-mean for endpoints
-- and config keys; a mistake in a profile not in use is a warning; a plan far
-- beyond the usual asks first (--max-calls, --yes); --version; endpoints with
-- their descriptions; quota as JSON, with what the reserve leaves; "1 row";
-- CSV for Spanish and Portuguese Excel (--delimiter ';'); one exit-code
-- table.  Driven through bin/wolkvox against the fake.
local support = require "support"

local q, sh = support.q, support.sh

describe("the command line's own words", function()
    local srv, dir

    setup(function()
        srv = support.fake()
        dir = support.tmpdir()
    end)

    teardown(function()
        srv:stop()
        os.execute("rm -rf " .. q(dir))
    end)

    before_each(function()
        srv:control("reset")
    end)

    local function requests()
        return srv:control("stats").requests
    end

    -- bin/wolkvox against the fake: exit code, stdout, stderr.
    local function run(argv, env)
        return support.wolkvox(srv, argv, { home = dir, state_dir = dir .. "/state", env = env, limit = 60 })
    end

    local function config(text)
        local path = dir .. "/config"
        support.spit(path, text)
        sh("chmod 600 " .. q(path))
        return "WOLKVOX_CONFIG=" .. q(path)
    end

    it("--version says the version, Lua and libcurl", function()
        local code, out = run("--version")
        assert.equal(0, code)
        local v = require("wolkvox.version"):gsub("%.", "%%.")
        assert.matches("^wolkvox " .. v .. " %(Lua 5%.4, libcurl/[%d.]+%)\n$", out)
    end)

    it("errors and warnings name command-line options, not Lua", function()
        local code, _, err = run("report agent_1 --from 2026-01-01 --to 2026-04-30")
        assert.equal(2, code)
        assert.matches("give --per day, week or month", err, 1, true)
        assert.not_matches('per = "', err, 1, true)
        code, _, err = run("report rec_screen --from 2026-01-01 --to 2026-01-02")
        assert.equal(2, code)
        assert.matches("run wolkvox call billing rec_screen instead", err, 1, true)
        assert.not_matches("c:rec_screen", err, 1, true)
        -- The polling guard's warning: --force.
        assert.equal(0, (run("sync cdr_1 --since 2026-01-01 --until now --state " .. q(dir .. "/p.sync")
            .. " -o " .. q(dir .. "/p.csv") .. " --yes")))
        code, _, err = run("sync cdr_1 --state " .. q(dir .. "/p.sync") .. " -o " .. q(dir .. "/p2.csv"))
        assert.equal(0, code, err)
        assert.matches("(--force to sync anyway)", err, 1, true)
    end)

    it("a plan far beyond the usual asks first: --max-calls N or --yes; --dry-run shows the same", function()
        local before = requests()
        local code, out, err = run("report cdr_1 --from 2006-01-01 --to 2026-06-30 -o " .. q(dir .. "/big.csv"))
        assert.equal("", out)
        assert.equal(2, code)
        assert.matches("242 calls planned, more than the ceiling of 50 (--max-calls", err, 1, true)
        assert.matches("allow it with --max-calls 242 (or --yes)", err, 1, true)
        assert.equal(before, requests())
        assert.is_nil(support.slurp(dir .. "/big.csv"))
        code, out = run("report cdr_1 --from 2006-01-01 --to 2026-06-30 --dry-run")
        assert.equal(2, code)
        assert.matches("at most 50 calls per plan", out, 1, true)
        assert.matches("refused: 242 calls planned", out, 1, true)
        code, out = run("report cdr_1 --from 2006-01-01 --to 2026-06-30 --dry-run --yes")
        assert.equal(0, code)
        assert.matches("reports_manager/cdr_1: 242 windows, 242 calls", out, 1, true)
        code = run("report cdr_1 --from 2006-01-01 --to 2026-06-30 --dry-run --max-calls 300")
        assert.equal(0, code)
        -- With the day's limit known: 5 % of it.
        code, out = run("report cdr_1 --from 2006-01-01 --to 2026-06-30 --dry-run",
            config("[default]\nlicenses = 2\n"))
        assert.equal(2, code)
        assert.matches("at most 100 calls per plan", out, 1, true)
        assert.equal(before, requests())
    end)

    it("did you mean: endpoints and config keys; a mistake in a profile not in use is a warning", function()
        local code, _, err = run("report cdr1 --from 2026-01-01 --to 2026-01-02")
        assert.equal(2, code)
        assert.matches("unknown endpoint 'cdr1' (did you mean 'cdr_1'?)", err, 1, true)
        code, _, err = run("quota", config("[default]\nlicences = 5\n"))
        assert.equal(2, code)
        assert.matches("config:2: unknown option 'licences' (did you mean 'licenses'?)", err, 1, true)
        code, _, err = run("quota", config("[default]\nlicenses = 5\n[profile other]\nlicenses = x\n"))
        assert.equal(0, code, err)
        assert.matches("warning: .*config:4: licenses must be a number %(got 'x'%) %(in the profile other, "
            .. "not in use%)", err)
        code, _, err = run("--profile other quota", config("[default]\nlicenses = 5\n[profile other]\nlicenses = x\n"))
        assert.equal(2, code)
        assert.matches("licenses must be a number", err, 1, true)
    end)

    it("endpoints with their descriptions; quota as JSON with what the reserve leaves; 1 row, 2 rows", function()
        local code, out = run("endpoints reports_manager")
        assert.equal(0, code)
        assert.matches("cdr_1%s+detail%s+GET%s+date_ini%* date_end%*%s+Call detail\n", out)
        code, out = run("quota --format json", config("[default]\nlicenses = 2\nreserve = 300\n"))
        assert.equal(0, code)
        local qt = require("cjson").decode(out)
        assert.same({ 2000, 300 }, { qt.limit, qt.reserve })
        assert.equal(qt.remaining - 300, qt.available)
        code, out = run("report cdr_2 --from 2026-01-01 --to 2026-01-02 --dry-run")
        assert.equal(0, code)
        assert.matches("reports_manager/cdr_2: 1 window, 1 call\n", out, 1, true)
    end)

    it("CSV for Spanish and Portuguese Excel: --delimiter ';' (a cell with ; quoted), with --bom", function()
        srv:control("config", { fixtures = { { match = "cdr_1", body = { code = 200, msg = "ok", data = {
            { conn_id = "1", date = "2026-01-01 10:00:00", agent_name = "Peña; José", cost = "1,5" } } } } } })
        local code, out, err = run("report cdr_1 --from 2026-01-01 --to 2026-01-01 --delimiter ';' --bom")
        assert.equal(0, code, err)
        assert.equal("\239\187\191", out:sub(1, 3))
        local head, row = out:sub(4):match("^([^\r]*)\r\n([^\r]*)\r\n$")
        assert.matches("^agent_name;date;", head)
        assert.matches('^"Peña; José";2026%-01%-01 10:00:00;', row)
        assert.matches(";1,5;", row, 1, true)
        code, out = run("report cdr_1 --from 2026-01-01 --to 2026-01-01 --delimiter tab")
        assert.equal(0, code)
        assert.matches("^agent_name\tdate\t", out)
        assert.equal(2, (run("report cdr_1 --from 2026-01-01 --to 2026-01-01 --delimiter x")))
        assert.equal(2, (run("report cdr_1 --from 2026-01-01 --to 2026-01-01 --format ndjson --delimiter ';'")))
    end)

    it("a token \"file\" that is a directory says so, before any call", function()
        local before = requests()
        sh("mkdir -p " .. q(dir .. "/tokdir"))
        local out, err = os.tmpname(), os.tmpname()
        local code = os.execute("env -u LD_PRELOAD -u WOLKVOX_TOKEN -u WOLKVOX_CONFIG HOME=" .. q(dir)
            .. " lua5.4 bin/wolkvox --base-url " .. srv.url .. " --token-file " .. q(dir .. "/tokdir")
            .. " call information services >" .. out .. " 2>" .. err)
        local msg = support.slurp(err)
        os.remove(out)
        os.remove(err)
        assert.is_not_true(code == true or code == 0)
        assert.matches("token_file " .. dir:gsub("%p", "%%%0") .. "/tokdir is a directory, not a file", msg)
        assert.equal(before, requests())
    end)

    it("one table of exit codes: in wolkvox --help, not in every command's", function()
        local _, top = run("--help")
        assert.matches("Exit codes:\n", top, 1, true)
        assert.matches("9  budget", top, 1, true)
        local _, sub = run("report --help")
        assert.not_matches("Exit codes:\n", sub, 1, true)
        assert.matches("Exit codes: see wolkvox --help", sub, 1, true)
    end)
end)
