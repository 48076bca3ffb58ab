-- The docs' cron lines, as pasted into a crontab, against the fake: each
-- fenced block of README.md and docs/*.md marked as crontab lines
-- (`<!-- no-run: a crontab line ... -->`) is one crontab, whose NAME=VALUE lines set the environment as cron
-- does (no expansion), and each of its commands runs as cron runs it:
-- /bin/sh -c, under env -i with HOME, LOGNAME, PATH=/usr/bin:/bin and
-- SHELL=/bin/sh.  `wolkvox` is installed as the README's --tree line does
-- (luarocks make --tree "$HOME/.local") from the committed tree; what stands
-- in for the machine: that tree's bin replaces /usr/local/bin in a PATH
-- line (the directory the README names for an install as root); a config
-- file whose profiles (default, acme) reach the fake; a script the crontab
-- runs ($HOME/bin/NAME.sh) is the README's block that starts
-- `#!/bin/sh` and `# NAME.sh:`.  A line succeeds when it exits 0, prints
-- nothing (cron would mail it) and writes a file under $HOME.  Tagged
-- #packaging (the ASan run leaves it out).
local support = require "support"

local LUAVER = jit and "5.1" or "5.4"
local EXTRA = jit and " LUA_INCDIR=/usr/include/luajit-2.1" or ""

-- `s` quoted for sh; `cmd` run by sh: its exit status and output (stdout
-- and stderr together).
local q, run = support.q, support.sh

local FIELD = "[%d%*][%d%*/,%-]*"
local SCHEDULE = "^(" .. FIELD .. "%s+" .. FIELD .. "%s+" .. FIELD .. "%s+" .. FIELD .. "%s+" .. FIELD .. ")%s+(.+)$"

-- The fenced blocks of `text`: { lines = {...} (unindented), first = line
-- number, mark = the line before the fence }.
local function blocks(text)
    local list, cur, n, prev = {}, nil, 0, ""
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        if line:match("^%s*```") then
            if cur then
                list[#list + 1] = cur
                cur = nil
            else
                cur = { lines = {}, first = n + 1, mark = prev }
            end
        elseif cur then
            cur.lines[#cur.lines + 1] = (line:gsub("^%s+", ""))
        end
        if line:find("%S") then
            prev = line
        end
    end
    return list
end

-- The crontabs of the docs: the blocks marked as crontab lines
-- (`<!-- no-run: a crontab line -->`), each
-- { env = { {name, value}... }, jobs = { {line, command}... }, where = "FILE:LINE" }.
local function crontabs(docs)
    local list = {}
    for _, doc in ipairs(docs) do
        for _, b in ipairs(blocks(doc.text)) do
            if b.mark:find("crontab", 1, true) then
                local tab = { env = {}, jobs = {}, where = doc.path .. ":" .. b.first }
                for _, line in ipairs(b.lines) do
                    local _, command = line:match(SCHEDULE)
                    local name, value = line:match("^([%a_][%w_]*)%s*=%s*(.-)%s*$")
                    if command then
                        tab.jobs[#tab.jobs + 1] = { line = line, command = command }
                    elseif name and not line:find("%s") then
                        tab.env[#tab.env + 1] = { name, (value:gsub('^"(.*)"$', "%1")) }
                    end
                end
                list[#list + 1] = tab
            end
        end
    end
    return list
end

-- The scripts of the docs: name -> text, from blocks that start `#!/bin/sh`
-- then `# NAME:`.
local function scripts(docs)
    local found = {}
    for _, doc in ipairs(docs) do
        for _, b in ipairs(blocks(doc.text)) do
            local name = b.lines[1] == "#!/bin/sh" and (b.lines[2] or ""):match("^#%s*([%w_.%-]+):")
            if name then
                found[name] = table.concat(b.lines, "\n") .. "\n"
            end
        end
    end
    return found
end

-- README.md and docs/*.md ($WOLKVOX_DOCS: other files, a draft).
local function docs()
    local list = {}
    local names = os.getenv("WOLKVOX_DOCS") or io.popen("ls README.md docs/*.md 2>/dev/null"):read("*a")
    for path in names:gmatch("%S+") do
        list[#list + 1] = { path = path, text = support.read(path) }
    end
    return list
end

describe("the docs' cron lines #packaging", function()
    local srv, work, tree
    local readme = docs()

    setup(function()
        srv = support.fake { rows_per_day = 2 }
        work = support.tmpdir()
        tree = work .. "/tree"
        local src = work .. "/clone"
        local code, out = run(string.format("mkdir -p %s && git archive HEAD | tar -x -C %s && cd %s && env -u "
            .. "LD_PRELOAD luarocks --lua-version=%s make --deps-mode=none --tree %s%s", q(src), q(src), q(src),
            LUAVER, q(tree), EXTRA))
        assert(code == 0, out)
    end)
    teardown(function()
        srv:stop()
        run("rm -rf " .. q(work))
    end)

    it("are there: the nightly export and the sync", function()
        local commands = {}
        for _, tab in ipairs(crontabs(readme)) do
            for _, job in ipairs(tab.jobs) do
                commands[#commands + 1] = job.command
            end
        end
        local text = table.concat(commands, "\n")
        assert.matches("wolkvox[^\n]* report cdr_1", text)
        assert.matches("wolkvox[^\n]* sync cdr_1", text)
    end)

    it("each run under cron's environment, print nothing and write their file", function()
        local all = scripts(readme)
        local n = 0
        for t, tab in ipairs(crontabs(readme)) do
            for j, job in ipairs(tab.jobs) do
                n = n + 1
                -- A home of its own, with a config whose profiles reach the fake.
                local home = string.format("%s/home-%d-%d", work, t, j)
                local config = home .. "/.config/wolkvox"
                assert(run("mkdir -p " .. q(config) .. " " .. q(home .. "/bin")))
                support.spit(home .. "/.config/wolkvox/token", srv.token, "\n")
                support.spit(config .. "/config", string.format(
                    "[default]\nbase_url = %s\ntoken_file = ~/.config/wolkvox/token\n\n"
                    .. "[profile acme]\nbase_url = %s\ntoken_file = ~/.config/wolkvox/token\n", srv.url, srv.url))
                assert(run("chmod 600 " .. q(config .. "/config") .. " " .. q(home .. "/.config/wolkvox/token")))
                for name, body in pairs(all) do
                    support.spit(home .. "/bin/" .. name, body)
                    assert(run("chmod 755 " .. q(home .. "/bin/" .. name)))
                end
                -- cron's environment, then the crontab's own lines (cron expands nothing there).
                local env = { HOME = home, LOGNAME = "nobody", PATH = "/usr/bin:/bin", SHELL = "/bin/sh" }
                for _, kv in ipairs(tab.env) do
                    local value = kv[2]
                    if kv[1] == "PATH" then
                        value = value:gsub("/usr/local/bin", tree .. "/bin")
                    end
                    env[kv[1]] = value
                end
                local words = {}
                for k, v in pairs(env) do
                    words[#words + 1] = k .. "=" .. q(v)
                end
                table.sort(words)
                -- cron turns an unescaped % into a newline (the rest is stdin).
                assert.is_nil(job.command:gsub("\\%%", ""):find("%", 1, true),
                    tab.where .. ": a % in a crontab line needs a backslash\n" .. job.line)
                assert(run("touch " .. q(home .. "/.before") .. " && sleep 1"))
                -- A sync "--since today" has nothing to write in the first
                -- minutes after the operation's midnight (its end is now
                -- minus the lag): run from yesterday, so the run writes
                -- whatever the hour.
                local command = job.command:gsub("%-%-since today", "--since yesterday")
                local code, out = run(string.format("cd %s && env -i %s /bin/sh -c %s", q(home),
                    table.concat(words, " "), q(command)))
                local info = string.format("%s: %s\nexit %s:\n%s", tab.where, job.line,
                    tostring(code), out)
                assert.equal(0, code, info)
                assert.equal("", out, info)
                local _, written = run(string.format("find %s -type f -newer %s -not -path '*/.cache/*' "
                    .. "-not -path '*/.local/*'", q(home), q(home .. "/.before")))
                assert.is_truthy(written:find("%S"), "wrote no file: " .. info)
            end
        end
        assert.is_true(n >= 2)
    end)
end)
