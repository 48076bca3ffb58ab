-- Plans (issue #23): several streams caught up under one share of the day's
-- quota.  Against the fake with a small daily limit; "the next day" is the
-- quota ledger's day turning (today's count file removed, as midnight on
-- the operation's clock does).  Every day the plan spends at most its share;
-- it stops with exit 9 and goes on the next run; at the end every stream
-- holds exactly the rows of one uninterrupted sync; priorities first, turns
-- among equals, a failing stream never starves the others.  Tagged #db
-- (streams load into SQLite).
local support = require "support"
local pg = require "pg"

local q, sh = support.q, support.sh

describe("plans #db", function()
    if not pg.dbi("SQLite3") then
        pending("LuaDBI is not installed (Debian lua-dbi-sqlite3)")
        return
    end
    local srv, dir, token

    setup(function()
        srv = support.fake()
        token = srv.token
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

    local n = 0
    -- A fresh place for one test: its state directory and its files.
    local function place()
        n = n + 1
        local p = dir .. "/t" .. n
        sh("mkdir -p " .. q(p))
        return p
    end

    local function client(p, extra)
        local o = { state_dir = p .. "/state", daily_limit = 40, retries = 0 }
        for k, v in pairs(extra or {}) do
            o[k] = v
        end
        if o.daily_limit == false then
            o.daily_limit = nil -- unknown
        end
        return support.client(srv, o)
    end

    -- The day turns for the ledger of `p` (its count for today is gone).
    local function next_day(p)
        sh("find " .. q(p .. "/state") .. " -name 'calls-*' -delete")
    end

    local function query(db, sql)
        local code, out, err = sh("sqlite3 -batch " .. q(db) .. " " .. q(sql))
        assert(code == 0, tostring(err))
        return (out:gsub("\n$", ""))
    end

    -- Four streams: two of priority 10, two of 0 (one a file).
    local function four(p)
        local db = p .. "/plan.db"
        return { name = "four", share = 0.5, streams = {
            { name = "calls", endpoint = "cdr_1", since = "2026-01-01", ["until"] = "2026-09-30", into = db,
                priority = 10 },
            { name = "agents", endpoint = "agent_1", per = "day", since = "2026-09-01", ["until"] = "2026-09-20",
                into = db, priority = 10 },
            { name = "events", endpoint = "cdr_3", since = "2026-06-01", ["until"] = "2026-09-30", into = db },
            { name = "hits", endpoint = "agent_3", per = "day", since = "2026-09-10", ["until"] = "2026-09-20",
                output = p .. "/hits.csv", state = p .. "/hits.sync" },
        } }, db
    end

    it("backfills over days within its share, then every stream holds the rows of one uninterrupted sync", function()
        local p = place()
        local plan, db = four(p)
        local days, done, turns = 0, false, {}
        while not done do
            days = days + 1
            assert.is_true(days <= 6, "the backfill should end in a few days")
            local c = client(p)
            local before = requests()
            local sum = assert(c:run_plan(plan, { on_turn = function(t)
                turns[#turns + 1] = days .. ":" .. t.stream
            end }))
            c:close()
            local spent = requests() - before
            -- Never above the share of the day: 20 of 40.
            assert.is_true(spent <= 20, "day " .. days .. " spent " .. spent)
            if sum.stopped == "budget" then
                assert.equal(20, spent)
                next_day(p)
            else
                done = true
                for name, s in pairs(sum.streams) do
                    assert.is_true(s.done, name)
                    assert.is_nil(s.error, name)
                end
            end
        end
        assert.is_true(days >= 2, "a backlog larger than one day's share")
        -- The same streams, each by one uninterrupted sync without a plan.
        local ref = p .. "/ref.db"
        local c = client(p, { state_dir = false, daily_limit = 100000 })
        for _, s in ipairs(plan.streams) do
            local params = { since = s.since, ["until"] = s["until"], per = s.per }
            if s.into then
                assert(c:sync(s.endpoint, params, { into = ref, stream = s.name }))
            else
                params.state = p .. "/ref.sync"
                assert(c:sync(s.endpoint, params, { output = p .. "/ref.csv" }))
            end
        end
        c:close()
        for _, t in ipairs { { "cdr_1", "conn_id" }, { "agent_1", "_period_start, agent_id" },
                { "cdr_3", "conn_id" } } do
            local sql = "SELECT * FROM " .. t[1] .. " ORDER BY " .. t[2]
            assert.equal(query(ref, sql), query(db, sql), t[1])
        end
        assert.equal(support.slurp(p .. "/ref.csv"), support.slurp(p .. "/hits.csv"))
        -- Priorities: on the first day, no turn of priority 0 before the
        -- streams of priority 10 were done.
        local first_low
        for i, t in ipairs(turns) do
            if (t == "1:events" or t == "1:hits") and not first_low then
                first_low = i
            end
        end
        if first_low then
            for i = first_low, #turns do
                assert.is_nil(turns[i]:match("^1:calls$") or turns[i]:match("^1:agents$"), turns[i])
            end
        end
        -- Turns among equals: calls and agents alternate while both go on.
        assert.same({ "1:calls", "1:agents", "1:calls", "1:agents" }, { turns[1], turns[2], turns[3], turns[4] })
    end)

    it("a stream that keeps failing does not starve the others; it is reported, with its error", function()
        local p = place()
        local db = p .. "/fail.db"
        srv:control("config", { fixtures = { { match = "agent_1", status = 500,
            body = { code = 500, error = "broken", msg = "broken" } } } })
        local plan = { name = "failing", share = 1, streams = {
            { name = "broken", endpoint = "agent_1", per = "day", since = "2026-09-01", ["until"] = "2026-09-03",
                into = db, priority = 10 },
            { name = "calls", endpoint = "cdr_1", since = "2026-09-01", ["until"] = "2026-09-20", into = db },
        } }
        local c = client(p)
        local sum = assert(c:run_plan(plan))
        c:close()
        assert.equal("http", sum.streams.broken.error.kind)
        assert.is_true(sum.streams.calls.done)
        assert.is_true(tonumber(query(db, "SELECT count(*) FROM cdr_1")) > 0)
        local c2 = client(p)
        local st = require("wolkvox.job.plan").status(c2, require("wolkvox.job.plan").check(plan))
        c2:close()
        assert.equal("http", st.broken.last_error.kind)
        assert.is_number(st.calls.last_success)
    end)

    it("the plan file of docs/plans.md reads as a plan", function()
        local doc = assert(support.slurp("docs/plans.md"))
        local text = assert(doc:match("```ini\n(.-)```"))
        local plan = require("wolkvox.job.plan")
        local t = plan.check(plan.parse(text, "docs/plans.md"))
        assert.equal(0.5, t.share)
        assert.same({ "calls", "agents", "campaign" }, { t.streams[1].name, t.streams[2].name, t.streams[3].name })
        assert.equal("12", t.streams[3].params.campaign_id)
    end)

    it("a plan that cannot run is refused before any call, saying why", function()
        local p = place()
        local c = client(p)
        local before = requests()
        local ok_stream = { name = "a", endpoint = "cdr_1", since = "2026-01-01", into = p .. "/x.db" }
        local cases = {
            { { share = 0.5, streams = { { endpoint = "cdr1", since = "2026-01-01", into = p .. "/x.db" } } },
                "unknown endpoint 'cdr1' (did you mean 'cdr_1'" },
            { { share = 0.5, streams = { { endpoint = "skill_1", since = "2026-01-01", into = p .. "/x.db" } } },
                "needs the parameter skill_id" },
            { { share = 0, streams = { ok_stream } }, "share must be" },
            { { share = "150%", streams = { ok_stream } }, "share must be" },
            { { share = 0.5, streams = {} }, "at least one stream" },
            { { share = 0.5, streams = { ok_stream, ok_stream } }, "two streams are named a" },
            { { share = 0.5, streams = { { name = "f", endpoint = "cdr_1", output = p .. "/f.csv" } } },
                "needs state = PATH" },
            { { share = 0.5, streams = { { name = "f", endpoint = "cdr_1", into = p .. "/x.db",
                output = p .. "/f.csv" } } }, "give into" },
        }
        for _, case in ipairs(cases) do
            local r, err = c:run_plan(case[1])
            assert.is_nil(r)
            assert.equal("params", err.kind, tostring(err))
            assert.matches(case[2], err.message, 1, true)
        end
        c:close()
        -- Without the day's limit there is no share to keep to.
        local nolimit = client(p, { daily_limit = false })
        local r, err = nolimit:run_plan { share = 0.5, streams = { ok_stream } }
        nolimit:close()
        assert.is_nil(r)
        assert.matches("the day's limit is unknown", err.message, 1, true)
        assert.equal(before, requests())
        -- A plan file is data: a mistake names its line.
        support.spit(p .. "/bad.plan", "[plan]\nshare = 50%\n\n[stream a]\nendpoint = cdr_1\nsince 2026-01-01\n")
        local c3 = client(p)
        local r3, err3 = c3:run_plan(p .. "/bad.plan")
        c3:close()
        assert.is_nil(r3)
        assert.matches("bad.plan:6: expected key = value", err3.message, 1, true)
    end)

    describe("the command line #children", function()
        local function cli(argv, p)
            support.spit(p .. "/config", "[default]\ndaily_limit = 40\n")
            sh("chmod 600 " .. q(p .. "/config"))
            return support.wolkvox(srv, argv, { home = p, state_dir = p .. "/state",
                env = "WOLKVOX_CONFIG=" .. q(p .. "/config") })
        end

        it("sync --plan: --dry-run costs nothing, exit 9 at the share, the next day exit 0; status says it all",
            function()
                local p = place()
                support.spit(p .. "/nightly.plan", table.concat({
                    "# two streams into one SQLite file, half of the day's quota",
                    "[plan]", "share = 50%", "",
                    "[stream calls]", "endpoint = cdr_1", "since = 2026-01-01", "until = 2026-09-30",
                    "into = " .. p .. "/n.db", "priority = 10", "",
                    "[stream agents]", "endpoint = agent_1", "per = day", "since = 2026-09-01",
                    "until = 2026-09-20", "into = " .. p .. "/n.db", "" }, "\n"))
                local before = requests()
                local code, out, err = cli("sync --plan " .. q(p .. "/nightly.plan") .. " --dry-run", p)
                assert.equal(0, code, err)
                assert.matches("calls%s+reports_manager/cdr_1%s+9%s+1", out)
                assert.matches("agents%s+reports_manager/agent_1%s+20%s+%d", out)
                assert.matches("the plan's share is 20 of 40 calls a day: the backlog takes 2 days", out, 1, true)
                assert.equal(before, requests())
                code, out, err = cli("sync --plan " .. q(p .. "/nightly.plan"), p)
                assert.equal(9, code, err)
                assert.equal("", out)
                assert.matches("share of today's quota is spent", err, 1, true)
                assert.equal(20, requests() - before)
                local _, table_out = cli("status --plan " .. q(p .. "/nightly.plan"), p)
                assert.matches("plan nightly: share 50%% %(20 calls a day%), 20 kept for everything else, 0 left",
                    table_out)
                assert.matches("\ncalls%s+reports_manager/cdr_1%s+2026%-09%-30 23:59:59", table_out)
                next_day(p)
                code, out, err = cli("--metrics-file " .. q(p .. "/plan.prom") .. " sync --plan "
                    .. q(p .. "/nightly.plan"), p)
                assert.equal(0, code, err)
                assert.equal("", out)
                -- Each stream in the metrics, by its name.
                local prom = support.slurp(p .. "/plan.prom")
                for _, name in ipairs { "calls", "agents" } do
                    assert.matches('wolkvox_stream_watermark_timestamp_seconds{[^}]*stream="' .. name .. '"', prom)
                    assert.matches('wolkvox_stream_last_success_timestamp_seconds{[^}]*stream="' .. name .. '"', prom)
                end
                if os.execute("command -v promtool >/dev/null 2>&1") then
                    local pc, pout = sh("promtool check metrics < " .. q(p .. "/plan.prom") .. " 2>&1")
                    assert.equal(0, pc, pout)
                end
                assert.matches("agents: %d+ rows, %d+ calls, up to 2026%-09%-20 23:59:59, up to date", err)
                local _, js = cli("status --plan " .. q(p .. "/nightly.plan") .. " --format json", p)
                local st = require("cjson").decode(js)
                assert.equal("nightly", st.plan)
                assert.equal(2, #st.streams)
                for _, s in ipairs(st.streams) do
                    assert.is_true(s.up_to_date, s.stream)
                end
                -- Bad use: a report beside --plan, --state with it.
                assert.equal(2, (cli("sync cdr_1 --plan " .. q(p .. "/nightly.plan"), p)))
                assert.equal(2, (cli("sync --plan " .. q(p .. "/nightly.plan") .. " --state x", p)))
                assert.equal(2, (cli("sync", p)))
            end)

        it("a damaged or planted status file is read as far as it is sane and never stops the plan", function()
            local p = place()
            support.spit(p .. "/s.plan", "[plan]\nname = s\nshare = 50%\n[stream calls]\nendpoint = cdr_1\n"
                .. "since = 2026-09-28\nuntil = 2026-09-30\ninto = " .. p .. "/s.db\n")
            sh("mkdir -p " .. q(p .. "/state/plans"))
            local status = p .. "/state/plans/s.json"
            local planted = {
                '{"calls": 5}', '{"calls": "x"}', '[1, 2, 3]', '"just text"', "{not json",
                '{"calls": {"rows": "many", "calls": [], "day": 7, "watermark": "yesterday", '
                    .. '"last_error": {"a": 1}, "up_to_date": "yes"}}',
                '{"calls": {"watermark": "garbage"}, "ghost": {"rows": 1}}',
                '{"calls": {"last_error": {"kind": 5, "message": {}}}}',
                '{"calls": {"last_error": "a string"}}',
            }
            local before = requests()
            for _, text in ipairs(planted) do
                support.spit(status, text)
                local code, out, err = cli("status --plan " .. q(p .. "/s.plan"), p)
                assert.equal(0, code, text .. ": " .. err)
                assert.matches("calls%s+reports_manager/cdr_1", out)
                code, out, err = cli("sync --plan " .. q(p .. "/s.plan") .. " --dry-run", p)
                assert.equal(0, code, text .. ": " .. err)
                assert.matches("calls%s+reports_manager/cdr_1", out)
            end
            assert.equal(before, requests())
            -- A run over a planted status writes a sane one in its place.
            local code, _, err = cli("sync --plan " .. q(p .. "/s.plan"), p)
            assert.equal(0, code, err)
            local _, js = cli("status --plan " .. q(p .. "/s.plan") .. " --format json", p)
            local st = require("cjson").decode(js)
            assert.equal(1, #st.streams)
            assert.equal("calls", st.streams[1].stream)
            assert.is_true(st.streams[1].up_to_date)
            assert.matches("^2026%-09%-30", st.streams[1].watermark)
        end)

        it("fleet mode: two hosts running the same plan at once never spend more than its share #slow", function()
            local redis = require "redis"
            if not redis.binary() or not redis.client_built() then
                pending("redis-server or wolkvox.redis is missing (tools/install-deps, make)")
                return
            end
            local rs = redis.start()
            finally(function() rs:stop() end)
            srv:control("config", { latency = 0.1 })
            local pids, before = {}, requests()
            for h = 1, 2 do
                local p = place()
                support.spit(p .. "/fleet.plan", "[plan]\nname = fleet\nshare = 50%\n[stream calls]\n"
                    .. "endpoint = cdr_1\nsince = 2025-06-01\nuntil = 2026-09-30\ninto = " .. p .. "/h.db\n")
                support.spit(p .. "/config", "[default]\ndaily_limit = 40\n")
                sh("chmod 600 " .. q(p .. "/config"))
                local pp = io.popen("env -u LD_PRELOAD HOME=" .. q(p) .. " WOLKVOX_CONFIG=" .. q(p .. "/config")
                    .. " WOLKVOX_TOKEN=" .. token .. " " .. support.timed("lua5.4 bin/wolkvox --base-url " .. srv.url
                    .. " --redis " .. rs.url .. " --state-dir " .. q(p .. "/state") .. " sync --plan "
                    .. q(p .. "/fleet.plan"), 120) .. " >/dev/null 2>&1; echo $? > " .. q(p .. "/rc") .. " & echo $!")
                pids[h] = { pid = tonumber(pp:read("*l")), dir = p }
                pp:close()
            end
            for _, h in ipairs(pids) do
                support.wait_for(function() return support.slurp(h.dir .. "/rc") end, 120, "a host's plan to end")
            end
            srv:control("config", { latency = 0 })
            -- 2 x 16 windows of backlog; together they stop at the share
            -- (one may finish its own 16 and exit 0; the other exits 9).
            assert.equal(20, requests() - before)
            local codes = {}
            for _, h in ipairs(pids) do
                codes[#codes + 1] = tonumber(support.slurp(h.dir .. "/rc"):match("%d+"))
            end
            table.sort(codes)
            assert.is_true((codes[1] == 0 or codes[1] == 9) and codes[2] == 9, table.concat(codes, ","))
        end)

        it("Ctrl-C in the middle of a plan: exit 130, and the rerun ends with the rows of one run", function()
            local p = place()
            local db = p .. "/int.db"
            support.spit(p .. "/int.plan", "[plan]\nshare = 100%\n[stream calls]\nendpoint = cdr_1\n"
                .. "since = 2026-01-01\nuntil = 2026-06-30\ninto = " .. db .. "\n")
            support.spit(p .. "/config", "[default]\ndaily_limit = 40\n")
            sh("chmod 600 " .. q(p .. "/config"))
            srv:control("config", { latency = 0.3 })
            -- Its pid in `pid`, its exit status in `rc` once it ends.
            os.execute("(env -u LD_PRELOAD HOME=" .. q(p) .. " WOLKVOX_CONFIG=" .. q(p .. "/config")
                .. " WOLKVOX_TOKEN=" .. token .. " lua5.4 bin/wolkvox --base-url " .. srv.url .. " --state-dir "
                .. q(p .. "/state") .. " sync --plan " .. q(p .. "/int.plan") .. " >/dev/null 2>&1 & echo $! > "
                .. q(p .. "/pid") .. "; wait $!; echo $? > " .. q(p .. "/rc") .. ") &")
            local pid = support.wait_for(function() return tonumber(support.slurp(p .. "/pid") or "") end, 30,
                "the plan's pid")
            support.wait_for(function()
                local _, loads = sh("sqlite3 -cmd '.timeout 2000' " .. q(db)
                    .. " 'SELECT count(*) FROM _wolkvox_loads'")
                return tonumber(loads) and tonumber(loads) >= 2
            end, 60, "2 windows of the plan in the database")
            os.execute("kill -INT " .. pid)
            local rc = support.wait_for(function() return tonumber(support.slurp(p .. "/rc") or "") end, 30,
                "the interrupted plan to end")
            assert.equal(130, rc)
            srv:control("config", { latency = 0 })
            -- Nothing half loaded, no lock left: the rerun finishes it.
            local code, _, err = cli("sync --plan " .. q(p .. "/int.plan"), p)
            assert.equal(0, code, err)
            local c = client(p, { state_dir = false, daily_limit = 100000 })
            assert(c:sync("cdr_1", { since = "2026-01-01", ["until"] = "2026-06-30" },
                { into = p .. "/ref.db" }))
            c:close()
            local sql = "SELECT * FROM cdr_1 ORDER BY conn_id"
            assert.equal(query(p .. "/ref.db", sql), query(db, sql))
        end)

        it("two runs of one plan at once: the second exits 8 and spends nothing", function()
            local p = place()
            support.spit(p .. "/slow.plan", "[plan]\nshare = 100%\n[stream calls]\nendpoint = cdr_1\n"
                .. "since = 2026-01-01\nuntil = 2026-06-30\ninto = " .. p .. "/s.db\n")
            srv:control("config", { latency = 0.4 })
            support.spit(p .. "/config", "[default]\ndaily_limit = 40\n")
            sh("chmod 600 " .. q(p .. "/config"))
            local pp = io.popen("env -u LD_PRELOAD HOME=" .. q(p) .. " WOLKVOX_CONFIG=" .. q(p .. "/config")
                .. " WOLKVOX_TOKEN=" .. token .. " lua5.4 bin/wolkvox --base-url " .. srv.url .. " --state-dir "
                .. q(p .. "/state") .. " sync --plan " .. q(p .. "/slow.plan") .. " >/dev/null 2>&1 & echo $!")
            local pid = tonumber(pp:read("*l"))
            pp:close()
            support.wait_for(function() return requests() >= 1 end, 30, "the first run's first call")
            local before = requests()
            local code, _, err = cli("sync --plan " .. q(p .. "/slow.plan"), p)
            assert.equal(8, code, err)
            assert.matches("another run of this plan", err, 1, true)
            assert.is_true(requests() - before <= 2) -- (the first run's own next calls)
            srv:control("config", { latency = 0 })
            support.wait_for(function() return not support.alive(pid) end, 60, "the first run to end")
        end)
    end)
end)
