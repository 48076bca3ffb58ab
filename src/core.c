/*
 * core.c: luaopen_wolkvox_core, the only exported symbol.  The module table
 * holds the session constructor, the JSON decoder and version facts; policy
 * (endpoints, windows, retries, errors) lives in the Lua layer.
 */
#include "wolkvox.h"

WV_EXPORT int luaopen_wolkvox_core(lua_State *L);

WV_EXPORT int luaopen_wolkvox_core(lua_State *L)
{
    lua_newtable(L);
    lua_pushliteral(L, "wolkvox.core " WV_VERSION);
    lua_setfield(L, -2, "_VERSION");
    wv_json_open(L);
    wv_session_open(L);
    return 1;
}
