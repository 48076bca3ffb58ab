/*
 * fuzz_stream.c: libFuzzer harness for the incremental decoder (make fuzz).
 * The first byte of an input chooses the chunk sizes, the rest is the text:
 * it is fed to wolkvox.core.decoder in those chunks and decoded whole by
 * wolkvox.core.decode, under ASan and UBSan.  Neither may crash or raise;
 * both must accept or refuse it alike, and give the same tables (an answer
 * with more than one "data" member is left out of the comparison: the
 * stream hands over the rows of each).  The counting decoder ({ count =
 * true }: rows checked, not built) fed the same chunks must accept or refuse
 * alike and count the rows the full one hands over.  The CSV decoder and
 * the NDJSON one ({ ndjson = encoder }: lines made from the text) must
 * give the lines core.csv_row and core.json_row make of the decoded rows.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

int luaopen_wolkvox_core(lua_State *L);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char CHECK[] =
    "local core = ...\n"
    "local function same(a, b)\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) ~= 'table' then return a == b or (a ~= a and b ~= b) end\n"
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "local cols = { 'a', 'b', 'c', 'data' }\n"
    "local function enc(r) return core.json_row(r) or 'nested' end\n"
    "-- The CSV and NDJSON lines made from the text (`secret` masked) against\n"
    "-- core.csv_row and core.json_row of the rows the decoder makes of it.\n"
    "local function lines(pieces, text, secret)\n"
    "  local d = core.decoder { secret = secret }\n"
    "  local vd, nd = core.decoder { csv = cols, secret = secret }, core.decoder { ndjson = enc, secret = secret }\n"
    "  local sv = core.decoder { csv = cols, secret = secret, strict = true, time = 'c' }\n"
    "  local rows, v, n, vok, nok, s, sok = {}, {}, {}, true, true, {}, true\n"
    "  for _, piece in ipairs(pieces) do\n"
    "    local got = d:feed(piece)\n"
    "    if not got then return end\n"
    "    for _, r in ipairs(got) do rows[#rows + 1] = r end\n"
    "    if vok then local t = vd:feed(piece) if t then v[#v + 1] = t else vok = false end end\n"
    "    if nok then local t = nd:feed(piece) if t then n[#n + 1] = t else nok = false end end\n"
    "    if sok then local t = sv:feed(piece) if t then s[#s + 1] = t else sok = false end end\n"
    "  end\n"
    "  local env, last = d:finish()\n"
    "  if (env == nil and type(last) == 'string') or not (d:streamed() or d:shape() == 'array') then return end\n"
    "  for _, r in ipairs(last) do rows[#rows + 1] = r end\n"
    "  local ve, vtail, ne, ntail, se, stail\n"
    "  if vok then ve, vtail = vd:finish() end\n"
    "  if nok then ne, ntail = nd:finish() end\n"
    "  if sok then se, stail = sv:finish() end\n"
    "  if text:sub(1, 1) == '[' then return end\n"
    "  for _, r in ipairs(rows) do if type(r) ~= 'table' or r[1] ~= nil then return end end\n"
    "  local wv, wn, wt = {}, {}, {}\n"
    "  for i, r in ipairs(rows) do\n"
    "    wv[#wv + 1] = core.csv_row(r, cols) wn[#wn + 1] = enc(r) .. '\\n'\n"
    "    wt[i] = type(r.c) == 'string' and r.c or false\n"
    "  end\n"
    "  -- Where the full decoder and the CSV one took it, the strict one takes\n"
    "  -- it too, with the same lines and the rows' `c` as their times.\n"
    "  if vok and ve ~= nil then\n"
    "    assert(sok and se ~= nil, 'the strict CSV decoder refused what the others took')\n"
    "    assert(table.concat(s) .. stail == table.concat(wv), 'strict CSV lines differ')\n"
    "    local times = sv:times()\n"
    "    for i = 1, #wt do assert(times[i] == wt[i], 'times differ') end\n"
    "  end\n"
    "  if vok then\n"
    "    assert(ve ~= nil, 'the CSV decoder refused what the full one took')\n"
    "    assert(table.concat(v) .. vtail == table.concat(wv), 'CSV lines differ')\n"
    "  end\n"
    "  if nok then\n"
    "    assert(ne ~= nil, 'the NDJSON decoder refused what the full one took')\n"
    "    assert(table.concat(n) .. ntail == table.concat(wn), 'NDJSON lines differ')\n"
    "  end\n"
    "end\n"
    "return function(text, step)\n"
    "  local whole = core.decode(text)\n"
    "  local d, rows, i, ok = core.decoder(), {}, 1, true\n"
    "  local cd, cok = core.decoder { count = true }, true\n"
    "  local pieces = {}\n"
    "  while i <= #text do\n"
    "    local piece = text:sub(i, i + step - 1)\n"
    "    pieces[#pieces + 1] = piece\n"
    "    i = i + step\n"
    "    step = step % 7 + 1\n"
    "  end\n"
    "  local fed = 0\n"
    "  for _, piece in ipairs(pieces) do\n"
    "    local got = d:feed(piece)\n"
    "    if cok and not cd:feed(piece) then cok = false end\n"
    "    if not got then ok = false break end\n"
    "    fed = fed + 1\n"
    "    for _, r in ipairs(got) do rows[#rows + 1] = r end\n"
    "  end\n"
    "  local env, last, count\n"
    "  if ok then env, last = d:finish() ok = not (env == nil and type(last) == 'string') end\n"
    "  assert(ok == (whole ~= nil), 'accepted by one decoder only')\n"
    "  if cok and fed == #pieces then local e2, _, n = cd:finish() cok = e2 ~= nil count = n end\n"
    "  if fed == #pieces then assert(cok == ok, 'the counting decoder disagrees') end\n"
    "  if ok then assert(count == #rows + #last, 'the count differs') end\n"
    "  -- Lines checked as the decoder checks (`strict`, the transport inside\n"
    "  -- nginx): never taken where the decoder refused the text.\n"
    "  if not ok and fed == #pieces then\n"
    "    for _, opts in ipairs { { csv = cols, strict = true }, { ndjson = enc, strict = true } } do\n"
    "      local sd, took = core.decoder(opts), true\n"
    "      for _, piece in ipairs(pieces) do if not sd:feed(piece) then took = false break end end\n"
    "      if took then local e, tail = sd:finish() took = not (e == nil and type(tail) == 'string') end\n"
    "      assert(not took, 'strict lines took what the decoder refused')\n"
    "    end\n"
    "  end\n"
    "  if ok then\n"
    "    lines(pieces, text, nil)\n"
    "    -- (a short secret, found often: masked keys and values, the row searched once)\n"
    "    lines(pieces, text, 'ab')\n"
    "  end\n"
    "  if not ok or select(2, text:gsub('\"data\"', '')) > 1 or text:find('\\\\u', 1, true) then return end\n"
    "  for _, r in ipairs(last) do rows[#rows + 1] = r end\n"
    "  local shape = d:shape()\n"
    "  if shape == 'array' then assert(same(whole, rows), 'rows differ')\n"
    "  elseif shape == 'value' then assert(same(whole, env), 'value differs')\n"
    "  else\n"
    "    if d:streamed() then env.data = rows end\n"
    "    assert(same(whole, env), 'envelope differs')\n"
    "  end\n"
    "end\n";

static lua_State *L;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int top;
    if (size < 1)
        return 0;
    if (L == NULL) {
        L = luaL_newstate();
        luaL_openlibs(L);
        luaL_requiref(L, "wolkvox.core", luaopen_wolkvox_core, 0);
        if (luaL_loadstring(L, CHECK) != LUA_OK)
            abort();
        lua_insert(L, -2);
        lua_call(L, 1, 1);
        lua_setglobal(L, "check");
    }
    top = lua_gettop(L);
    lua_getglobal(L, "check");
    lua_pushlstring(L, (const char *)data + 1, size - 1);
    lua_pushinteger(L, 1 + data[0] % 64);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
        abort(); /* a crash-free disagreement is a finding too */
    lua_settop(L, top);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
