/*
 * fuzz_json.c: libFuzzer harness for the JSON decoder (make fuzz).
 * Each input is decoded by wolkvox.core.decode in a Lua 5.4 state, under
 * ASan and UBSan: the decoder must never crash nor raise, and a failure must
 * come with a message.  core.check (the same rules, nothing built) must
 * accept exactly what decode accepts, with the same message.  (Agreement with lua-cjson is checked by
 * spec/json_spec.lua on generated texts.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

int luaopen_wolkvox_core(lua_State *L);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int top;
    if (L == NULL) {
        L = luaL_newstate();
        luaL_openlibs(L);
        luaL_requiref(L, "wolkvox.core", luaopen_wolkvox_core, 0);
        lua_getfield(L, -1, "decode");
        lua_setglobal(L, "decode");
        lua_getfield(L, -1, "check");
        lua_setglobal(L, "check");
        lua_pop(L, 1);
    }
    top = lua_gettop(L);
    lua_getglobal(L, "decode");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK)
        abort(); /* decode must not raise on any text */
    if (lua_isnil(L, -2) && !lua_isstring(L, -1))
        abort(); /* a failure always says why */
    lua_getglobal(L, "check");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK)
        abort();
    /* decode's (value, message) at top+1, top+2; check's at top+3, top+4.
     * JSON null decodes to a light userdata, so a failure is "nil, string". */
    {
        int decoded = !(lua_isnil(L, top + 1) && lua_isstring(L, top + 2));
        int checked = lua_toboolean(L, top + 3);
        if (decoded != checked)
            abort(); /* check and decode disagree on the text */
        if (!decoded && lua_rawequal(L, top + 2, top + 4) == 0)
            abort(); /* ... or on what is wrong */
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
