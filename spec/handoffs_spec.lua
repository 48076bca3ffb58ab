-- Where rows leave the process (issue #19): `sync --append` never removes
-- bytes it did not write, a range not yet over is said, relative dates are
-- read on the operation's clock, local paths are checked before any call,
-- a full disk or a kill while appending ends with every row exactly once,
-- and nothing is left behind (lock files, hidden temporary files).  Driven
-- through bin/wolkvox against the fake, as a user runs it.
local support = require "support"
local core = require "wolkvox.core"
local dates = require "wolkvox.dates"

local TOKEN -- the fake's own
local BOGOTA = -5 * 3600 -- the options' default utc_offset

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local slurp, spit = support.slurp, support.spit

local sh = support.sh

describe("hand-offs", function()
    local srv, dir, state

    setup(function()
        srv = support.fake()
        TOKEN = srv.token
        dir = support.tmpdir()
        state = dir .. "/pacing"
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
    local function run(argv, pacing)
        return support.wolkvox(srv, argv, { home = dir, state_dir = pacing or state })
    end

    local function report(from, to)
        local code, out, err = run("report cdr_1 --from " .. q(from) .. " --to " .. q(to))
        assert.equal(0, code, err)
        return out
    end

    describe("sync --append", function()
        it("refuses a file that no state vouches for (exit 2, no call), and never empties it", function()
            local nov = dir .. "/nov.csv"
            assert.equal(0, (run("report cdr_1 --from 2026-01-01 --to 2026-01-05 -o " .. q(nov))))
            local before = slurp(nov)
            local calls = requests()
            local code, _, err = run("sync cdr_1 --state " .. q(dir .. "/nov.sync") .. " --since 2026-01-06 "
                .. "--until 2026-01-07 -o " .. q(nov) .. " --append")
            assert.equal(2, code, err)
            assert.matches("no state of this sync vouches for", err, 1, true)
            assert.matches("move the file aside", err, 1, true)
            assert.equal(calls, requests())
            assert.equal(before, slurp(nov))
        end)

        it("refuses once its state is removed, and a line added by hand is never cut", function()
            local out, st = dir .. "/grow.csv", dir .. "/grow.sync"
            local base = "sync cdr_1 --state " .. q(st) .. " -o " .. q(out) .. " --append --force "
            assert.equal(0, (run(base .. "--since 2026-01-01 --until 2026-01-02")))
            local after1 = slurp(out)
            -- A person adds a line after the run: the next run refuses, cuts nothing.
            spit(out, after1, "a line added by hand\n")
            local calls = requests()
            local code, _, err = run(base .. "--until 2026-01-03")
            assert.equal(2, code, err)
            assert.matches("bytes were added after the last run", err, 1, true)
            assert.equal(after1 .. "a line added by hand\n", slurp(out))
            assert.equal(calls, requests())
            -- The same bytes count, other content (the file replaced): refused.
            spit(out, (after1:gsub("2026", "2027")))
            code, _, err = run(base .. "--until 2026-01-03")
            assert.equal(2, code, err)
            assert.matches("not what the sync state vouches for", err, 1, true)
            -- Back as it was, the state removed (as a message once advised): refused too.
            spit(out, after1)
            os.remove(st)
            code, _, err = run(base .. "--since 2026-01-03 --until 2026-01-03")
            assert.equal(2, code, err)
            assert.equal(after1, slurp(out))
            assert.equal(calls, requests())
        end)

        it("killed while appending (kill -9), the rerun delivers every row exactly once #slow", function()
            local want = report("2026-01-01", "2026-06-30")
            for i, seen in ipairs { 1, 3 } do
                srv:control("reset")
                srv:control("config", { latency = 0.2 })
                local out, st = dir .. "/k" .. i .. ".csv", dir .. "/k" .. i .. ".sync"
                local argv = "sync cdr_1 --state " .. q(st) .. " --since 2026-01-01 --until 2026-06-30 -o " .. q(out)
                    .. " --append --force max_concurrent=1"
                local pacing = dir .. "/pacing-killed" .. i
                local p = io.popen("env -u LD_PRELOAD HOME=" .. q(dir) .. " WOLKVOX_TOKEN=" .. TOKEN
                    .. " lua5.4 bin/wolkvox --base-url " .. srv.url .. " --state-dir " .. q(pacing)
                    .. " " .. argv .. " >/dev/null 2>&1 & echo $!")
                local pid = tonumber(p:read("*l"))
                p:close()
                support.wait_for(function() return requests() >= seen end, 60,
                    "the fake to see " .. seen .. " calls of the sync")
                -- (a pause on purpose, not a wait for a state: the kill lands
                -- 0.1 s on, inside the next transfer, or writing a window)
                core.sleep(0.1)
                os.execute("kill -9 " .. pid)
                support.wait_for(function() return not support.alive(pid) end, 10, "the killed sync to be gone")
                -- Killed while appending, the state says so (pending): what
                -- follows the bytes it vouches for is this sync's own half
                -- write, which the rerun cuts (a half row, made sure of here).
                local saved = core.decode(slurp(st))
                assert.is_true(saved.pending, "the state says a run was appending")
                local f = assert(io.open(out, "ab"))
                f:write("agent_name 9,2026-0")
                f:close()
                srv:control("config", { latency = 0 })
                -- The rerun paces with a state of its own: the killed run's
                -- abandoned call keeps its slot in the old one for up to the
                -- call timeout (what wolkvox may still be running).
                local code, _, err = run(argv, dir .. "/pacing-k" .. i)
                assert.equal(0, code, err)
                assert.equal(want, slurp(out))
                assert.is_nil(slurp(st .. ".lock"))
            end
        end)

        it("on a full disk exits 1, and once there is room the next run delivers every row exactly once", function()
            local disk = support.disk("size=300k", false, finally, pending)
            if not disk then
                return
            end
            local out, st = disk .. "/full.csv", disk .. "/full.sync"
            local argv = "sync cdr_1 --state " .. q(st) .. " --since 2026-01-01 --until 2026-06-30 -o " .. q(out)
                .. " --append --force"
            local c1, _, err = run(argv)
            assert.equal(1, c1, err)
            assert.matches("No space left", err, 1, true)
            sh("mount -o remount,size=16m " .. q(disk))
            local c2, _, err2 = run(argv)
            assert.equal(0, c2, err2)
            local got = slurp(out)
            assert.equal(report("2026-01-01", "2026-06-30"), got)
        end)

        it("when there is nothing to fetch, the output a script expects still exists", function()
            local out, st = dir .. "/none.csv", dir .. "/none.sync"
            assert.equal(0, (run("sync cdr_1 --state " .. q(st) .. " --since 2026-01-01 --until 2026-01-02 -o "
                .. q(out))))
            os.remove(out)
            local calls = requests()
            local code, _, err = run("sync cdr_1 --state " .. q(st) .. " --until 2026-01-02 -o " .. q(out))
            assert.equal(0, code, err)
            assert.equal(calls, requests())
            local text = slurp(out)
            assert.is_truthy(text, "no output file")
            assert.equal(1, select(2, text:gsub("\n", ""))) -- the header alone
        end)
    end)

    describe("time not yet over", function()
        it("a range that ends after now on the operation's clock is said (CLI warning, meta.open)", function()
            local code, _, err = run("report cdr_1 --from today --to today")
            assert.equal(0, code, err)
            assert.matches("warning: the range ends at", err, 1, true)
            assert.matches("later than now on the operation's clock", err, 1, true)
            code, _, err = run("report cdr_1 --from yesterday --to yesterday")
            assert.equal(0, code, err)
            assert.is_nil(err:find("warning", 1, true))
            local c = support.client(srv)
            local _, meta = assert(c:report("cdr_1", { from = "today", to = "today" }))
            assert.matches("later than now", meta.open, 1, true)
            local _, closed = assert(c:report("cdr_1", { from = "2026-01-01", to = "2026-01-01" }))
            assert.is_nil(closed.open)
            c:close()
        end)

        it("relative dates are read on the operation's clock, not the machine's", function()
            local now = dates.now(BOGOTA)
            local y0 = dates.iso(dates.relative("yesterday", false, now))
            local y1 = dates.iso(dates.relative("yesterday", true, now))
            assert.equal(report(y0, y1), report("yesterday", "yesterday"))
            local m0 = dates.iso(dates.relative("last-month", false, now))
            local m1 = dates.iso(dates.relative("last-month", true, now))
            local code, out = run("report cdr_1 --from last-month --to last-month --dry-run")
            assert.equal(0, code, out)
            assert.matches(m0:sub(1, 10), out, 1, true)
            assert.matches(m1:sub(1, 10), out, 1, true)
            -- `wolkvox date` names the same days, for file names in cron lines.
            local dc, dout = run("date yesterday")
            assert.equal(0, dc)
            assert.equal(y0:sub(1, 10) .. "\n", dout)
            dc, dout = run("date last-month --end")
            assert.equal(0, dc)
            assert.equal(m1:sub(1, 10) .. "\n", dout)
            -- "-7d" reads as a date, not as an option.
            local d7 = dates.iso(dates.relative("-7d", false, now))
            dc, dout = run("date -7d")
            assert.equal(0, dc, dout)
            assert.equal(d7:sub(1, 10) .. "\n", dout)
            dc, dout = run("report cdr_1 --from -7d --to yesterday --dry-run")
            assert.equal(0, dc, dout)
            assert.matches(d7, dout, 1, true)
            -- Under the machine's TZ of Tokyo the words still mean Bogota's days.
            local code2, out2 = sh("env -u LD_PRELOAD TZ=Asia/Tokyo WOLKVOX_TOKEN=" .. TOKEN .. " lua5.4 bin/wolkvox "
                .. "--base-url " .. srv.url .. " --state-dir " .. q(state) .. " report cdr_1 --from yesterday "
                .. "--to yesterday --dry-run")
            assert.equal(0, code2, out2)
            assert.matches(y0, out2, 1, true)
        end)

        it("the calendar: November to December, 29 February, weeks from Monday", function()
            local nov30 = dates.parse("2026-12-01 09:00:00")
            assert.equal("2026-11-01 00:00:00", dates.iso(dates.relative("last-month", false, nov30)))
            assert.equal("2026-11-30 23:59:59", dates.iso(dates.relative("last-month", true, nov30)))
            assert.equal("2026-11-30 00:00:00", dates.iso(dates.relative("yesterday", false, nov30)))
            local jan = dates.parse("2027-01-10 00:00:00")
            assert.equal("2026-12-01 00:00:00", dates.iso(dates.relative("last-month", false, jan)))
            assert.equal("2028-02-29 23:59:59", dates.iso(dates.relative("last-month", true,
                dates.parse("2028-03-01"))))
            assert.equal("2027-02-28 23:59:59", dates.iso(dates.relative("last-month", true,
                dates.parse("2027-03-31"))))
            assert.equal("2100-02-28 23:59:59", dates.iso(dates.relative("last-month", true,
                dates.parse("2100-03-15"))))
            -- 2026-12-06 is a Sunday: its week began on Monday 30 November.
            assert.equal("2026-11-30 00:00:00", dates.iso(dates.relative("this-week", false,
                dates.parse("2026-12-06 23:00"))))
            assert.equal("2026-11-29 00:00:00", dates.iso(dates.relative("-7d", false,
                dates.parse("2026-12-06 23:00"))))
            assert.is_nil(dates.relative("next-month", false, jan))
            assert.is_nil((dates.parse("someday")))
        end)
    end)

    describe("local paths are checked before any call", function()
        it("an output that is a directory, a missing directory for the output, the state or the checkpoint: "
            .. "exit 1, no call", function()
            os.execute("mkdir -p " .. q(dir .. "/adir"))
            local six = "report cdr_1 --from 2026-01-01 --to 2026-06-30 "
            for _, case in ipairs {
                { six .. "-o " .. q(dir .. "/adir"), "is a directory" },
                { six .. "-o " .. q(dir .. "/no/such/out.csv"), "does not exist" },
                { six .. "-o " .. q(dir .. "/ok.csv") .. " --checkpoint " .. q(dir .. "/no/x.ckpt"), "does not exist" },
                { "sync cdr_1 --since 2026-01-01 --state " .. q(dir .. "/no/s.sync"), "does not exist" },
                { "sync cdr_1 --since 2026-01-01 --state " .. q(dir .. "/adir"), "is a directory" },
            } do
                local calls = requests()
                local code, _, err = run(case[1])
                assert.equal(1, code, case[1] .. ": " .. err)
                assert.matches(case[2], err, 1, true)
                assert.equal(calls, requests(), case[1])
            end
            assert.is_nil(slurp(dir .. "/ok.csv"))
        end)
    end)

    describe("a rerun after a kill", function()
        it("says on its progress line that it waits for the abandoned call's slot, and until when #slow", function()
            local has = os.execute("command -v script >/dev/null 2>&1")
            if not (has == true or has == 0) then
                pending("script (util-linux) is not installed")
                return
            end
            local config, pacing = dir .. "/limit.ini", dir .. "/pacing-abandoned"
            spit(config, "[default]\nserver_limit = 4\n")
            os.execute("chmod 600 " .. q(config))
            local base = "env -u LD_PRELOAD HOME=" .. q(dir) .. " WOLKVOX_TOKEN=" .. TOKEN .. " lua5.4 bin/wolkvox "
                .. "--config " .. q(config) .. " --base-url " .. srv.url .. " --state-dir " .. q(pacing)
                .. " report cdr_1 --from 2026-01-01 --to 2026-03-31 -o " .. q(dir .. "/ab.csv")
            srv:control("config", { latency = 3 })
            local p = io.popen(base .. " >/dev/null 2>&1 & echo $!")
            local pid = tonumber(p:read("*l"))
            p:close()
            support.wait_for(function() return requests() >= 2 end, 30, "the report's first 2 calls at the fake")
            os.execute("kill -9 " .. pid)
            support.wait_for(function() return not support.alive(pid) end, 10, "the killed report to be gone")
            srv:control("config", { latency = 0 })
            p = io.popen("env -u LD_PRELOAD script -qec " .. q(base) .. " /dev/null; echo \"rc=$?\"")
            local tty = p:read("*a")
            p:close()
            assert.matches("rc=0", tty)
            assert.matches("waiting until %d%d:%d%d:%d%d for a slot that an earlier, abandoned call", tty)
            assert.matches("may still hold at wolkvox", tty, 1, true)
        end)
    end)

    describe("nothing left behind", function()
        it("no lock file after a run, a refused start or a finished checkpoint; busy is exit 8", function()
            local out, cp = dir .. "/lk.csv", dir .. "/lk.ckpt"
            local argv = "report cdr_1 --from 2026-01-01 --to 2026-01-31 -o " .. q(out) .. " --checkpoint " .. q(cp)
            assert.equal(0, (run(argv)))
            assert.is_nil(slurp(cp .. ".lock"))
            -- A start refused (the checkpoint belongs to another job).
            local code = run("report cdr_1 --from 2026-01-01 --to 2026-02-28 -o " .. q(out) .. " --checkpoint "
                .. q(cp))
            assert.equal(2, code)
            assert.is_nil(slurp(cp .. ".lock"))
            -- Held by another process: busy, its own exit code, nothing spent.
            local held = assert(core.lock(cp .. ".lock"))
            local calls = requests()
            local code2, _, err = run(argv)
            held:release()
            assert.equal(8, code2, err)
            assert.matches("another process is running this export", err, 1, true)
            assert.equal(calls, requests())
            local st = dir .. "/lk.sync"
            assert.equal(0, (run("sync cdr_1 --since 2026-01-01 --until 2026-01-01 --state " .. q(st))))
            assert.is_nil(slurp(st .. ".lock"))
        end)
    end)
end)
