-- Metrics for Prometheus (issue #23): the client's counters by endpoint and
-- outcome after real calls against the fake, the exposition text
-- (wolkvox.out.metrics: names, escaping, parsing back), the textfile written
-- atomically and added to run after run, and the command line's
-- --metrics-file after report and sync, checked with promtool when it is
-- installed (Debian package prometheus).
local support = require "support"
local metrics = require "wolkvox.out.metrics"

local TOKEN = "metrics-secret-token-9c1e"
local q = support.q

local function have_promtool()
    local code = support.sh("command -v promtool")
    return code == 0
end

-- promtool's verdict on `text`: exit status and what it said (lint
-- complaints included).
local function promtool(text)
    local path = os.tmpname()
    support.spit(path, text)
    local p = io.popen("promtool check metrics < " .. q(path) .. " 2>&1; echo \"rc=$?\"")
    local out = p:read("*a")
    p:close()
    os.remove(path)
    return tonumber(out:match("rc=(%d+)%s*$")), (out:gsub("rc=%d+%s*$", ""))
end

local function check_with_promtool(text)
    if not have_promtool() then
        pending("promtool is not installed (Debian package prometheus; tools/install-deps installs it)")
        return
    end
    local rc, said = promtool(text)
    assert.equal(0, rc, said)
    assert.equal("", said)
end

local value = support.metric

local function entries(dir)
    local p = io.popen("ls -A " .. q(dir))
    local out = {}
    for name in p:lines() do
        out[#out + 1] = name
    end
    p:close()
    table.sort(out)
    return out
end

describe("metrics", function()
    local srv
    setup(function()
        srv = support.fake { tokens = { TOKEN }, rows_per_day = 20 }
    end)
    teardown(function()
        srv:stop()
    end)
    before_each(function()
        srv:control("reset")
    end)

    local function client(extra)
        local o = { base_url = srv.url, token = TOKEN, state_dir = support.tmpdir(), retry_base = 0.01,
            retry_cap = 0.01 }
        for k, v in pairs(extra or {}) do
            o[k] = v
        end
        return assert(require("wolkvox").new(o))
    end

    describe("c:stats()", function()
        it("counts calls by endpoint and outcome where their result is known", function()
            local c = client()
            assert(c:services())
            support.faults(srv, { { match = "routing_points", forbidden = "quota" } })
            local rows, err = c:routing_points()
            assert.is_nil(rows)
            assert.equal("quota", err.kind)
            -- A refusal before sending costs no call and is no outcome.
            local before = c:stats().calls
            rows, err = c:routing_points { no_such_parameter = "1" }
            assert.is_nil(rows)
            assert.equal("params", err.kind)
            assert.equal(before, c:stats().calls)
            -- A retried 500: the failed attempt and the good one both count.
            support.faults(srv, { { match = "cdr_1", status = 500 } })
            local got = assert(c:cdr_1 { from = "2026-01-01", to = "2026-01-03" })
            local s = c:stats()
            assert.same({
                ["information/services"] = { ok = 1 },
                ["information/routing_points"] = { quota = 1 },
                ["reports_manager/cdr_1"] = { http = 1, ok = 1 },
            }, s.by_endpoint)
            assert.equal(4, s.calls)
            assert.equal(1, s.retries)
            assert.equal(0, s.in_flight)
            assert.is_true(s.rows >= #got + 1)   -- services' rows too
            assert.equal(4, s.quota.used)
            assert.equal(4, s.quota_used)
            -- The counts are the client's own copy: changing them changes nothing.
            s.by_endpoint["information/services"].ok = 99
            assert.equal(1, c:stats().by_endpoint["information/services"].ok)
            -- Still readable after close (a run reports what it did at its end).
            c:close()
            s = c:stats()
            assert.equal(4, s.calls)
            assert.is_true(s.bytes > 0)
            assert.equal(4, s.quota.used)
        end)

        it("counts a call's calls in flight while it runs", function()
            local c = client()
            local seen = 0
            assert(c:cdr_1({ from = "2026-01-01", to = "2026-03-31" }))
            for _ in c:each("cdr_1", { from = "2026-01-01", to = "2026-03-31" }) do
                seen = math.max(seen, c:stats().in_flight)
            end
            assert.is_true(seen >= 1)
            assert.equal(0, c:stats().in_flight)
            c:close()
        end)
    end)

    describe("the exposition text", function()
        it("names counters _total, gives HELP and TYPE, and escapes label values", function()
            local weird = "fam\"ily/a\\pi\nx"
            local text = metrics.render({
                stats = { by_endpoint = { [weird] = { ["k\"ind\\"] = 2 }, ["information/services"] = { ok = 1 } },
                    retries = 1, bytes = 10, rows = 3, in_flight = 0, throttled = 0 },
                quota = { used = 10, remaining = 990, limit = 1000 },
            }, { now = 1000 })
            assert.truthy(text:find('wolkvox_calls_total{endpoint="fam\\"ily/a\\\\pi\\nx",outcome="k\\"ind\\\\"} 2\n',
                1, true), text)
            assert.truthy(text:find("# TYPE wolkvox_calls_total counter\n", 1, true))
            assert.truthy(text:find("# HELP wolkvox_quota_limit_calls ", 1, true))
            assert.equal(1000, value(text, "wolkvox_quota_limit_calls"))
            -- parse gives the labels back as they were
            assert.equal(2, value(text, "wolkvox_calls_total", { endpoint = weird, outcome = "k\"ind\\" }))
            assert.equal("\n", text:sub(-1))
            check_with_promtool(text)
        end)

        it("leaves out a daily limit that is unknown, and says each stream's freshness", function()
            local text = metrics.render({
                quota = { used = 5 },
                streams = { { name = "cdr", endpoint = "reports_manager/cdr_1", watermark = 1000, rows = 7,
                    last_success = 1500, calls_today = 3 },
                    { name = "chat", endpoint = "reports_manager/chat_1", last_error = "quota" } },
            }, { now = 4600, labels = { task = "nightly" } })
            assert.is_nil(text:find("wolkvox_quota_limit_calls", 1, true))
            assert.is_nil(text:find("wolkvox_quota_remaining_calls", 1, true))
            assert.equal(5, value(text, "wolkvox_quota_used_calls", { task = "nightly" }))
            assert.equal(3600, value(text, "wolkvox_stream_lag_seconds", { stream = "cdr" }))
            assert.equal(1000, value(text, "wolkvox_stream_watermark_timestamp_seconds", { stream = "cdr" }))
            assert.equal(7, value(text, "wolkvox_stream_rows_total", { stream = "cdr" }))
            assert.equal(1, value(text, "wolkvox_stream_last_run_outcome", { stream = "chat", outcome = "quota" }))
            assert.equal(1, value(text, "wolkvox_stream_last_run_outcome", { stream = "cdr", outcome = "ok" }))
            assert.is_nil(value(text, "wolkvox_stream_watermark_timestamp_seconds", { stream = "chat" }))
            check_with_promtool(text)
        end)
    end)

    describe("the textfile", function()
        it("is replaced whole: a new file renamed over the old, no temporary file left", function()
            local dir = support.tmpdir()
            local path = dir .. "/wolkvox.prom"
            assert(metrics.write_textfile(path, "a 1\n"))
            local inode = select(2, support.sh("stat -c %i " .. q(path)))
            assert(metrics.write_textfile(path, "a 2\n"))
            assert.equal("a 2\n", support.slurp(path))
            assert.are_not.equal(inode, select(2, support.sh("stat -c %i " .. q(path))))   -- renamed, not rewritten
            assert.same({ "wolkvox.prom" }, entries(dir))
            -- made 0666 less the umask, as the shell's > does: the collector, another user, reads it
            local mode = select(2, support.sh("stat -c %a " .. q(path))):match("%d+")
            local ref = select(2, support.sh(": > " .. q(dir .. "/ref") .. "; stat -c %a " .. q(dir .. "/ref")
                .. "; rm " .. q(dir .. "/ref"))):match("%d+")
            assert.equal(ref, mode)
        end)

        it("is a clear error when its directory is missing, leaving nothing", function()
            local dir = support.tmpdir()
            local ok, err = metrics.write_textfile(dir .. "/missing/wolkvox.prom", "a 1\n")
            assert.is_nil(ok)
            assert.equal("output", err.kind)
            assert.truthy(tostring(err):find("does not exist", 1, true), tostring(err))
            ok, err = metrics.write_textfile(dir, "a 1\n")
            assert.is_nil(ok)
            assert.truthy(tostring(err):find("is a directory", 1, true), tostring(err))
            assert.same({}, entries(dir))
        end)

        it("adds each run's counters to the file's and keeps a failed stream's watermark", function()
            local path = support.tmpdir() .. "/sync.prom"
            local stream = { name = "cdr", endpoint = "reports_manager/cdr_1", watermark = 1000, rows = 5,
                last_success = 1100 }
            assert(metrics.update_textfile(path, { stats = { by_endpoint = { ["reports_manager/cdr_1"] = { ok = 2 } },
                retries = 1 }, streams = { stream } }, { now = 1200, labels = { task = "sync" } }))
            local failed = { name = "cdr", endpoint = "reports_manager/cdr_1", rows = 0, last_error = "quota" }
            assert(metrics.update_textfile(path, { stats = {
                by_endpoint = { ["reports_manager/cdr_1"] = { quota = 1 } }, retries = 0 }, streams = { failed } },
                { now = 1300, labels = { task = "sync" } }))
            local text = support.slurp(path)
            assert.equal(2, value(text, "wolkvox_calls_total", { outcome = "ok" }))
            assert.equal(1, value(text, "wolkvox_calls_total", { outcome = "quota" }))
            assert.equal(1, value(text, "wolkvox_retries_total"))
            assert.equal(5, value(text, "wolkvox_stream_rows_total"))
            assert.equal(1000, value(text, "wolkvox_stream_watermark_timestamp_seconds"))
            assert.equal(300, value(text, "wolkvox_stream_lag_seconds"))
            assert.equal(1100, value(text, "wolkvox_stream_last_success_timestamp_seconds"))
            assert.equal(1, value(text, "wolkvox_stream_last_run_outcome", { outcome = "quota" }))
            assert.is_nil(value(text, "wolkvox_stream_last_run_outcome", { outcome = "ok" }))
            check_with_promtool(text)
        end)
    end)

    describe("wolkvox --metrics-file", function()
        local home, state

        local function run(argv)
            local out, err = os.tmpname(), os.tmpname()
            local cmd = table.concat({ "env -u LD_PRELOAD -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE -u WOLKVOX_SERVER",
                "HOME=" .. q(home), "XDG_CONFIG_HOME=" .. q(home .. "/.config"), "WOLKVOX_TOKEN=" .. q(TOKEN),
                "lua5.4 bin/wolkvox --base-url " .. q(srv.url) .. " --state-dir " .. q(state) .. " " .. argv,
                ">" .. out, "2>" .. err }, " ")
            local p = io.popen("{ " .. cmd .. "; } ; echo $?")
            local code = tonumber(p:read("*a"):match("(%d+)%s*$"))
            p:close()
            local o, e = support.slurp(out), support.slurp(err)
            os.remove(out)
            os.remove(err)
            return code, o, e
        end

        before_each(function()
            home, state = support.tmpdir(), support.tmpdir()
        end)

        it("writes the run's metrics after a report, without the token", function()
            local dir = support.tmpdir()
            local prom = dir .. "/nightly.prom"
            local code, _, err = run("--metrics-file " .. q(prom) .. " report cdr_1 --from 2026-01-01 --to 2026-02-15"
                .. " --output " .. q(dir .. "/cdr.csv"))
            assert.equal(0, code, err)
            local text = support.slurp(prom)
            assert.equal(2, value(text, "wolkvox_calls_total",
                { endpoint = "reports_manager/cdr_1", outcome = "ok", task = "nightly" }))
            assert.equal(2, value(text, "wolkvox_quota_used_calls"))
            assert.equal(920, value(text, "wolkvox_rows_total"))
            assert.is_nil(text:find(TOKEN, 1, true))
            assert.same({ "cdr.csv", "nightly.prom" }, entries(dir))
            -- the next run adds to the counters
            code = run("--metrics-file " .. q(prom) .. " report cdr_1 --from 2026-01-01 --to 2026-01-02 --output "
                .. q(dir .. "/cdr2.csv"))
            assert.equal(0, code)
            text = support.slurp(prom)
            assert.equal(3, value(text, "wolkvox_calls_total", { outcome = "ok" }))
            assert.equal(3, value(text, "wolkvox_quota_used_calls"))
            check_with_promtool(text)
        end)

        it("says a sync's stream: watermark in UTC, rows, last success, outcome; a failed run keeps them", function()
            local dir = support.tmpdir()
            local prom = dir .. "/cdr-sync.prom"
            local sync = " sync cdr_1 --state " .. q(dir .. "/cdr.sync") .. " --since 2026-01-01 --until 2026-01-10"
            local code, _, err = run("--metrics-file " .. q(prom) .. sync .. " --output " .. q(dir .. "/cdr.csv"))
            assert.equal(0, code, err)
            local text = support.slurp(prom)
            local labels = { stream = "cdr", endpoint = "reports_manager/cdr_1", task = "cdr-sync" }
            -- "2026-01-10 23:59:59" at -05:00 (the default operation clock)
            assert.equal(os.time { year = 2026, month = 1, day = 11, hour = 4, min = 59, sec = 59, isdst = false }
                - os.time { year = 1970, month = 1, day = 1, hour = 0, isdst = false },
                value(text, "wolkvox_stream_watermark_timestamp_seconds", labels))
            assert.equal(200, value(text, "wolkvox_stream_rows_total", labels))
            local success = value(text, "wolkvox_stream_last_success_timestamp_seconds", labels)
            assert.is_true(math.abs(os.time() - success) < 60)
            assert.equal(1, value(text, "wolkvox_stream_last_run_outcome",
                { stream = "cdr", outcome = "ok" }))
            assert.is_nil(text:find(TOKEN, 1, true))
            check_with_promtool(text)

            -- The next run meets the quota: exit 4, the stream says so and keeps its watermark.
            support.faults(srv, { { match = "cdr_1", forbidden = "quota" } })
            code = run("--metrics-file " .. q(prom) .. " sync cdr_1 --state " .. q(dir .. "/cdr.sync")
                .. " --until 2026-01-20 --output " .. q(dir .. "/cdr2.csv"))
            assert.equal(4, code)
            text = support.slurp(prom)
            assert.equal(1, value(text, "wolkvox_stream_last_run_outcome", { stream = "cdr", outcome = "quota" }))
            assert.is_nil(value(text, "wolkvox_stream_last_run_outcome", { stream = "cdr", outcome = "ok" }))
            assert.equal(success, value(text, "wolkvox_stream_last_success_timestamp_seconds", labels))
            assert.is_not_nil(value(text, "wolkvox_stream_watermark_timestamp_seconds", labels))
            assert.equal(1, value(text, "wolkvox_calls_total", { outcome = "quota" }))
            assert.equal(1, value(text, "wolkvox_calls_total", { outcome = "ok" }))
            check_with_promtool(text)
        end)

        it("exits 1 when a run that succeeded cannot write them; a failed run keeps its code", function()
            local dir = support.tmpdir()
            local missing = q(dir .. "/no/such/dir/x.prom")
            local code, _, err = run("--metrics-file " .. missing .. " call information services")
            assert.equal(1, code)
            assert.truthy(err:find("cannot write the metrics", 1, true), err)
            assert.truthy(err:find("does not exist", 1, true), err)
            support.faults(srv, { { match = "services", forbidden = "quota" } })
            code = run("--metrics-file " .. missing .. " call information services")
            assert.equal(4, code)
        end)
    end)
end)
