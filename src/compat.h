/*
 * compat.h: the few Lua 5.2+ C API calls the core needs, on top of the 5.1 ABI
 * (LuaJIT / OpenResty).  Every shim is static and prefixed, then mapped by a
 * macro, so the module never defines a luaL_* symbol that the host also exports.
 */
#ifndef WOLKVOX_COMPAT_H
#define WOLKVOX_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM == 501

static inline void wv_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}

static inline void *wv_compat_testudata(lua_State *L, int ud, const char *tname)
{
    void *p = lua_touserdata(L, ud);
    if (p != NULL && lua_getmetatable(L, ud)) {
        luaL_getmetatable(L, tname);
        if (!lua_rawequal(L, -1, -2))
            p = NULL;
        lua_pop(L, 2);
        return p;
    }
    return NULL;
}

#define luaL_setfuncs(L, l, n)      wv_compat_setfuncs((L), (l), (n))
#define luaL_testudata(L, i, t)     wv_compat_testudata((L), (i), (t))
#define lua_rawlen(L, i)            lua_objlen((L), (i))
#ifndef luaL_newlib /* LuaJIT 2.1 has it, PUC 5.1 does not */
#define luaL_newlibtable(L, l)      lua_createtable((L), 0, sizeof(l) / sizeof((l)[0]) - 1)
#define luaL_newlib(L, l)           (luaL_newlibtable(L, l), luaL_setfuncs((L), (l), 0))
#endif

#endif

/* Push the (first) user value of the userdata at `idx`: 5.4's user values,
 * 5.2/5.3's uservalue, 5.1's environment table. */
static inline void wv_push_uservalue(lua_State *L, int idx)
{
#if LUA_VERSION_NUM >= 504
    lua_getiuservalue(L, idx, 1);
#elif LUA_VERSION_NUM >= 502
    lua_getuservalue(L, idx);
#else
    lua_getfenv(L, idx);
#endif
}

/* Set it from the value on top (popped). */
static inline void wv_set_uservalue(lua_State *L, int idx)
{
#if LUA_VERSION_NUM >= 504
    lua_setiuservalue(L, idx, 1);
#elif LUA_VERSION_NUM >= 502
    lua_setuservalue(L, idx);
#else
    lua_setfenv(L, idx);
#endif
}

/* Integers: 5.3+ has a distinct integer subtype; 5.1 only has doubles. */
#if LUA_VERSION_NUM >= 503
#define WV_HAVE_INTEGERS 1
#else
#define WV_HAVE_INTEGERS 0
#endif

#endif
