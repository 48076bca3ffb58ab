-- Every runnable command and Lua snippet of the docs runs, offline, against
-- the fake server.
--
-- The convention (docs/development.md, "Snippets of the docs"): each fenced
-- ```lua and ```sh block of the pages below carries, on the last non-blank
-- line before it, one of
--
--   <!-- run -->                    it runs here and must exit 0
--   <!-- no-run: REASON -->          it cannot run offline (a real server,
--                                    nginx, Redis, PostgreSQL, a crontab line)
--   <!-- run-if: COMMAND --OPTION --> it runs once `wolkvox COMMAND --help`
--                                    lists --OPTION, and is pending until then
--
-- and a block with none fails this spec. How a block runs:
--
-- - each in a fresh temporary directory (its HOME too, with an `exports`
--   folder and `ip.json`), with the tree's modules on the paths;
-- - sh: `sh -e`, with `wolkvox` a function running `lua5.4 bin/wolkvox
--   --base-url URL` against the fake, `wolkvox-fake` none (no-run), the
--   fake's URL for `http://127.0.0.1:8089`, WOLKVOX_TOKEN its token (`...` too), a
--   config file (WOLKVOX_CONFIG) with a `[default]` and a `[profile acme]`;
-- - lua: `wolkvox.new` sends a client made for a real server (`server`,
--   `token_file`) or for `http://127.0.0.1:8089` to the fake instead; the
--   globals `wolkvox`, `c` (a client on the fake) and `out` (an open file)
--   are there for the snippets that continue a page's earlier ones.
local support = require "support"

local PAGES = {
    "README.md", "docs/cli.md", "docs/library.md", "docs/reports.md", "docs/security.md",
    "docs/openresty.md", "docs/speed.md", "docs/development.md", "docs/fleet.md",
    "docs/databases.md", "docs/plans.md", "docs/metrics.md", "docs/fake.md", "docs/html.md",
    "docs/excel.md",
}
-- (docs/endpoints.md has no snippet.)

local ROOT = assert(io.popen("pwd")):read("l")
local LANGS = { lua = "lua", sh = "sh", bash = "sh", shell = "sh" }

--- The fenced lua/sh blocks of a page: { page, line, lang, code, mark, why }.
local function blocks(page)
    local out, prev, fence, indent = {}, nil, nil, nil
    local n = 0
    for line in (support.read(page) .. "\n"):gmatch("(.-)\n") do
        n = n + 1
        if fence then
            local close = line:match("^(%s*)```%s*$")
            if close and #close <= #indent then
                if fence.lang then
                    out[#out + 1] = fence
                end
                fence = nil
            else
                fence.code[#fence.code + 1] = line:sub(#indent + 1)
            end
        else
            local ind, lang = line:match("^(%s*)```(%S*)")
            if ind then
                indent = ind
                fence = { page = page, line = n, lang = LANGS[lang], code = {} }
                local mark = prev and prev:match("^%s*<!%-%-%s*(.-)%s*%-%->%s*$")
                if mark then
                    fence.mark, fence.why = mark:match("^([%w%-]+):?%s*(.-)$")
                end
            elseif line:match("%S") then
                prev = line
            end
        end
    end
    return out
end

local function sh_quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function run(cmd)
    local p = io.popen(cmd .. " 2>&1; echo status=$?")
    local out = p:read("a")
    p:close()
    return out, tonumber(out:match("status=(%d+)%s*$"))
end

local LUA_PRELUDE = [[
package.path = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;" .. package.path
package.cpath = ROOT .. "/build/5.4/?.so;" .. package.cpath
wolkvox = require "wolkvox"
local new = wolkvox.new
local fake_url = "http://127.0.0.1:8089"
wolkvox.new = function(opts)
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    if o.server or o.token_file or o.base_url == fake_url then
        o.server, o.token_file, o.base_url, o.token = nil, nil, URL, TOKEN
    end
    return new(o)
end
c = assert(wolkvox.new { base_url = URL, token = TOKEN })
out = assert(io.open("out.txt", "w"))
]]

local function prepare(dir, srv)
    local code, text = support.sh("mkdir -p " .. dir .. "/exports && cd " .. dir
        .. " && for d in bin lua build examples spec data tools; do ln -s " .. ROOT .. "/$d $d; done")
    assert(code == 0, text)
    support.spit(dir .. "/ip.json", '{ "ip": "203.0.113.7", "description": "office", "permanent": "1" }\n')
    support.spit(dir .. "/config", "[default]\nbase_url = " .. srv.url .. "\n\n[profile acme]\nbase_url = "
        .. srv.url .. "\n")
    assert(support.sh("chmod 600 " .. dir .. "/config") == 0)
end

local function command(b, srv, dir)
    local code = table.concat(b.code, "\n") .. "\n"
    local env = "cd " .. dir .. " && env -u LD_PRELOAD -u WOLKVOX_SERVER -u WOLKVOX_PROFILE HOME=" .. dir
        .. " XDG_CACHE_HOME=" .. dir .. "/.cache XDG_CONFIG_HOME=" .. dir .. "/.config"
        .. " WOLKVOX_CONFIG=" .. dir .. "/config WOLKVOX_TOKEN=" .. sh_quote(srv.token)
        .. " LUA_PATH_5_4=" .. sh_quote(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;")
        .. " LUA_CPATH_5_4=" .. sh_quote(ROOT .. "/build/5.4/?.so;;")
    if b.lang == "lua" then
        local prelude = "local ROOT, URL, TOKEN = " .. string.format("%q, %q, %q", ROOT, srv.url, srv.token)
            .. "\n" .. LUA_PRELUDE
        support.spit(dir .. "/snippet.lua", prelude .. "do\n" .. code .. "\nend\nout:close()\n")
        return env .. " timeout 60 lua5.4 snippet.lua"
    end
    code = code:gsub("http://127%.0%.0%.1:8089", srv.url):gsub("WOLKVOX_TOKEN=%.%.%.", "WOLKVOX_TOKEN=" .. srv.token)
    local head = "wolkvox() { lua5.4 " .. ROOT .. "/bin/wolkvox --base-url " .. srv.url .. ' "$@"; }\n'
    support.spit(dir .. "/snippet.sh", head .. code)
    return env .. " timeout 60 sh -e snippet.sh"
end

describe("the snippets of the docs", function()
    local all = {}
    for _, page in ipairs(PAGES) do
        for _, b in ipairs(blocks(page)) do
            all[#all + 1] = b
        end
    end

    it("each carry a run, no-run (with its reason) or run-if mark", function()
        local bad = {}
        for _, b in ipairs(all) do
            local ok = b.mark == "run" or (b.mark == "no-run" and b.why ~= "")
                or (b.mark == "run-if" and b.why:match("^%w+ %-%-[%w%-]+$"))
            if not ok then
                bad[#bad + 1] = b.page .. ":" .. b.line .. " (" .. tostring(b.mark) .. ")"
            end
        end
        assert.same({}, bad)
        assert.is_true(#all > 20, "blocks found: " .. #all)
    end)

    describe("marked to run", function()
        local srv
        setup(function()
            srv = support.fake()
        end)
        teardown(function()
            srv:stop()
        end)

        local helps = {}
        for _, b in ipairs(all) do
            local wanted = b.mark == "run"
            if b.mark == "run-if" then
                local cmd, option = b.why:match("^(%w+) (%S+)$")
                if helps[cmd] == nil then
                    helps[cmd] = run("env -u LD_PRELOAD lua5.4 bin/wolkvox " .. cmd .. " --help") or ""
                end
                wanted = helps[cmd]:find(option, 1, true) ~= nil
                if not wanted then
                    pending(b.page .. ":" .. b.line .. " waits for `wolkvox " .. cmd .. " " .. option .. "`")
                end
            end
            if wanted then
                it(b.page .. ":" .. b.line .. " (" .. b.lang .. ")", function()
                    local dir = support.tmpdir()
                    prepare(dir, srv)
                    local out, status = run(command(b, srv, dir))
                    support.sh("rm -rf " .. dir)
                    assert.equal(0, status, out)
                end)
            end
        end
    end)
end)
