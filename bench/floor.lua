-- bench/floor.lua: how near core.decode is to the Lua VM's own floor.
--
-- The floor (bench/c/floor.c, built here with cc) makes the same tables as
-- core.decode makes of an answer of 59,000 cdr_1 rows, from keys and values
-- cut out of the text beforehand (outside the measured part): only
-- lua_createtable, lua_pushlstring and lua_rawset, nothing parsed.  Beside
-- it, core.decode and lua-cjson's cjson.decode of the same text, on Lua 5.4
-- and LuaJIT, on two data shapes:
--   fake        the fake server's rows (bench/users.lua's answer: few
--               distinct strings besides ids, telephones and dates)
--   realistic   bench/realistic.lua (every row its own conn_id, telephone,
--               customer, time; names with accents)
-- Two figures for each, both of the measured part alone (the text already
-- in memory, a full collection just before):
--   CPU s   os.clock() around the call, median of RUNS fresh processes
--   Ir      instructions counted by valgrind --tool=callgrind between two
--           CALLGRIND_TOGGLE_COLLECT (floor.toggle), one process: the
--           same on a loaded machine (Lua 5.4's string hash seed varies per
--           process, so it moves by a few thousandths)
-- The methods run in turn, one fresh process each, RUNS rounds, so a change
-- in the machine's load falls on all of them alike.
--   lua5.4 bench/floor.lua [RUNS [PATTERN]]   (from the tree's root; PATTERN
--   picks the cells whose "vm shape method" contains it; NO_CALLGRIND=1
--   skips the instruction counts)
-- Core modules from build/5.4 and build/luajit, or WV_BUILD_54 / WV_BUILD_JIT;
-- WV_COMPARE="before=DIR54,DIRJIT;..." adds core.decode of other builds
-- (directories holding wolkvox/core.so), as "before" etc., for an A/B.
local RUNS = tonumber(arg and arg[1]) or 7
local ONLY = arg and arg[2]
local ROWS = 59000

local common = dofile("bench/common.lua")
local realistic = dofile("bench/realistic.lua")
local sh, write, median = common.sh, common.write, common.median

local root = sh("pwd"):gsub("%s+$", "")
local dir = sh("mktemp -d"):gsub("%s+$", "")
local fields = realistic.fields()

-- ---- the two answers ----------------------------------------------------------

local function fake_answer()
    local fake = require "wolkvox.fake"
    local core = require "wolkvox.core"
    local srv = fake.spawn { rows_per_day = ROWS }
    local s = core.session { token = srv.token, timeout = 120 }
    local res = s:request { url = srv.url .. "/api/v2/reports_manager.php?api=cdr_1"
        .. "&date_ini=20260105000000&date_end=20260105235959", decode = false }
    s:close()
    srv:stop()
    assert(res.status == 200 and res.body, "the fake did not answer")
    return res.body
end

local shapes = {
    { name = "fake", text = fake_answer() },
    { name = "realistic", text = realistic.answer { rows = ROWS, seed = 1 } },
}
for _, sp in ipairs(shapes) do
    sp.path = dir .. "/" .. sp.name .. ".json"
    write(sp.path, sp.text)
    sp.size = #sp.text
    sp.text = nil
end
collectgarbage()

-- ---- the floor module, for each VM -----------------------------------------------

local vms = common.floor_vms(root, dir)

-- What is measured: the floor, core.decode, cjson.decode, and core.decode of
-- other builds (WV_COMPARE="label=dir54,dirjit;...": before/after a change).
local entries = {
    { label = "floor", method = "floor" },
    { label = "decode", method = "decode" },
    { label = "cjson", method = "cjson" },
}
for label, d54, djit in (os.getenv("WV_COMPARE") or ""):gmatch("([^=;]+)=([^,;]+),([^;]+)") do
    entries[#entries + 1] = { label = label, method = "decode", core = { ["Lua 5.4"] = d54, LuaJIT = djit } }
end

-- ---- one measurement: a fresh process ----------------------------------------------

-- arg: the answer's file, the method, the row count, the fields (comma separated).
local CHILD = [[
local path, method, rows, fields = arg[1], arg[2], tonumber(arg[3]), arg[4]
local floor = require "floor"
local f = assert(io.open(path, "rb"))
local text = f:read("*a")
f:close()
local op
if method == "floor" then
    local names = {}
    for n in fields:gmatch("[^,]+") do names[#names + 1] = n end
    local p = floor.prepare(require("cjson").decode(text).data, names)
    op = function() return floor.build(p) end
elseif method == "decode" then
    local core = require "wolkvox.core"
    op = function() return core.decode(text) end
else
    local cjson = require "cjson"
    op = function() return cjson.decode(text) end
end
collectgarbage()
collectgarbage()
floor.toggle()
local t0 = os.clock()
local v = op()
local t = os.clock() - t0
floor.toggle()
assert(#v.data == rows)
io.write(string.format("%.6f\n", t))
]]
local child = dir .. "/child.lua"
write(child, CHILD)

-- The command of one measurement (`wrap`: a tool that runs the interpreter).
local function command(vm, sp, e, wrap)
    return vm.env(e.core and e.core[vm.name]) .. (wrap or "") .. vm.exe .. " " .. child .. " "
        .. sp.path .. " " .. e.method .. " " .. ROWS .. " " .. table.concat(fields, ",")
end

-- One fresh process per entry in turn, RUNS rounds: a change in the
-- machine's load falls on every entry alike.  The median CPU seconds of each.
local function cpu(vm, sp, list)
    local t = {}
    for i = 1, RUNS do
        for _, e in ipairs(list) do
            local out = sh(command(vm, sp, e) .. " 2>&1")
            t[e] = t[e] or {}
            t[e][i] = tonumber(out:match("^([%d%.]+)\n$"))
            if not t[e][i] then
                e.failed = out
            end
        end
    end
    for _, e in ipairs(list) do
        e.t = not e.failed and median(t[e]) or nil
    end
end

local function instructions(vm, sp, e)
    local out = dir .. "/cg.out"
    os.remove(out)
    local log = sh(command(vm, sp, e, "valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=" .. out
        .. " ") .. " 2>&1")
    local f = io.open(out, "r")
    if not f then
        return nil, log
    end
    local text = f:read("*a")
    f:close()
    local ir = text:match("\ntotals: (%d+)") or text:match("\nsummary: (%d+)")
    return tonumber(ir)
end

-- ---- running --------------------------------------------------------------------------

local have_cg = os.getenv("NO_CALLGRIND") == nil and os.execute("command -v valgrind >/dev/null 2>&1") == true
print(string.format("floor / core.decode / cjson.decode: %d cdr_1 rows; CPU s = median of %d fresh processes "
    .. "(os.clock around the call); Ir = callgrind instructions of the call; %s; %s cores", ROWS, RUNS,
    os.date("!%Y-%m-%d %H:%M UTC"), sh("nproc"):gsub("%s+$", "")))
for _, sp in ipairs(shapes) do
    print(string.format("  %-10s %.1f MB of JSON", sp.name, sp.size / 1e6))
end
print()
print(string.format("%-8s %-10s %-7s %9s %8s %10s %8s", "vm", "shape", "method", "CPU s", "x floor", "Ir (M)",
    "x floor"))
for _, vm in ipairs(vms) do
    for _, sp in ipairs(shapes) do
        local list = {}
        for _, e in ipairs(entries) do
            local name = vm.name .. " " .. sp.name .. " " .. e.label
            if not ONLY or name:find(ONLY, 1, true) or e.method == "floor" then
                list[#list + 1] = { label = e.label, method = e.method, core = e.core }
            end
        end
        cpu(vm, sp, list)
        local base_t, base_ir = list[1].t, nil
        for _, e in ipairs(list) do
            if e.failed then
                print(string.format("%-8s %-10s %-7s failed: %s", vm.name, sp.name, e.label, e.failed:sub(1, 300)))
            else
                local ir = have_cg and instructions(vm, sp, e) or nil
                base_ir = base_ir or ir
                print(string.format("%-8s %-10s %-7s %9.3f %7.2fx %10s %8s", vm.name, sp.name, e.label, e.t,
                    e.t / base_t, ir and string.format("%.1f", ir / 1e6) or "-",
                    (ir and base_ir) and string.format("%.3fx", ir / base_ir) or "-"))
            end
        end
    end
end
os.execute("rm -rf " .. dir)
