-- `wolkvox report --checkpoint` driven as a user runs it, against the fake:
-- the same bytes as a plain run, exit 7 with the finished windows kept, and
-- a rerun that finishes after a failure, Ctrl-C, SIGTERM or kill -9 byte
-- for byte, spending only the windows that were missing; usage errors, and
-- the token kept out of every file, stream and argv.
--
-- At 10 rows a day a window of 31 days fits in one call: six months are six
-- windows and six calls, the n-th call the n-th window.
local core = require "wolkvox.core"
local support = require "support"

local TOKEN = "cli-resume-secret-4b1d"
local BIN = "bin/wolkvox"
local SIX = "cdr_1 --from 2026-01-01 --to 2026-06-30"

local slurp = support.slurp

-- A shell-quoted string.
local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

describe("wolkvox report --checkpoint", function()
    local srv, dir, runs = nil, nil, 0

    -- A fresh state directory: an interrupted call keeps one of the token's
    -- two places for 60 s (the pacer waits for it), so each interrupted job
    -- gets its own, shared only with its rerun.
    local function fresh_state()
        runs = runs + 1
        return dir .. "/state" .. runs
    end

    -- The command line of `wolkvox report <argv>` towards the fake; the token comes
    -- from a file, never the command line or the environment.
    local function command(argv, state)
        return "env -u LD_PRELOAD -u WOLKVOX_TOKEN -u WOLKVOX_CONFIG -u WOLKVOX_PROFILE HOME=" .. q(dir)
            .. " XDG_CONFIG_HOME=" .. q(dir .. "/.config") .. " lua5.4 " .. BIN .. " --base-url " .. srv.url
            .. " --token-file " .. q(dir .. "/token") .. " --state-dir " .. q(state or dir .. "/state")
            .. " report " .. argv
    end

    -- Run it to its end: exit code and stderr (stdout goes nowhere: every
    -- report here has --output).
    local function run(argv, state)
        local err = dir .. "/stderr"
        local p = io.popen("{ " .. command(argv, state) .. " >/dev/null 2>" .. q(err) .. "; } ; echo $?")
        local code = tonumber(p:read("*a"):match("(%d+)%s*$"))
        p:close()
        return code, slurp(err) or ""
    end

    -- Start it in the background: its pid, and a function that waits for it
    -- and gives its exit status (as the shell reports it: 128 + N when
    -- signal N killed it) and its stderr.
    local function start(argv, state)
        local rc, err = dir .. "/rc", dir .. "/bg-stderr"
        os.remove(rc)
        local inner = command(argv, state) .. " >/dev/null 2>" .. q(err) .. " & echo $!; wait $!; echo $? >"
            .. q(rc)
        local p = io.popen("env -u LD_PRELOAD sh -c " .. q(inner) .. " 2>/dev/null &")
        local pid = tonumber(p:read("*l"))
        p:close()
        return pid, function()
            local text = support.wait_for(function()
                local t = slurp(rc)
                return t and t:match("%d") and t
            end, 30, "the background report's exit status")
            return tonumber(text:match("%d+")), slurp(err) or ""
        end
    end

    -- Wait (at most 20 s) until `ready()` is true.
    local function await(what, ready)
        return support.wait_for(ready, 20, what)
    end

    -- The checkpoint at `path` decoded, or nil when there is none.
    local function saved(path)
        local text = slurp(path)
        return text and core.decode(text)
    end

    local function requests()
        return srv:control("stats").requests
    end

    -- Until every call the fake received has ended (a killed client's too),
    -- then back to the start: settings, log, counts.
    local function settle()
        await("the fake's calls to end", function() return srv:control("stats").inflight == 0 end)
        srv:control("reset")
    end

    -- The token is in none of these strings.
    local function no_token(...)
        for i = 1, select("#", ...) do
            local s = select(i, ...)
            assert.is_nil(s and s:find(TOKEN, 1, true), "the token leaked")
        end
    end

    -- The bytes of an uninterrupted run without a checkpoint.
    local want, made = {}, 0
    local function reference(argv)
        if not want[argv] then
            made = made + 1
            local out = dir .. "/want" .. made
            local code, err = run(argv .. " --output " .. q(out))
            assert.equal(0, code, err)
            want[argv] = support.read(out)
            srv:control("reset")
        end
        return want[argv]
    end

    setup(function()
        srv = support.fake { tokens = { TOKEN }, rows_per_day = 10 }
        dir = support.tmpdir()
        support.spit(dir .. "/token", TOKEN, "\n")
        os.execute("chmod 600 " .. q(dir .. "/token"))
    end)
    teardown(function()
        srv:stop()
        os.execute("rm -rf " .. q(dir))
    end)
    before_each(function() srv:control("reset") end)

    describe("writes", function()
        for _, fmt in ipairs { "csv", "ndjson", "json" } do
            it("the same " .. fmt .. " bytes as without it, windows split at the row cap included", function()
                local argv = "cdr_1 --from 2026-01-01 --to 2026-03-31 --format " .. fmt .. " max_rows=150"
                local plain = reference(argv)
                local out, cp = dir .. "/same." .. fmt, dir .. "/same-" .. fmt .. ".ckpt"
                local code, err = run(argv .. " --output " .. q(out) .. " --checkpoint " .. q(cp))
                assert.equal(0, code, err)
                assert.equal("", err)
                assert.equal(plain, support.read(out))
                assert.is_nil(slurp(out .. ".part"))
                assert.is_true(saved(cp).complete)
                assert.is_true(requests() > 3) -- truncated windows were split
                no_token(slurp(out), slurp(cp), err)
            end)
        end

        it("the same bytes for an answer keyed by bucket (cdr_4), --per and --typed", function()
            for _, argv in ipairs {
                "cdr_4 --from 2026-01-01 --to 2026-01-31",
                "cdr_4 --from 2026-01-01 --to 2026-03-31 --per month --format ndjson --typed",
                "agent_1 --from 2026-01-01 --to 2026-03-31 --per month --format json --typed",
            } do
                local plain = reference(argv)
                local out, cp = dir .. "/keyed.out", dir .. "/keyed.ckpt"
                os.remove(cp)
                local code, err = run(argv .. " --output " .. q(out) .. " --checkpoint " .. q(cp))
                assert.equal(0, code, err)
                assert.equal(plain, support.read(out), argv)
            end
        end)

        it("nothing again once finished (no call), and says so when the output was removed since", function()
            local out, cp = dir .. "/done.csv", dir .. "/done.ckpt"
            local argv = SIX .. " --output " .. q(out) .. " --checkpoint " .. q(cp)
            assert.equal(0, (run(argv)))
            srv:control("reset")
            local code, err = run(argv)
            assert.equal(0, code, err)
            assert.equal(reference(SIX), support.read(out))
            assert.equal(0, requests())
            os.remove(out)
            code, err = run(argv)
            assert.equal(2, code)
            assert.matches("says this export was finished", err, 1, true)
            assert.matches("remove the checkpoint", err, 1, true)
            assert.equal(0, requests())
        end)
    end)

    describe("when a window fails after others", function()
        -- The 4th call fails (retries=0: at once); windows 1-3 were written.
        local function fail_fourth()
            support.faults(srv, { { match = "cdr_1", call = 4, status = 502 } })
        end
        local FAILED = "2026-04-04 00:00:00 .. 2026-05-04 23:59:59"

        it("exits 7, names the window, counts the windows written and keeps their rows", function()
            local first3 = reference("cdr_1 --from 2026-01-01 --to '2026-04-03 23:59:59'")
            fail_fourth()
            local out = dir .. "/partial.csv"
            local code, err = run(SIX .. " max_concurrent=1 retries=0 --output " .. q(out))
            assert.equal(7, code, err)
            assert.matches("incomplete", err, 1, true)
            assert.matches(FAILED, err, 1, true)
            assert.matches("3 windows written, up to 2026-04-03 23:59:59", err, 1, true)
            -- Under FILE.part, said on stderr; never a half file under the final name.
            assert.matches("their rows are in " .. out .. ".part", err, 1, true)
            assert.is_nil(slurp(out))
            assert.equal(first3, support.read(out .. ".part"))
            no_token(err, slurp(out .. ".part"))
        end)

        it("with --checkpoint: a rerun fetches only the missing windows and ends byte for byte", function()
            local out, cp = dir .. "/resume.csv", dir .. "/resume.ckpt"
            local argv = SIX .. " max_concurrent=1 retries=0 --output " .. q(out) .. " --checkpoint " .. q(cp)
            fail_fourth()
            local code, err = run(argv)
            assert.equal(7, code, err)
            assert.matches(FAILED, err, 1, true)
            assert.matches("3 windows written", err, 1, true)
            assert.matches("run the same command again", err, 1, true)
            assert.is_nil(slurp(out)) -- not under the final name while unfinished
            assert.equal(3, saved(cp).windows)
            assert.equal(4, requests())
            no_token(err, slurp(cp), slurp(out .. ".part"))

            -- A rerun that fails at once still has three windows in its file.
            srv:control("reset")
            support.faults(srv, { { match = "cdr_1", call = 1, status = 502 } })
            code, err = run(argv)
            assert.equal(7, code, err)
            assert.matches(FAILED, err, 1, true)
            assert.matches("3 windows written, up to 2026-04-03 23:59:59", err, 1, true)

            srv:control("reset")
            code, err = run(argv)
            assert.equal(0, code, err)
            assert.equal(reference(SIX), support.read(out))
            assert.is_nil(slurp(out .. ".part"))
            local log = support.calls(srv, "cdr_1")
            assert.equal(3, #log) -- windows 4-6, nothing fetched twice
            assert.equal("20260404000000", log[1].params.date_ini)
        end)
    end)

    describe("interrupted", function()
        -- Start the six-month job slowed down (0.3 s a call, one at a time:
        -- about 2 s), wait until `windows` are in its checkpoint (0: until
        -- its first call), let `inspect(pid)` look at it, then send `signal`.
        -- The job: its argv, out, cp, state, exit code, stderr, the seconds
        -- from the signal to its end, and the checkpoint it left (or nil).
        local function interrupt(name, signal, windows, inspect, format)
            local job = { out = dir .. "/" .. name .. ".csv", cp = dir .. "/" .. name .. ".ckpt",
                state = fresh_state(), range = SIX .. (format and (" --format " .. format) or "") }
            job.argv = job.range .. " max_concurrent=1 --output " .. q(job.out) .. " --checkpoint " .. q(job.cp)
            srv:control("reset")
            srv:control("config", { latency = 0.3 })
            local pid, finish = start(job.argv, job.state)
            if windows == 0 then
                await("the first call", function() return requests() >= 1 end)
            else
                await(windows .. " window(s)", function()
                    local t = saved(job.cp)
                    return t ~= nil and t.windows >= windows
                end)
            end
            if inspect then
                inspect(pid)
            end
            local t0 = core.now()
            os.execute("kill -" .. signal .. " " .. pid)
            job.code, job.err = finish()
            job.took = core.now() - t0
            job.saved = saved(job.cp) -- it decodes, or is absent
            assert.is_true(job.saved ~= nil or windows == 0, "the checkpoint is gone")
            assert.is_true(windows == 0 or job.saved.windows >= windows)
            return job
        end

        -- Rerun the job (fast, the fake reset): exit 0, the bytes of an
        -- uninterrupted run, and only the missing windows' calls.
        local function finishes(job)
            settle()
            local expected = reference(job.range) -- (made first: it resets the fake's counts)
            local code, err = run(job.argv, job.state)
            assert.equal(0, code, err)
            assert.equal(expected, support.read(job.out))
            assert.equal(6 - (job.saved and job.saved.windows or 0), requests())
            no_token(err, slurp(job.out), slurp(job.cp))
        end

        it("by Ctrl-C (SIGINT): ends at once with 130, the checkpoint whole; the token not in argv", function()
            local job = interrupt("int", "INT", 1, function(pid)
                local cmdline = support.proc(pid, "cmdline") or ""
                assert.matches("report cdr_1", cmdline, 1, true)
                assert.matches("--token-file", cmdline, 1, true)
                no_token(cmdline, support.proc(pid, "environ"))
            end)
            assert.is_true(job.took < 5, "ended within 5 s")
            assert.equal(130, job.code, job.err)
            assert.matches("interrupted", job.err, 1, true)
            assert.is_nil(slurp(job.out)) -- not under the final name while unfinished
            no_token(job.err, slurp(job.cp), slurp(job.out .. ".part"))
            finishes(job)
        end)

        it("by Ctrl-C before any window was written: no checkpoint or a valid one; a rerun finishes", function()
            local job = interrupt("int0", "INT", 0)
            assert.equal(130, job.code, job.err)
            finishes(job)
        end)

        -- Files in `dir` whose name starts with a dot (the hidden temporary
        -- names of outputs).
        local function hidden()
            local p = io.popen("ls -A " .. q(dir) .. " | grep '^\\.' || true")
            local names = p:read("*a")
            p:close()
            return names
        end

        it("by SIGTERM: stops as cleanly as Ctrl-C (143), no lock left; a rerun finishes", function()
            local job = interrupt("term", "TERM", 1)
            assert.is_true(job.took < 5, "ended within 5 s")
            assert.equal(143, job.code, job.err)
            assert.matches("terminated (SIGTERM)", job.err, 1, true)
            assert.is_nil(slurp(job.cp .. ".lock"))
            assert.equal("", hidden())
            finishes(job)
            assert.is_nil(slurp(job.cp .. ".lock"))
        end)

        it("by SIGTERM without a checkpoint: no hidden temporary file, nothing under the final name", function()
            local out = dir .. "/plain-term.csv"
            srv:control("reset")
            srv:control("config", { latency = 0.3 })
            local pid, finish = start(SIX .. " max_concurrent=1 --output " .. q(out), fresh_state())
            await("the first call", function() return requests() >= 1 end)
            os.execute("kill -TERM " .. pid)
            local code, err = finish()
            assert.equal(143, code, err)
            assert.is_nil(slurp(out))
            assert.equal("", hidden())
            settle()
        end)

        it("by kill -9 at several points: each rerun finishes byte for byte #slow", function()
            for _, windows in ipairs { 0, 1, 3 } do
                local job = interrupt("k" .. windows, "9", windows)
                assert.equal(137, job.code)
                finishes(job)
            end
            -- NDJSON, its lines made as the answers arrive, the same way.
            local job = interrupt("k-ndjson", "9", 3, nil, "ndjson")
            assert.equal(137, job.code)
            finishes(job)
        end)
    end)

    describe("refuses, spending nothing", function()
        it("--checkpoint without --output (or to stdout), and with the table format", function()
            local cp = dir .. "/usage.ckpt"
            for _, argv in ipairs {
                SIX .. " --checkpoint " .. q(cp),
                SIX .. " --output - --checkpoint " .. q(cp),
            } do
                local code, err = run(argv)
                assert.equal(2, code)
                assert.matches("--checkpoint needs --output FILE", err, 1, true)
            end
            local code, err = run(SIX .. " --format table --output " .. q(dir .. "/t.txt") .. " --checkpoint " .. q(cp))
            assert.equal(2, code)
            assert.matches("csv, ndjson and json", err, 1, true)
            assert.is_nil(slurp(cp))
            assert.equal(0, requests())
        end)

        it("a checkpoint made for another job", function()
            local out, cp = dir .. "/jan.csv", dir .. "/jan.ckpt"
            assert.equal(0, (run("cdr_1 --from 2026-01-01 --to 2026-01-31 --output " .. q(out)
                .. " --checkpoint " .. q(cp))))
            local before = support.read(cp)
            srv:control("reset")
            for _, argv in ipairs {
                "cdr_1 --from 2026-01-01 --to 2026-02-28",
                "cdr_2 --from 2026-01-01 --to 2026-01-31",
                "cdr_1 --from 2026-01-01 --to 2026-01-31 --format ndjson",
            } do
                local code, err = run(argv .. " --output " .. q(out) .. " --checkpoint " .. q(cp))
                assert.equal(2, code, argv)
                assert.matches("made for another job", err, 1, true)
            end
            assert.equal(0, requests())
            assert.equal(before, support.read(cp))
        end)
    end)
end)
