/*
 * csv.c: one CSV line (RFC 4180) from a row table and a list of columns,
 * for wolkvox.export: the writer's hot loop in C.  A cell with a comma, a
 * quote or a line break is quoted and its quotes doubled; a missing field is
 * an empty cell; numbers and booleans are written as Lua's tostring would.
 */
#include <string.h>

#include "wolkvox.h"

static void add_cell(luaL_Buffer *b, const char *s, size_t n)
{
    size_t i;
    int quote = 0;
    for (i = 0; i < n && !quote; i++) {
        char c = s[i];
        quote = c == ',' || c == '"' || c == '\r' || c == '\n';
    }
    if (!quote) {
        luaL_addlstring(b, s, n);
        return;
    }
    luaL_addchar(b, '"');
    for (i = 0; i < n; i++) {
        if (s[i] == '"')
            luaL_addchar(b, '"');
        luaL_addchar(b, s[i]);
    }
    luaL_addchar(b, '"');
}

/***
 * One CSV line (ending "\r\n") of `row`'s fields named in `columns`.
 * @function csv_row
 * @tparam table row
 * @tparam table columns a list of field names
 * @treturn string
 */
static int l_csv_row(lua_State *L)
{
    luaL_Buffer b;
    size_t i, n;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    n = lua_rawlen(L, 2);
    lua_settop(L, 2);
    luaL_buffinit(L, &b);
    /* The stack is back where the buffer left it before each buffer call:
     * a field's string stays alive in the row; a converted number is
     * copied out first. */
    for (i = 1; i <= n; i++) {
        size_t len = 0;
        const char *s = NULL;
        char num[64];
        lua_rawgeti(L, 2, (int)i);             /* the column name */
        lua_rawget(L, 1);                      /* row[name], without metamethods */
        if (lua_type(L, -1) == LUA_TSTRING) {
            s = lua_tolstring(L, -1, &len);    /* held by the row */
        } else if (lua_type(L, -1) == LUA_TNUMBER || lua_type(L, -1) == LUA_TBOOLEAN) {
            /* As tostring() writes it, in this Lua's own form. */
            const char *t;
            lua_getglobal(L, "tostring");
            lua_insert(L, -2);
            lua_call(L, 1, 1);
            t = lua_tolstring(L, -1, &len);
            if (t == NULL || len >= sizeof num)
                len = 0;
            else
                memcpy(num, t, len);
            s = num;
        }
        lua_pop(L, 1);
        if (i > 1)
            luaL_addchar(&b, ',');
        if (s != NULL)
            add_cell(&b, s, len);
    }
    luaL_addlstring(&b, "\r\n", 2);
    luaL_pushresult(&b);
    return 1;
}

void wv_csv_open(lua_State *L)
{
    lua_pushcfunction(L, l_csv_row);
    lua_setfield(L, -2, "csv_row");
}
