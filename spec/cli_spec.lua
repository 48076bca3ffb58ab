-- The `wolkvox` command (bin/wolkvox) driven as a user runs it, against the
-- fake server: every command and format, profiles, dry runs, exit codes,
-- and the token kept out of every output.
local support = require "support"

local TOKEN = "cli-secret-token-7f3a"

-- A shell-quoted string.
local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local slurp = support.slurp

local function write(path, text, mode)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    if mode then
        os.execute("chmod " .. mode .. " " .. q(path))
    end
end

describe("wolkvox command", function()
    local srv, home, state
    local BIN = "bin/wolkvox"

    -- Run `wolkvox <argv>` with environment `env` (a table; a clean one
    -- otherwise: no token, no config, an empty HOME): code, stdout, stderr.
    local function run(argv, env, stdin)
        local out, err = os.tmpname(), os.tmpname()
        local vars = { HOME = home, XDG_CONFIG_HOME = home .. "/.config", XDG_CACHE_HOME = home .. "/.cache" }
        for k, v in pairs(env or {}) do
            vars[k] = v
        end
        local parts = { "env -u LD_PRELOAD -u WOLKVOX_TOKEN -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE -u WOLKVOX_SERVER" }
        for k, v in pairs(vars) do
            if v ~= false then
                parts[#parts + 1] = k .. "=" .. q(v)
            end
        end
        parts[#parts + 1] = "lua5.4 " .. BIN .. " " .. argv
        local cmd = table.concat(parts, " ") .. " >" .. out .. " 2>" .. err
        if stdin then
            cmd = cmd .. " <" .. q(stdin)
        end
        local p = io.popen("{ " .. cmd .. "; } ; echo $?")
        local code = tonumber(p:read("*a"):match("(%d+)%s*$"))
        p:close()
        local o, e = slurp(out), slurp(err)
        os.remove(out)
        os.remove(err)
        return code, o, e
    end

    -- The usual options towards the fake, with the token from the environment.
    local function fake_run(argv, env)
        local e = { WOLKVOX_TOKEN = TOKEN }
        for k, v in pairs(env or {}) do
            e[k] = v
        end
        return run("--base-url " .. srv.url .. " --state-dir " .. state .. " " .. argv, e)
    end

    local function csv_rows(text)
        local rows, head = {}, nil
        for line in text:gmatch("([^\n]*)\n") do
            line = line:gsub("\r$", "")
            local cells = {}
            for cell in (line .. ","):gmatch("([^,]*),") do
                cells[#cells + 1] = cell
            end
            if not head then
                head = cells
            else
                local row = {}
                for i, h in ipairs(head) do
                    row[h] = cells[i]
                end
                rows[#rows + 1] = row
            end
        end
        return rows, head
    end

    setup(function()
        srv = support.fake { tokens = { TOKEN }, rows_per_day = 20 }
        home = support.tmpdir()
        state = support.tmpdir()
    end)
    teardown(function()
        srv:stop()
        os.execute("rm -rf " .. q(home) .. " " .. q(state))
    end)
    before_each(function()
        srv:control("reset")
        os.execute("rm -rf " .. q(state) .. "/* " .. q(home) .. "/.config")
    end)

    describe("help", function()
        it("lists the commands and the exit codes, and each command has examples", function()
            local code, out = run("--help")
            assert.equal(0, code)
            for _, w in ipairs { "endpoints", "call", "report", "quota", "fake", "Exit codes", "WOLKVOX_TOKEN" } do
                assert.matches(w, out, 1, true)
            end
            for _, cmd in ipairs { "endpoints", "call", "report", "quota", "fake" } do
                code, out = run(cmd .. " --help")
                assert.equal(0, code)
                assert.matches("Examples:", out, 1, true)
                assert.matches("Exit codes", out, 1, true)
            end
        end)

        it("has no option that takes the token", function()
            local _, out = run("--help")
            assert.is_nil(out:find("%-%-token[^%-]"))
        end)
    end)

    describe("endpoints", function()
        it("lists the registry as a table or as JSON", function()
            local code, out = run("endpoints reports_manager")
            assert.equal(0, code)
            assert.matches("^family%s+api%s+kind%s+method%s+params%s+description\n", out)
            assert.matches("reports_manager%s+cdr_1%s+detail%s+GET%s+date_ini%* date_end%*%s+Call detail", out)
            assert.is_nil(out:find("information"))
            code, out = run("endpoints --format json")
            assert.equal(0, code)
            local list = require("cjson").decode(out)
            assert.equal(#require("wolkvox.api.registry").endpoints, #list)
        end)

        it("refuses an unknown family with exit code 2", function()
            local code, out, err = run("endpoints nosuch")
            assert.equal(2, code)
            assert.equal("", out)
            assert.matches("unknown family 'nosuch'", err)
        end)
    end)

    describe("call", function()
        it("prints the answer as JSON, table, CSV and NDJSON", function()
            local code, out, err = fake_run("call information services")
            assert.equal(0, code, err)
            local data = require("cjson").decode(out)
            assert.equal("25", data[1].licenses)
            code, out = fake_run("call information services --format table")
            assert.equal(0, code)
            assert.matches("^licenses%s+pbx", out)
            code, out = fake_run("call information services --format csv")
            assert.equal(0, code)
            assert.matches("^licenses,pbx,", out)
            code, out = fake_run("call information services --format ndjson")
            assert.equal(0, code)
            assert.matches('^{.*"licenses":"25".*}\n$', out)
        end)

        it("passes name=value parameters and range options", function()
            local code, out, err = fake_run("call reports_manager cdr_1 from=2026-01-01 to=2026-01-02 --format csv")
            assert.equal(0, code, err)
            local rows = csv_rows(out)
            assert.equal(40, #rows)
            local log = support.calls(srv, "cdr_1")
            assert.equal(1, #log)
        end)

        it("sends a --body file as the JSON body", function()
            local body = home .. "/ip.json"
            write(body, '{"ip":"203.0.113.7","description":"office","permanent":"1"}')
            local code, _, err = fake_run("call configuration add_ip --body " .. q(body))
            assert.equal(0, code, err)
            local log = support.calls(srv, "add_ip")
            assert.equal(1, #log)
        end)

        it("reads --body - from stdin", function()
            local body = home .. "/ip2.json"
            write(body, '{"ip":"203.0.113.8","description":"home","permanent":"0"}')
            local code, _, err = run("--base-url " .. srv.url .. " --state-dir " .. q(state)
                .. " call configuration add_ip --body -", { WOLKVOX_TOKEN = TOKEN }, body)
            assert.equal(0, code, err)
            assert.equal(1, #support.calls(srv, "add_ip"))
            write(body, "not json")
            code, _, err = run("--base-url " .. srv.url .. " call configuration add_ip --body -",
                { WOLKVOX_TOKEN = TOKEN }, body)
            assert.equal(2, code)
            assert.matches("the body is not a JSON", err)
        end)

        it("writes --output under a temporary name and renames it at the end", function()
            local path = home .. "/services.json"
            local code, out = fake_run("call information services --output " .. q(path))
            assert.equal(0, code)
            assert.equal("", out)
            assert.matches('"licenses"', slurp(path))
        end)
    end)

    describe("report", function()
        it("writes six months of cdr_1 to CSV: every row once, in time order", function()
            local c = support.client(srv, { token = TOKEN })
            local want = assert(c:report("cdr_1", { from = "2026-01-01", to = "2026-06-30" }))
            c:close()
            srv:control("reset")
            srv:control("config", { max_rows = 500 })
            local path = home .. "/cdr.csv"
            local code, out, err = fake_run("report cdr_1 --from 2026-01-01 --to 2026-06-30 max_rows=500 -o "
                .. q(path))
            assert.equal(0, code, err)
            assert.equal("", out)
            assert.equal("", err) -- not a terminal: silent
            local rows, head = csv_rows(slurp(path))
            assert.same(require("wolkvox.export").columns("cdr_1"), head)
            assert.equal(#want, #rows)
            assert.equal(181 * 20, #rows)
            local seen = {}
            for i, r in ipairs(rows) do
                assert.is_nil(seen[r.conn_id])
                seen[r.conn_id] = true
                assert.equal(want[i].conn_id, r.conn_id)
                if i > 1 then
                    assert.is_true(rows[i - 1].date <= r.date)
                end
            end
            assert.is_true(#support.calls(srv, "cdr_1") > 6) -- truncated windows were split
        end)

        it("writes NDJSON, one streamed JSON array, an aligned table, and a BOM on request", function()
            local args = "report cdr_1 --from 2026-01-01 --to 2026-01-01 "
            local code, out = fake_run(args .. "--format ndjson")
            assert.equal(0, code)
            local n = 0
            for line in out:gmatch("[^\n]+") do
                n = n + 1
                assert.is_string(require("cjson").decode(line).conn_id)
            end
            assert.equal(20, n)
            code, out = fake_run(args .. "--format json")
            assert.equal(0, code)
            assert.equal(20, #require("cjson").decode(out))
            code, out = fake_run(args .. "--format table")
            assert.equal(0, code)
            assert.matches("^agent_name%s+date%s+destiny", out)
            assert.matches("\n%-%-%-", out)
            code, out = fake_run(args .. "--bom")
            assert.equal(0, code)
            assert.equal("\239\187\191agent_name,", out:sub(1, 14))
        end)

        it("gives aggregates with --per a leading period column", function()
            local code, out, err = fake_run("report agent_1 --from 2026-01-01 --to 2026-03-31 --per month")
            assert.equal(0, code, err)
            local rows, head = csv_rows(out)
            assert.equal("period", head[1])
            assert.equal("2026-01", rows[1].period)
            assert.equal("2026-03", rows[#rows].period)
            assert.equal(3, #support.calls(srv, "agent_1"))
        end)

        it("writes an answer keyed by bucket (cdr_4) one row per key, the key first; an object as one row", function()
            local code, out, err = fake_run("report cdr_4 --from 2026-01-01 --to 2026-01-02")
            assert.equal(0, code, err)
            local rows, head = csv_rows(out)
            assert.same({ "key", "INTERVAL", "calls", "minutes", "cost", "percentage" }, head)
            assert.is_true(#rows > 1)
            for i = 2, #rows do
                assert.is_true(rows[i - 1].key < rows[i].key)
            end
            assert.matches("^2026%-01%-01 ", rows[1].key)
            assert.is_nil(out:find("table: ", 1, true))
            code, out = fake_run("call real_time info_server --format csv")
            assert.equal(0, code)
            rows = csv_rows(out)
            assert.equal(1, #rows)
            assert.is_string(rows[1].ram)
        end)

        it("--typed turns durations, percentages and numbers into numbers", function()
            local code, out = fake_run("report agent_1 --from 2026-01-01 --to 2026-01-01 --format ndjson --typed")
            assert.equal(0, code)
            local row = require("cjson").decode(out:match("[^\n]+"))
            assert.is_number(row.calls)
            assert.is_number(row.ready_time)
            assert.is_number(row.occupancy)
            assert.is_string(row.login)
        end)

        it("--typed applies to call's JSON too", function()
            local code, out = fake_run("call information services --typed")
            assert.equal(0, code)
            assert.is_number(require("cjson").decode(out)[1].licenses)
        end)

        it("--dry-run prints the windows, the calls and the quota left, and spends none", function()
            local code, out, err = fake_run("report cdr_1 --from 2026-01-01 --to 2026-06-30 --dry-run",
                {})
            assert.equal(0, code, err)
            assert.matches("reports_manager/cdr_1: 6 windows, 6 calls", out)
            assert.matches("2026%-01%-01 00:00:00 .. 2026%-01%-31 23:59:59", out)
            assert.matches("quota:", out)
            assert.equal(0, #srv:log())
        end)

        it("--dry-run says the quota left when the limit is known, and a refusal exits 4", function()
            local cfg = home .. "/config"
            write(cfg, "[default]\nlicenses = 1\nreserve = 996\n", "600")
            local code, out, err = fake_run("--config " .. q(cfg)
                .. " report cdr_1 --from 2026-01-01 --to 2026-01-31 --dry-run")
            assert.equal(0, code, err)
            assert.matches("quota: 0 of 1000 used today %(counted%), 999 left after this", out)
            code, out = fake_run("--config " .. q(cfg) .. " report cdr_1 --from 2026-01-01 --to 2026-06-30 --dry-run")
            assert.equal(4, code)
            assert.matches("refused:", out)
            assert.equal(0, #srv:log())
            code, out, err = fake_run("--config " .. q(cfg) .. " report cdr_1 --from 2026-01-01 --to 2026-06-30")
            assert.equal(4, code)
            assert.equal("", out)
            assert.matches("refused before sending", err)
            assert.equal(0, #srv:log())
        end)

        it("a failed run leaves no file under the final name, nor a temporary one", function()
            local dir = support.tmpdir()
            support.faults(srv, { { status = 500, times = 10 } })
            local code, _, err = fake_run("report cdr_1 --from 2026-01-01 --to 2026-03-31 retries=0 -o "
                .. q(dir .. "/out.csv"))
            assert.equal(5, code)
            assert.matches("http", err)
            local p = io.popen("ls -A " .. q(dir))
            local listing = p:read("*a")
            p:close()
            assert.equal("", listing)
            os.execute("rm -rf " .. q(dir))
        end)
    end)

    describe("quota", function()
        it("reads the ledger for free, and --measure asks token_info", function()
            local code, out, err = fake_run("quota")
            assert.equal(0, code, err)
            assert.matches("used: 0", out)
            assert.equal(0, #srv:log())
            code, out = fake_run("quota --measure")
            assert.equal(0, code)
            assert.matches("source: measured", out)
            assert.equal(1, #support.calls(srv, "token_info"))
        end)
    end)

    describe("fake", function()
        it("runs the bundled fake server in the foreground, with --port and --rows-per-day", function()
            local log = os.tmpname()
            local p = io.popen("env -u LD_PRELOAD lua5.4 " .. BIN .. " fake --port 0 --rows-per-day 3 >" .. log
                .. " 2>&1 & echo $!")
            local pid = tonumber(p:read("*l"))
            p:close()
            local url = support.wait_for(function()
                return (slurp(log) or ""):match("listening on (http://%S+)")
            end, 10, "the fake's \"listening on\" line")
            assert.truthy(url)
            local code, out, err = run("--base-url " .. url .. " --state-dir " .. q(state)
                .. " report cdr_1 --from 2026-01-01 --to 2026-01-02 --format ndjson", { WOLKVOX_TOKEN = "test-token" })
            os.execute("kill " .. pid)
            os.remove(log)
            assert.equal(0, code, err)
            assert.equal(6, select(2, out:gsub("\n", "")))
        end)
    end)

    describe("exit codes", function()
        it("1 with a message when stdout cannot be written (help, a report)", function()
            local p = io.popen("env -u LD_PRELOAD lua5.4 " .. BIN .. " report --help 2>&1 >/dev/full; echo \" $?\"")
            local text = p:read("*a")
            p:close()
            assert.matches("cannot write to stdout", text)
            assert.matches(" 1\n$", text)
            p = io.popen("env -u LD_PRELOAD WOLKVOX_TOKEN=" .. TOKEN .. " lua5.4 " .. BIN .. " --base-url " .. srv.url
                .. " --state-dir " .. q(state) .. " report cdr_1 --from 2026-01-01 --to 2026-01-31 2>&1 >/dev/full;"
                .. " echo \" $?\"")
            text = p:read("*a")
            p:close()
            assert.matches("^wolkvox: [^\n]*cannot write", text)
            assert.matches(" 1\n$", text)
        end)

        it("2 for usage, bad parameters and an unknown endpoint", function()
            local code, out, err = fake_run("report cdr_1 --from 2026-01-01")
            assert.equal(2, code)
            assert.equal("", out)
            assert.equal("wolkvox: missing option '--to' (see: wolkvox report --help)\n", err)
            code, out, err = fake_run("call information nosuch")
            assert.equal(2, code)
            assert.matches("unknown endpoint information/nosuch", err)
            assert.equal("", out)
            code, out, err = fake_run("report cdr_1 --from 2026-01-01 --to 2026-01-02 nosuch=1")
            assert.equal(2, code)
            assert.matches("params", err)
            assert.equal("", out)
            code = fake_run("report agent_1 --from 2026-01-01 --to 2026-03-31")
            assert.equal(2, code)
            assert.equal(0, #srv:log())
        end)

        it("3 for a missing or refused token", function()
            local code, _, err = run("--base-url " .. srv.url .. " call information services")
            assert.equal(3, code)
            assert.matches("no token", err)
            code, _, err = fake_run("call information services", { WOLKVOX_TOKEN = "wrong" })
            assert.equal(3, code)
            assert.matches("auth", err)
        end)

        it("4 when the quota is spent", function()
            support.faults(srv, { { forbidden = "quota" } })
            local code, _, err = fake_run("call information services")
            assert.equal(4, code)
            assert.matches("quota", err)
        end)

        it("5 when the service fails", function()
            support.faults(srv, { { status = 500 } })
            local code, _, err = fake_run("call information services retries=0")
            assert.equal(5, code)
            local lines = select(2, err:gsub("\n", ""))
            assert.equal(1, lines) -- one clear line
        end)

        it("6 when a window is still full at its smallest span", function()
            local code, _, err = fake_run("report cdr_1 --from 2026-01-01 --to 2026-01-02 max_rows=5 min_span=86400")
            assert.equal(6, code)
            assert.matches("truncated", err)
        end)
    end)

    describe("profiles", function()
        local function config(text, mode)
            os.execute("mkdir -p " .. q(home .. "/.config/wolkvox"))
            write(home .. "/.config/wolkvox/config", text, mode or "600")
        end

        it("a profile with a token file (~ expanded) works, and no token shows anywhere", function()
            write(home .. "/tok", TOKEN .. "\n", "600")
            config("[default]\nbase_url = " .. srv.url .. "\ntoken_file = ~/tok\nstate_dir = " .. state .. "\n")
            local code, out, err = run("--verbose report cdr_1 --from 2026-01-01 --to 2026-01-31")
            assert.equal(0, code, err)
            assert.equal(620, #csv_rows(out))
            assert.matches("wolkvox %[debug%]", err) -- the verbose log
            assert.is_nil(out:find(TOKEN, 1, true))
            assert.is_nil(err:find(TOKEN, 1, true))
            -- a failure's line and log do not show it either
            support.faults(srv, { { status = 500 } })
            code, out, err = run("--verbose call information services retries=0")
            assert.equal(5, code)
            assert.is_nil((out .. err):find(TOKEN, 1, true))
        end)

        it("keeps the token out of the running command's argv and out of the state directory", function()
            write(home .. "/tok", TOKEN .. "\n", "600")
            config("[default]\nbase_url = " .. srv.url .. "\ntoken_file = ~/tok\nstate_dir = " .. state .. "\n")
            srv:control("config", { latency = 0.3 })
            local p = io.popen("env -u LD_PRELOAD -u WOLKVOX_TOKEN HOME=" .. q(home) .. " XDG_CONFIG_HOME="
                .. q(home .. "/.config") .. " lua5.4 " .. BIN
                .. " report cdr_1 --from 2026-01-01 --to 2026-02-28 >/dev/null 2>&1 & echo $!")
            local pid = tonumber(p:read("*l"))
            p:close()
            local argv, environ
            support.wait_for(function()
                argv = support.proc(pid, "cmdline")
                environ = support.proc(pid, "environ")
                return argv and argv:find("report", 1, true)
            end, 10, "the report's process to start")
            assert.matches("report cdr_1", argv)
            assert.is_nil(argv:find(TOKEN, 1, true))
            assert.is_nil((environ or ""):find(TOKEN, 1, true))
            support.wait_for(function() return not support.alive(pid) end, 30, "the report's process to end")
            srv:control("config", { latency = 0 })
            local f = io.popen("cat " .. q(state) .. "/* " .. q(state) .. "/*/* 2>/dev/null")
            local saved = f:read("*a")
            f:close()
            assert.is_nil(saved:find(TOKEN, 1, true))
        end)

        it("--profile, then WOLKVOX_PROFILE, then default; the command line overrides the profile", function()
            write(home .. "/tok", TOKEN .. "\n", "600")
            config("[default]\nbase_url = " .. srv.url .. "\ntoken_file = ~/tok\nstate_dir = " .. state .. "\n\n"
                .. "[profile dead]\nbase_url = http://127.0.0.1:1\ntoken_file = ~/tok\nretries = 0\n"
                .. "state_dir = " .. state .. "\n")
            assert.equal(0, (run("call information services")))
            assert.equal(5, (run("--profile dead call information services")))
            assert.equal(5, (run("call information services", { WOLKVOX_PROFILE = "dead" })))
            assert.equal(0, (run("--profile default call information services", { WOLKVOX_PROFILE = "dead" })))
            -- A URL on the command line never takes the profile's token
            -- (issue 19): its token comes from the command line or the environment.
            local code, _, err = run("--profile dead --base-url " .. srv.url .. " call information services")
            assert.equal(3, code)
            assert.matches("a profile's token goes only to the profile's own server", err, 1, true)
            assert.equal(0, (run("--profile dead --base-url " .. srv.url .. " --token-file " .. q(home .. "/tok")
                .. " call information services")))
            assert.equal(0, (run("--profile dead --base-url " .. srv.url .. " call information services",
                { WOLKVOX_TOKEN = TOKEN })))
            -- WOLKVOX_SERVER over the profile's server, and without the profile's token.
            code, _, err = run("call information services", { WOLKVOX_SERVER = "0031" })
            assert.equal(3, code)
            assert.matches("from the environment (WOLKVOX_SERVER)", err, 1, true)
            -- -v says where each came from, never the token itself.
            code, _, err = run("-v call information services")
            assert.equal(0, code, err)
            assert.matches("server from the profile, token from the profile", err, 1, true)
            code, _, err = run("-v --base-url " .. srv.url .. " call information services", { WOLKVOX_TOKEN = TOKEN })
            assert.equal(0, code, err)
            assert.matches("server from the command line, token from the environment (WOLKVOX_TOKEN)", err, 1, true)
            assert.is_nil(err:find(TOKEN, 1, true))
            code, _, err = run("--profile nosuch call information services")
            assert.equal(2, code)
            assert.matches("no profile 'nosuch'", err)
        end)

        it("reads $WOLKVOX_CONFIG, and --config over it", function()
            local path = home .. "/other.ini"
            write(path, "[default]\nbase_url = " .. srv.url .. "\nstate_dir = " .. state .. "\n", "600")
            local env = { WOLKVOX_CONFIG = path, WOLKVOX_TOKEN = TOKEN }
            assert.equal(0, (run("call information services", env)))
            local code, _, err = run("--config " .. q(home .. "/missing") .. " call information services", env)
            assert.equal(2, code)
            assert.matches("cannot read the config file", err)
        end)

        it("warns when others can read the config file, and refuses a malformed one", function()
            config("[default]\nbase_url = " .. srv.url .. "\nstate_dir = " .. state .. "\n", "644")
            local code, _, err = run("call information services", { WOLKVOX_TOKEN = TOKEN })
            assert.equal(0, code)
            assert.matches("can be read by others", err)
            config("[default]\nbase_url = " .. srv.url .. "\nstate_dir = " .. state .. "\n", "600")
            code, _, err = run("call information services", { WOLKVOX_TOKEN = TOKEN })
            assert.equal(0, code)
            assert.equal("", err)
            config("[default]\nlicenses = many\n")
            code, _, err = run("call information services", { WOLKVOX_TOKEN = TOKEN })
            assert.equal(2, code)
            assert.matches("config:2: licenses must be a number", err)
            config("os.exit(9)\n")
            code = run("call information services", { WOLKVOX_TOKEN = TOKEN })
            assert.equal(2, code)
        end)
    end)

    describe("progress", function()
        local has_script = os.execute("command -v script >/dev/null 2>&1")
        has_script = has_script == true or has_script == 0

        it("is silent when stderr is not a terminal", function()
            local code, _, err = fake_run("report cdr_1 --from 2026-01-01 --to 2026-03-31")
            assert.equal(0, code)
            assert.equal("", err)
        end)

        it("draws windows, rows, calls and clears the line on a pseudo-terminal", function()
            if not has_script then
                pending("script (util-linux) is not installed")
                return
            end
            local out = os.tmpname()
            local inner = "env -u LD_PRELOAD WOLKVOX_TOKEN=" .. TOKEN .. " HOME=" .. q(home)
                .. " lua5.4 " .. BIN .. " --base-url " .. srv.url .. " --state-dir " .. q(state)
                .. " report cdr_1 --from 2026-01-01 --to 2026-03-31 -o " .. q(out)
            local p = io.popen("env -u LD_PRELOAD script -qec " .. q(inner) .. " /dev/null; echo \"rc=$?\"")
            local tty = p:read("*a")
            p:close()
            assert.matches("rc=0", tty)
            -- (one or two calls by then: two are in flight)
            assert.matches("\rreports_manager/cdr_1  1/3 windows  %d+ rows  %d calls?  ", tty)
            assert.matches("3/3 windows  1800 rows  3 calls", tty, 1, true)
            assert.matches("\r\27%[K", tty) -- cleared at the end
            local rows = csv_rows(slurp(out))
            assert.equal(1800, #rows)
            p = io.popen("env -u LD_PRELOAD script -qec " .. q(inner .. " --no-progress")
                .. " /dev/null; echo \"rc=$?\"")
            tty = p:read("*a")
            p:close()
            assert.matches("rc=0", tty)
            assert.is_nil(tty:find("windows", 1, true))
            os.remove(out)
        end)
    end)

    describe("sync", function()
        it("appends what is new at each run: two runs equal one report, byte for byte", function()
            local st, out = home .. "/cdr.sync", home .. "/sync.csv"
            local code, _, err = fake_run("sync cdr_1 --state " .. q(st) .. " --since 2026-01-01 --until 2026-01-10"
                .. " --output " .. q(out) .. " --append")
            assert.equal(0, code, err)
            code, _, err = fake_run("sync cdr_1 --state " .. q(st) .. " --until 2026-01-20 --lag 5m --output "
                .. q(out) .. " --append --force")
            assert.equal(0, code, err)
            local _, want = fake_run("report cdr_1 --from 2026-01-01 --to 2026-01-20")
            assert.equal(want, slurp(out))
            assert.is_nil(slurp(st):find(TOKEN, 1, true))
            -- Again, up to the same end: up to date, no call, the file untouched.
            local before = srv:control("stats").requests
            code, _, err = fake_run("sync cdr_1 --state " .. q(st) .. " --until 2026-01-20 --output " .. q(out)
                .. " --append")
            assert.equal(0, code, err)
            assert.equal(before, srv:control("stats").requests)
            assert.equal(want, slurp(out))
        end)

        it("refuses a bad duration and --append without --output (exit 2, no call)", function()
            local st = home .. "/x.sync"
            local code, _, err = fake_run("sync cdr_1 --state " .. q(st) .. " --since 2026-01-01 --lag soon")
            assert.equal(2, code)
            assert.matches("--lag takes seconds", err, 1, true)
            code, _, err = fake_run("sync cdr_1 --state " .. q(st) .. " --since 2026-01-01 --append")
            assert.equal(2, code)
            assert.matches("--append needs --output", err, 1, true)
            assert.equal(0, srv:control("stats").requests)
        end)
    end)
end)
