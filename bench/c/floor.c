/*
 * bench/c/floor.c: the Lua VM's own floor for building an answer's rows,
 * for the benchmarks only (bench/floor.lua builds it with cc; it is no part
 * of the module).
 *
 * prepare(rows, fields) copies the rows' string values (a list of tables,
 * already decoded by anything) into C arrays, in the order `fields` names:
 * after that nothing is left to parse.  build(prepared) then makes what
 * core.decode makes of the answer, with the calls a decoder cannot avoid:
 * one lua_createtable per row (sized as core.decode sizes it), one
 * lua_pushlstring per key and per value, one lua_rawset per member, and the
 * list of rows in an envelope { code, msg, data }.  Whatever core.decode
 * spends above this is its parsing and its own bookkeeping.
 *
 * toggle() starts or stops callgrind's collection (a no-op outside
 * valgrind), so `valgrind --tool=callgrind --collect-atstart=no` counts only
 * what runs between two toggles.
 */
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#endif
#endif
#ifndef CALLGRIND_TOGGLE_COLLECT
#define CALLGRIND_TOGGLE_COLLECT
#endif

#if LUA_VERSION_NUM < 502
#define lua_rawlen lua_objlen
#endif

#define FLOOR_MT "bench.floor"

typedef struct {
    size_t nrows, nfields;
    const char **key;      /* nfields keys */
    size_t *keylen;
    const char **val;      /* nrows * nfields values, NULL when absent */
    size_t *vallen;
    char *arena;           /* every key and value, one after another */
} prepared;

static void release(prepared *p)
{
    free(p->key);
    free(p->keylen);
    free(p->val);
    free(p->vallen);
    free(p->arena);
    memset(p, 0, sizeof *p);
}

static int l_gc(lua_State *L)
{
    release((prepared *)luaL_checkudata(L, 1, FLOOR_MT));
    return 0;
}

/* The bytes the strings of `rows` and `fields` take: one pass to size the
 * arena, so the copies never move. */
static size_t arena_size(lua_State *L, size_t nrows, size_t nfields)
{
    size_t total = 0, r, f, n;
    for (f = 1; f <= nfields; f++) {
        lua_rawgeti(L, 2, (int)f);
        (void)lua_tolstring(L, -1, &n);
        total += n + 1;
        lua_pop(L, 1);
    }
    for (r = 1; r <= nrows; r++) {
        lua_rawgeti(L, 1, (int)r);
        for (f = 1; f <= nfields; f++) {
            lua_rawgeti(L, 2, (int)f);
            lua_rawget(L, -2);
            if (lua_type(L, -1) == LUA_TSTRING) {
                (void)lua_tolstring(L, -1, &n);
                total += n + 1;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return total;
}

static const char *keep(char **at, const char *s, size_t n)
{
    char *d = *at;
    memcpy(d, s, n);
    d[n] = '\0';
    *at = d + n + 1;
    return d;
}

static int l_prepare(lua_State *L)
{
    size_t nrows, nfields, r, f, n, size;
    prepared *p;
    char *at;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    nrows = (size_t)lua_rawlen(L, 1);
    nfields = (size_t)lua_rawlen(L, 2);
    for (f = 1; f <= nfields; f++) {
        lua_rawgeti(L, 2, (int)f);
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 2, "field names expected");
        lua_pop(L, 1);
    }
    for (r = 1; r <= nrows; r++) {
        lua_rawgeti(L, 1, (int)r);
        luaL_argcheck(L, lua_istable(L, -1), 1, "a list of rows expected");
        lua_pop(L, 1);
    }
    size = arena_size(L, nrows, nfields);
    p = (prepared *)lua_newuserdata(L, sizeof *p);
    memset(p, 0, sizeof *p);
    luaL_getmetatable(L, FLOOR_MT);
    lua_setmetatable(L, -2);
    p->nrows = nrows;
    p->nfields = nfields;
    p->key = (const char **)calloc(nfields + 1, sizeof *p->key);
    p->keylen = (size_t *)calloc(nfields + 1, sizeof *p->keylen);
    p->val = (const char **)calloc(nrows * nfields + 1, sizeof *p->val);
    p->vallen = (size_t *)calloc(nrows * nfields + 1, sizeof *p->vallen);
    p->arena = (char *)malloc(size + 1);
    if (!p->key || !p->keylen || !p->val || !p->vallen || !p->arena) {
        release(p);
        return luaL_error(L, "not enough memory");
    }
    at = p->arena;
    for (f = 0; f < nfields; f++) {
        const char *s;
        lua_rawgeti(L, 2, (int)f + 1);
        s = lua_tolstring(L, -1, &n);
        p->key[f] = keep(&at, s, n);
        p->keylen[f] = n;
        lua_pop(L, 1);
    }
    for (r = 0; r < nrows; r++) {
        lua_rawgeti(L, 1, (int)r + 1);
        for (f = 0; f < nfields; f++) {
            lua_rawgeti(L, 2, (int)f + 1);
            lua_rawget(L, -2);
            if (lua_type(L, -1) == LUA_TSTRING) {
                const char *s = lua_tolstring(L, -1, &n);
                p->val[r * nfields + f] = keep(&at, s, n);
                p->vallen[r * nfields + f] = n;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return 1;
}

/* The envelope with its rows: what core.decode gives for the answer. */
static int l_build(lua_State *L)
{
    const prepared *p = (const prepared *)luaL_checkudata(L, 1, FLOOR_MT);
    size_t r, f;
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, "code");
    lua_pushinteger(L, 200);
    lua_rawset(L, -3);
    lua_pushliteral(L, "msg");
    lua_pushliteral(L, "rows");
    lua_rawset(L, -3);
    lua_pushliteral(L, "data");
    lua_createtable(L, (int)p->nrows, 0);
    for (r = 0; r < p->nrows; r++) {
        const char *const *v = p->val + r * p->nfields;
        const size_t *vl = p->vallen + r * p->nfields;
        lua_createtable(L, 0, (int)p->nfields);
        for (f = 0; f < p->nfields; f++) {
            if (v[f] == NULL)
                continue;
            lua_pushlstring(L, p->key[f], p->keylen[f]);
            lua_pushlstring(L, v[f], vl[f]);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, -2, (int)r + 1);
    }
    lua_rawset(L, -3);
    return 1;
}

static int l_toggle(lua_State *L)
{
    (void)L;
    CALLGRIND_TOGGLE_COLLECT;
    return 0;
}

int luaopen_floor(lua_State *L);

int luaopen_floor(lua_State *L)
{
    luaL_newmetatable(L, FLOOR_MT);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_prepare);
    lua_setfield(L, -2, "prepare");
    lua_pushcfunction(L, l_build);
    lua_setfield(L, -2, "build");
    lua_pushcfunction(L, l_toggle);
    lua_setfield(L, -2, "toggle");
    return 1;
}
