/*
 * core.c: luaopen_wolkvox_core, the only exported symbol.  The module table
 * holds the session constructor, the JSON decoder and version facts; policy
 * (endpoints, windows, retries, errors) lives in the Lua layer.
 */
#include "wolkvox.h"

WV_EXPORT int luaopen_wolkvox_core(lua_State *L);

void wv_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                 lua_CFunction close, lua_CFunction tostring)
{
    luaL_newmetatable(L, name);
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
#endif
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

WV_EXPORT int luaopen_wolkvox_core(lua_State *L)
{
    lua_newtable(L);
    lua_pushliteral(L, "wolkvox.core " WV_VERSION);
    lua_setfield(L, -2, "_VERSION");
    wv_json_open(L);
    wv_session_open(L);
    wv_sys_open(L);
    wv_stream_open(L);
    wv_csv_open(L);
    wv_rowjson_open(L);
    wv_cells_open(L);
    wv_spool_open(L);
    return 1;
}
