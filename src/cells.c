/*
 * cells.c: core.cells, the common case of a row's typed values for a
 * database load (wolkvox.out.load), in C: the loader's hot loop.
 *
 *   core.cells(row, plain, names, kinds, memos, days, suffix, buf, base)
 *     -> true, or false when the row needs the loader's own (Lua) path
 *
 * `names[i]` is column i's field, `kinds[i]` how its value is made (the
 * loader's codes: OWN 1, JSON 2, TEXT 3, STAMP 4, MEMO 5).  On true,
 * buf[base + i] holds column i's value for every i (nil for OWN columns,
 * which the loader fills).  Only what the Lua path would give the same way
 * is done here; anything else is false, and the Lua path does the whole
 * row again (it fills the caches this reads):
 *   - every field of the row is a string key with plain[key] == true (a
 *     column, not one of ours); the row has no metatable;
 *   - a missing value, "", "-" and "--" are nil;
 *   - TEXT: a string without NUL is itself;
 *   - MEMO (numbers, durations, percentages): memos[i][raw] as the loader
 *     cached it (a string, or false for nil); not cached yet: false;
 *   - STAMP: "YYYY-MM-DD HH:MM:SS" (hour at most 23) of a day that
 *     days["YYYY-MM-DD"] says is real, followed by `suffix` (the offset);
 *   - any other value (a number, a table, JSON columns): false.
 * Only raw table access: no metamethod, no Lua code runs here but the
 * collector's finalizers at an allocation, and those cannot reach the
 * tables on this call's stack.
 */
#include <string.h>

#include "wolkvox.h"

enum { OWN = 1, JSON = 2, TEXT = 3, STAMP = 4, MEMO = 5 };
enum { ROW = 1, PLAIN, NAMES, KINDS, MEMOS, DAYS, SUFFIX, BUF, BASE };

#define STAMP_LEN 19
#define SUFFIX_MAX 32

static int digit(char c)
{
    return c >= '0' && c <= '9';
}

/* "YYYY-MM-DD HH:MM:SS", hour 00..23 (the loader's pattern). */
static int stamp_form(const char *s, size_t n)
{
    if (n != STAMP_LEN)
        return 0;
    if (!(digit(s[0]) && digit(s[1]) && digit(s[2]) && digit(s[3]) && s[4] == '-' && digit(s[5]) &&
          digit(s[6]) && s[7] == '-' && digit(s[8]) && digit(s[9]) && s[10] == ' ' && s[11] >= '0' &&
          s[11] <= '2' && digit(s[12]) && s[13] == ':' && s[14] >= '0' && s[14] <= '5' && digit(s[15]) &&
          s[16] == ':' && s[17] >= '0' && s[17] <= '5' && digit(s[18])))
        return 0;
    return (s[11] - '0') * 10 + (s[12] - '0') <= 23;
}

/* Every field of the row at ROW is a plain column. */
static int plain_fields(lua_State *L)
{
    lua_pushnil(L);
    while (lua_next(L, ROW) != 0) {
        int ok;
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            return 0;
        }
        lua_pushvalue(L, -1);
        lua_rawget(L, PLAIN);
        ok = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return 1;
}

/* Push column `i`'s value for the string `s` (at index `raw`) of kind
 * `kind`: 1, or 0 when the Lua path must make it (nothing pushed). */
static int typed(lua_State *L, int i, int kind, int raw, const char *s, size_t n, const char *suffix,
                 size_t suffix_len)
{
    switch (kind) {
    case TEXT:
        if (memchr(s, '\0', n) != NULL)
            return 0;
        lua_pushvalue(L, raw);
        return 1;
    case MEMO:
        lua_rawgeti(L, MEMOS, i);
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 1);
            return 0;
        }
        lua_pushvalue(L, raw);
        lua_rawget(L, -2);
        lua_remove(L, -2);
        if (lua_type(L, -1) == LUA_TSTRING)
            return 1;
        if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return 1;
        }
        lua_pop(L, 1);
        return 0;
    case STAMP: {
        char text[STAMP_LEN + SUFFIX_MAX];
        int real;
        if (!stamp_form(s, n))
            return 0;
        lua_pushlstring(L, s, 10);
        lua_rawget(L, DAYS);
        real = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (!real)
            return 0;
        memcpy(text, s, STAMP_LEN);
        memcpy(text + STAMP_LEN, suffix, suffix_len);
        lua_pushlstring(L, text, STAMP_LEN + suffix_len);
        return 1;
    }
    default:
        return 0;
    }
}

static int l_cells(lua_State *L)
{
    size_t suffix_len, i, cols;
    const char *suffix;
    lua_Integer base;
    luaL_checktype(L, ROW, LUA_TTABLE);
    luaL_checktype(L, PLAIN, LUA_TTABLE);
    luaL_checktype(L, NAMES, LUA_TTABLE);
    luaL_checktype(L, KINDS, LUA_TTABLE);
    luaL_checktype(L, MEMOS, LUA_TTABLE);
    luaL_checktype(L, DAYS, LUA_TTABLE);
    suffix = luaL_checklstring(L, SUFFIX, &suffix_len);
    luaL_checktype(L, BUF, LUA_TTABLE);
    base = luaL_checkinteger(L, BASE);
    luaL_argcheck(L, suffix_len <= SUFFIX_MAX, SUFFIX, "too long");
    luaL_argcheck(L, base >= 0 && base < ((lua_Integer)1 << 30), BASE, "out of range");
    lua_settop(L, BASE);
    luaL_checkstack(L, 8, NULL);
    if (lua_getmetatable(L, ROW)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (!plain_fields(L)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    cols = (size_t)lua_rawlen(L, NAMES);
    for (i = 1; i <= cols; i++) {
        int kind, t;
        lua_rawgeti(L, KINDS, (lua_Integer)i);
        kind = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (kind == OWN) {
            lua_pushnil(L);
        } else {
            lua_rawgeti(L, NAMES, (lua_Integer)i);
            lua_rawget(L, ROW);
            t = lua_type(L, -1);
            if (t == LUA_TSTRING) {
                size_t n;
                const char *s = lua_tolstring(L, -1, &n);
                if (kind == JSON) {
                    lua_pushboolean(L, 0);
                    return 1;
                }
                if (n == 0 || (s[0] == '-' && (n == 1 || (n == 2 && s[1] == '-')))) {
                    lua_pop(L, 1);
                    lua_pushnil(L);
                } else if (typed(L, (int)i, kind, lua_gettop(L), s, n, suffix, suffix_len)) {
                    lua_remove(L, -2);
                } else {
                    lua_pushboolean(L, 0);
                    return 1;
                }
            } else if (t != LUA_TNIL) {
                lua_pushboolean(L, 0);
                return 1;
            }
        }
        lua_rawseti(L, BUF, base + (lua_Integer)i);
    }
    lua_pushboolean(L, 1);
    return 1;
}

void wv_cells_open(lua_State *L)
{
    lua_pushcfunction(L, l_cells);
    lua_setfield(L, -2, "cells");
}
