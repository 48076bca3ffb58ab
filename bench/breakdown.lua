-- bench/breakdown.lua: where one whole call's time goes.
--
-- One call is a fresh process running
--   require("wolkvox").new{...}:cdr_1{ one day }
-- against a static nginx (bench/common.lua) that serves one realistic
-- answer (bench/realistic.lua: 59,000 cdr_1 rows, 29.9 MB of JSON)
-- precompressed with gzip, as the API's server sends it.  Its wall time is
-- split into parts, each measured on its own, on Lua 5.4 and LuaJIT:
--   startup    a fresh interpreter that loads wolkvox and wolkvox.core and
--              exits (wall and CPU)
--   transfer   curl -o /dev/null of the same gzip bytes from the same nginx,
--              not inflated (wall; curl's own start included)
--   floor      the VM building the tables from values cut out beforehand
--              (bench/c/floor.c), collector stopped (CPU around the call)
--   parse      core.decode of the whole text minus the floor, both with
--              the collector stopped (CPU)
--   hand-over  the incremental decoder (core.decoder, fed 256 KiB at a time
--              as the session feeds it) minus core.decode of the whole text,
--              both with the collector stopped, as session:wait holds it
--              (CPU; the 256 KiB pieces, Lua strings here where the
--              session has C buffers, are cut before the clock starts)
--   collection the collector given back after such a decode, as
--              session:wait gives it back (CPU): on Lua 5.4 the debt of
--              what was made, paid at once; on LuaJIT a restart, its steps
--              paid later as the program allocates again
--   teardown   a process that decodes the answer and ends normally (its
--              state closed: every table freed) minus one that ends with
--              os.exit(0, false) (wall and CPU)
--   inflate    zlib alone: inflating the .gz in memory (python3's zlib, the
--              same library libcurl uses; CPU around the call), done on the
--              session's second thread meanwhile: shown, not summed
-- Every figure is the median of RUNS fresh processes (wall, CPU and peak RSS
-- of a process from wait4, to the microsecond); peak RSS for the whole call
-- and for a process that only decodes the text.  What the parts do not cover of
-- the whole call is printed as "unexplained" (negative when parts overlap:
-- the transfer runs while the rows are decoded).
--   lua5.4 bench/breakdown.lua [RUNS]   (from the tree's root; needs nginx,
--   python3; core modules from build/5.4 and build/luajit, or
--   WV_BUILD_54 / WV_BUILD_JIT)
local RUNS = tonumber(arg and arg[1]) or 7
local ROWS = 59000

local common = dofile("bench/common.lua")
local realistic = dofile("bench/realistic.lua")
local sh, write, median = common.sh, common.write, common.median

local root = sh("pwd"):gsub("%s+$", "")
local dir = sh("mktemp -d"):gsub("%s+$", "")

-- ---- the answer, served ----------------------------------------------------------

os.execute("mkdir -p " .. dir .. "/www")
local answer = dir .. "/www/cdr.json"
write(answer, realistic.answer { rows = ROWS, seed = 1 })
assert(os.execute("gzip -6 -n -k " .. answer))
local size = tonumber(sh("stat -c %s " .. answer))
local gz_size = tonumber(sh("stat -c %s " .. answer .. ".gz"))
local base = common.static_nginx(dir, {
    "location /gz/ { gzip_static on; try_files /cdr.json =404; }",
    "location = /raw.gz { default_type application/gzip; try_files /cdr.json.gz =404; }",
})

-- ---- the interpreters ----------------------------------------------------------------

local vms = common.floor_vms(root, dir)

-- ---- the scripts ---------------------------------------------------------------------

local function script(name, text)
    local path = dir .. "/" .. name
    write(path, text)
    return path
end

local CALL = script("call.lua", string.format([[
local c = assert(require("wolkvox").new { base_url = %q, token = "bench", state_dir = false })
local rows = assert(c:cdr_1 { from = "2026-01-05", to = "2026-01-05" })
assert(#rows == %d)
]], base .. "/gz", ROWS))

local STARTUP = script("startup.lua", [[
require "wolkvox"
require "wolkvox.core"
]])

-- One part, in-process CPU seconds: arg[1] the part, arg[2] the answer.
local PART = script("part.lua", string.format([[
local part, path = arg[1], arg[2]
local floor = require "floor"
local core = require "wolkvox.core"
local f = assert(io.open(path, "rb"))
local text = f:read("*a")
f:close()
local op
if part == "floor" then
    local names = {}
    for n in (%q):gmatch("[^,]+") do names[#names + 1] = n end
    local p = floor.prepare(require("cjson").decode(text).data, names)
    op = function() return floor.build(p) end
elseif part == "decode" then
    op = function() return core.decode(text) end
else -- "stream": as the session hands the answer over, 256 KiB at a time
    -- (the pieces cut beforehand: the session's are bytes in C buffers)
    local pieces = {}
    for i = 1, #text, 262144 do
        pieces[#pieces + 1] = text:sub(i, i + 262143)
    end
    op = function()
        local d = core.decoder()
        local lists, n = {}, 0
        for i = 1, #pieces do
            local rows = assert(d:feed(pieces[i]))
            lists[#lists + 1] = rows
            n = n + #rows
        end
        local _, rest = assert(d:finish())
        return { data = { n = n + #rest }, lists = lists, rest = rest }
    end
end
collectgarbage()
collectgarbage()
if arg[3] == "nogc" or arg[3] == "release" then
    collectgarbage("stop")
end
local kb = collectgarbage("count")
local t0 = os.clock()
local v = op()
local t = os.clock() - t0
assert((v.data.n or #v.data) == %d)
if arg[3] == "release" then
    -- The collector given back as session:wait gives it back after holding
    -- it: on Lua 5.4 the debt of what was made meanwhile (one step, at once),
    -- on LuaJIT a restart (its steps come as the program allocates again).
    kb = collectgarbage("count") - kb
    t0 = os.clock()
    collectgarbage("restart")
    if _VERSION == "Lua 5.4" and not jit then
        collectgarbage("step", math.floor(kb))
    end
    t = os.clock() - t0
end
io.write(string.format("%%.6f\n", t))
]], table.concat(realistic.fields(), ","), ROWS))

-- The decode, then an end with the state closed (every table freed) or not.
local TEARDOWN = script("teardown.lua", string.format([[
local f = assert(io.open(arg[1], "rb"))
local text = f:read("*a")
f:close()
local v = require("wolkvox.core").decode(text)
assert(#v.data == %d)
text = nil
if arg[2] == "skip" then
    os.exit(0, false)
end
]], ROWS))

local INFLATE = script("inflate.py", [[
import sys, time, zlib
data = open(sys.argv[1], "rb").read()
t0 = time.process_time()
out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
t = time.process_time() - t0
assert len(out) == int(sys.argv[2])
print("%.6f" % t)
]])

-- ---- measuring ------------------------------------------------------------------------

-- Medians over RUNS fresh processes (common.rounds: python3's clock and
-- wait4, to the microsecond): wall s, peak MB, CPU s.
local function med_timed(cmd)
    local r = common.rounds({ cmd }, RUNS)[1]
    assert(not r.failed, "failed: " .. cmd .. "\n" .. tostring(r.failed))
    return r.wall, r.mb, r.cpu
end

local function med_printed(cmd)
    local t = {}
    for i = 1, RUNS do
        local out = sh(cmd .. " 2>&1")
        t[i] = assert(tonumber(out:match("^([%d%.]+)\n$")), "failed: " .. cmd .. "\n" .. out)
    end
    return median(t)
end

print(string.format("breakdown of one call: cdr_1, %d realistic rows, %.1f MB of JSON (%.1f MB gzipped, "
    .. "served precompressed by a static nginx); median of %d fresh processes per figure; %s; %s cores",
    ROWS, size / 1e6, gz_size / 1e6, RUNS, os.date("!%Y-%m-%d %H:%M UTC"), sh("nproc"):gsub("%s+$", "")))

local transfer = med_timed("curl -s -o /dev/null " .. base .. "/raw.gz")
local inflate = med_printed("python3 " .. INFLATE .. " " .. answer .. ".gz " .. size)

for _, vm in ipairs(vms) do
    local run = vm.env() .. vm.exe .. " "
    local call_wall, call_mb, call_cpu = med_timed(run .. CALL)
    local startup, _, startup_cpu = med_timed(run .. STARTUP)
    local floor_t = med_printed(run .. PART .. " floor " .. answer .. " nogc")
    local decode_nogc = med_printed(run .. PART .. " decode " .. answer .. " nogc")
    local release_t = med_printed(run .. PART .. " decode " .. answer .. " release")
    local stream_nogc = med_printed(run .. PART .. " stream " .. answer .. " nogc")
    local alive, decode_mb, alive_cpu = med_timed(run .. TEARDOWN .. " " .. answer)
    local skipped, _, skipped_cpu = med_timed(run .. TEARDOWN .. " " .. answer .. " skip")
    local parts = {
        { "startup (interpreter + require)", startup, startup_cpu, "wall; CPU" },
        { "transfer (curl, the gzip bytes)", transfer, nil, "wall" },
        { "floor (the VM's tables)", floor_t, floor_t, "CPU" },
        { "parse (decode - floor)", decode_nogc - floor_t, decode_nogc - floor_t, "CPU" },
        { "hand-over (streamed - whole)", stream_nogc - decode_nogc, stream_nogc - decode_nogc, "CPU" },
        { "collection (the hold given back)", release_t, release_t, "CPU" },
        { "teardown (closed - os.exit)", alive - skipped, alive_cpu - skipped_cpu, "wall; CPU" },
    }
    local sum_w, sum_c = 0, 0
    print()
    print(string.format("%s: one call %.3f s wall, %.3f s CPU, peak %.0f MB (a process that only decodes "
        .. "the text: %.0f MB)", vm.name, call_wall, call_cpu, call_mb, decode_mb))
    print(string.format("  %-34s %8s %8s %7s  %s", "part", "wall s", "CPU s", "of wall", "how"))
    for _, p in ipairs(parts) do
        sum_w = sum_w + p[2]
        sum_c = sum_c + (p[3] or 0)
        print(string.format("  %-34s %8.3f %8s %6.1f%%  %s", p[1], p[2], p[3] and string.format("%.3f", p[3]) or "-",
            100 * p[2] / call_wall, p[4]))
    end
    print(string.format("  %-34s %8.3f %8.3f %6.1f%%", "sum of the parts", sum_w, sum_c, 100 * sum_w / call_wall))
    print(string.format("  %-34s %8.3f %8.3f %6.1f%%  %s", "inflate (zlib alone)", inflate, inflate,
        100 * inflate / call_wall, "CPU, on the second thread: not in the sum"))
    print(string.format("  %-34s %8.3f %8.3f %6.1f%%", "unexplained (call - parts)", call_wall - sum_w,
        call_cpu - sum_c, 100 * (call_wall - sum_w) / call_wall))
    print(string.format("  %-34s %8.3f %8.3f %6.1f%%", "the whole call", call_wall, call_cpu, 100))
    print(string.format("  goal (#26): floor + inflate + 0.060 = %.3f s; the call's wall %+.3f s, CPU %+.3f s",
        floor_t + inflate + 0.060, call_wall - (floor_t + inflate + 0.060), call_cpu - (floor_t + inflate + 0.060)))
end

common.stop(dir)
os.execute("rm -rf " .. dir)
