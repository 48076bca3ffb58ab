-- bench/peers.lua: one big answer (a day of cdr_1 at 59,000 rows, about
-- 28 MB of JSON, just under the API's 60,000-row cap) fetched from the fake
-- server by lua-wolkvox and by its peers, side by side in one run:
--   lua-wolkvox            wolkvox.core: libcurl + its own decoder into Lua tables
--   core + lua-cjson       the same transfer, decoded by lua-cjson instead
--   LuaSocket + cjson      socket.http.request, then cjson.decode
--   curl CLI               transfer only (no decoding), as a floor
--   Python urllib + json   python3 (when installed)
--   PHP curl + json_decode the vendor's own example (when php-cli and php-curl are)
-- Each figure is the best of N rounds (seconds, wall clock); decoding is also
-- timed alone.  Figures vary with the machine.
--   make bench   (or: LUA_PATH=... lua5.4 bench/peers.lua [rounds])
local socket = require "socket"
local shttp = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require("cjson").new()
local core = require "wolkvox.core"
local fake = require "wolkvox.fake"

local ROUNDS = tonumber(arg and arg[1]) or 3
local ROWS = 59000

local srv = fake.spawn { rows_per_day = ROWS }
local url = srv.url .. "/api/v2/reports_manager.php?api=cdr_1&date_ini=20260105000000&date_end=20260105235959"
local token = srv.token

local function best(f)
    local t = math.huge
    local extra
    for _ = 1, ROUNDS do
        collectgarbage()
        collectgarbage()
        local t0 = socket.gettime()
        extra = f()
        t = math.min(t, socket.gettime() - t0)
    end
    return t, extra
end

local function have(cmd)
    return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

local function sh(cmd)
    local p = assert(io.popen(cmd, "r"))
    local out = p:read("*a")
    p:close()
    return out
end

-- Warm the fake's cache so every client gets the same prepared answer.
local s = core.session { token = token }
local warm = s:request { url = url, decode = false }
local body = assert(warm.body)
assert(warm.status == 200)

local results = {}
local function add(name, seconds, note)
    results[#results + 1] = { name, seconds, note or "" }
end

-- lua-wolkvox's transport + decoder.
add("lua-wolkvox (curl + own decoder)", best(function()
    local res = s:request { url = url }
    assert(#res.value.data == ROWS)
end))

add("core transfer + lua-cjson", best(function()
    local res = s:request { url = url, decode = false }
    local v = cjson.decode(res.body)
    assert(#v.data == ROWS)
end))

add("LuaSocket + cjson", best(function()
    local out = {}
    local ok, code = shttp.request { url = url, sink = ltn12.sink.table(out),
        headers = { ["wolkvox-token"] = token } }
    assert(ok and code == 200)
    local v = cjson.decode(table.concat(out))
    assert(#v.data == ROWS)
end))

if have("curl") then
    add("curl CLI (no decoding)", best(function()
        assert(os.execute("curl -s -o /dev/null -H 'wolkvox-token: " .. token .. "' '" .. url .. "'"))
    end), "a new process each time")
end

local py = [[
import json, sys, time, urllib.request
url, token, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
best = 1e9
for _ in range(rounds):
    t0 = time.perf_counter()
    req = urllib.request.Request(url, headers={"wolkvox-token": token})
    data = json.loads(urllib.request.urlopen(req).read())
    assert len(data["data"]) > 0
    best = min(best, time.perf_counter() - t0)
print(best)
]]
if have("python3") then
    local out = sh("python3 -c '" .. py .. "' '" .. url .. "' '" .. token .. "' " .. ROUNDS)
    add("Python urllib + json", tonumber(out), "timed inside python3")
end

local php = [[
$url = $argv[1]; $token = $argv[2]; $rounds = (int)$argv[3]; $best = 1e9;
for ($i = 0; $i < $rounds; $i++) {
    $t0 = microtime(true);
    $ch = curl_init($url);
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
    curl_setopt($ch, CURLOPT_HTTPHEADER, array("wolkvox-token: " . $token));
    $data = json_decode(curl_exec($ch), true);
    curl_close($ch);
    if (count($data["data"]) < 1) { exit(1); }
    $best = min($best, microtime(true) - $t0);
}
echo $best, "\n";
]]
if have("php") and sh("php -m"):find("curl", 1, true) then
    local out = sh("php -d memory_limit=2G -r '" .. php .. "' '" .. url .. "' '" .. token .. "' " .. ROUNDS)
    add("PHP curl + json_decode", tonumber(out), "timed inside php")
else
    add("PHP curl + json_decode", nil, "php-cli/php-curl not installed")
end

-- Decoding alone, on the same text.
local dec_own = best(function() assert(#core.decode(body).data == ROWS) end)
local dec_cjson = best(function() assert(#cjson.decode(body).data == ROWS) end)

print(string.format("%d rows, %.1f MB of JSON, best of %d", ROWS, #body / 1e6, ROUNDS))
print(string.format("%-34s %9s  %s", "fetch and decode", "seconds", ""))
for _, r in ipairs(results) do
    print(string.format("%-34s %9s  %s", r[1], r[2] and string.format("%.3f", r[2]) or "-", r[3]))
end
print(string.format("%-34s %9.3f", "decode only: wolkvox.core.decode", dec_own))
print(string.format("%-34s %9.3f", "decode only: lua-cjson", dec_cjson))
print(string.format("decoder speed-up over lua-cjson: %.2fx", dec_cjson / dec_own))
s:close()
srv:stop()
