/*
 * rowjson.c: one row table as a JSON object, for the NDJSON and JSON
 * writers: what wolkvox.json.encode_row makes, byte for byte, in C.
 *
 * The Lua encoder takes about 31 us a row (a gsub per string, a sort of the
 * keys, a concat); this one about 2 us.  It takes the common row only: string
 * keys, and values that are strings, numbers, booleans or core.null.
 * Anything else (a nested table, a number JSON cannot hold, a metatable on
 * the row) gives nil, and the Lua encoder does it (or says what is wrong).
 * Same bytes means the same rules: keys in the order Lua's `<` puts them
 * (strcoll on PUC Lua, bytes on LuaJIT), control characters (iscntrl) and
 * the quote and backslash escaped as the Lua encoder escapes them, numbers
 * as its string.format writes them.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wolkvox.h"

/* Rows with more members than this go to the Lua encoder. */
#define MAX_KEYS 256
/* The bytes of the last row's keys kept to compare the next row's with
 * (more: its order is not kept). */
#define KEYS_ROOM 4096

typedef struct {
    const char *s;
    size_t n;
    int value;               /* the value's stack index (its key's is one less) */
} member;

typedef struct {
    wv_buf b;                /* first: the scratch metatable's __gc frees it */
    int busy;
    /* The last row's keys as lua_next gave them (copies), and their sorted
     * order: rows of one answer are built alike, so most rows reuse it. */
    size_t nlast;
    size_t lens[MAX_KEYS];
    char keys[KEYS_ROOM];
    int order[MAX_KEYS];
} wv_rowjson;

/* Lua's own `<` on the keys of two members (strings: no metamethod). */
static int key_less(lua_State *L, const member *a, const member *b)
{
#if LUA_VERSION_NUM >= 502
    return lua_compare(L, a->value - 1, b->value - 1, LUA_OPLT);
#else
    return lua_lessthan(L, a->value - 1, b->value - 1);
#endif
}

/* Whether the keys m[0..n) are the last row's, in the same order. */
static int same_keys(const wv_rowjson *w, const member *m, size_t n)
{
    const char *at = w->keys;
    size_t i;
    if (n != w->nlast)
        return 0;
    for (i = 0; i < n; i++) {
        if (m[i].n != w->lens[i] || memcmp(m[i].s, at, m[i].n) != 0)
            return 0;
        at += m[i].n;
    }
    return 1;
}

static int put(wv_buf *b, const char *s, size_t n)
{
    if (!wv_buf_reserve(b, n))
        return 0;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 1;
}

/* A string as the Lua encoder writes it: quoted, with '"' '\\' and every
 * control character escaped. */
int wv_json_put_string(wv_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0, start = 0;
    if (!wv_buf_reserve(b, n + 2))
        return 0;
    b->p[b->len++] = '"';
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* Eight bytes at a time while none is a quote, a backslash, below 0x20
     * or from 0x7f up (the high bit of a byte is set in m for each). */
    {
        const unsigned long long ones = 0x0101010101010101ULL, highs = ones * 0x80;
        while (n - i >= 8) {
            unsigned long long x, q, k, m;
            memcpy(&x, s + i, 8);
            q = x ^ (ones * '"');
            k = x ^ (ones * '\\');
            m = ((q - ones) & ~q) | ((k - ones) & ~k) | ((x - ones * 0x20) & ~x) | x | (x + ones);
            if ((m & highs) != 0)
                break;
            i += 8;
        }
    }
#endif
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t k = 2;
        /* (Printable ASCII is no control character in any locale.) */
        if (c >= 0x20 && c < 0x7f ? c != '"' && c != '\\' : !iscntrl(c))
            continue;
        if (!put(b, s + start, i - start))
            return 0;
        start = i + 1;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            k = 6;
        }
        if (!put(b, esc, k))
            return 0;
    }
    if (!put(b, s + start, n - start) || !put(b, "\"", 1))
        return 0;
    return 1;
}

/* A number as the Lua encoder writes it: an integral value within 2^53
 * in full, else "%.17g"; 0 for one JSON cannot hold (NaN, infinities),
 * which the Lua encoder names. */
int wv_json_put_number(lua_State *L, wv_buf *b, int idx)
{
    char num[64];
    int len;
    const double limit = 9007199254740992.0; /* 2^53 */
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        lua_Integer v = lua_tointeger(L, idx);
        if (v >= -(lua_Integer)9007199254740992LL && v <= (lua_Integer)9007199254740992LL)
            len = snprintf(num, sizeof num, "%lld", (long long)v);
        else
            len = snprintf(num, sizeof num, "%.17g", (double)v);
        return len > 0 && (size_t)len < sizeof num && put(b, num, (size_t)len);
    }
#endif
    {
        double v = (double)lua_tonumber(L, idx);
        if (v != v || v == HUGE_VAL || v == -HUGE_VAL)
            return 0;
        if (v == floor(v) && v >= -limit && v <= limit)
            len = snprintf(num, sizeof num, "%lld", (long long)v);
        else
            len = snprintf(num, sizeof num, "%.17g", v);
    }
    return len > 0 && (size_t)len < sizeof num && put(b, num, (size_t)len);
}

/* The row at 1 into b: 1, or 0 when the Lua encoder must do it (-1: out of
 * memory).  Its members are left on the stack (keys and values) while the
 * line is made, so the strings stay alive. */
static int make(lua_State *L, wv_rowjson *w, wv_buf *b)
{
    member m[MAX_KEYS];
    int order[MAX_KEYS];
    size_t n = 0, i;
    int base = lua_gettop(L);
    if (lua_getmetatable(L, 1))
        return 0;
    if (!lua_checkstack(L, 2 * MAX_KEYS + 4))
        return 0;
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        int t = lua_type(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING || n == MAX_KEYS)
            return 0;
        if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN
            && !(t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL))
            return 0;
        m[n].s = lua_tolstring(L, -2, &m[n].n);
        m[n].value = lua_gettop(L);
        n++;
        lua_pushvalue(L, -2); /* the key again, for lua_next; the pair stays */
    }
    if (same_keys(w, m, n)) {
        memcpy(order, w->order, n * sizeof *order);
    } else {
        /* Insertion sort: a row has a few dozen keys. */
        for (i = 0; i < n; i++) {
            size_t j = i;
            while (j > 0 && key_less(L, &m[i], &m[order[j - 1]])) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = (int)i;
        }
        size_t room = 0;
        w->nlast = 0;
        for (i = 0; i < n && room + m[i].n <= KEYS_ROOM; i++) {
            memcpy(w->keys + room, m[i].s, m[i].n);
            room += m[i].n;
            w->lens[i] = m[i].n;
        }
        if (i == n) {
            memcpy(w->order, order, n * sizeof *order);
            w->nlast = n;
        }
    }
    if (!put(b, "{", 1))
        return -1;
    for (i = 0; i < n; i++) {
        const member *k = &m[order[i]];
        int v = k->value, t = lua_type(L, v), ok;
        if ((i > 0 && !put(b, ",", 1)) || !wv_json_put_string(b, k->s, k->n) || !put(b, ":", 1))
            return -1;
        if (t == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, v, &len);
            ok = wv_json_put_string(b, s, len) ? 1 : -1;
        } else if (t == LUA_TNUMBER) {
            ok = wv_json_put_number(L, b, v);
        } else if (t == LUA_TBOOLEAN) {
            ok = lua_toboolean(L, v) ? put(b, "true", 4) : put(b, "false", 5);
            ok = ok ? 1 : -1;
        } else {
            ok = put(b, "null", 4) ? 1 : -1;
        }
        if (ok != 1)
            return ok;
    }
    if (!put(b, "}", 1))
        return -1;
    lua_settop(L, base);
    return 1;
}

/***
 * A row as one JSON object: what `wolkvox.json.encode_row` makes of it.
 * @function json_row
 * @tparam table row
 * @treturn string the text, or nil when the row needs the Lua encoder (a
 *   nested table, a metatable, a number JSON cannot hold, ...)
 */
static int l_json_row(lua_State *L)
{
    wv_rowjson *w = (wv_rowjson *)lua_touserdata(L, lua_upvalueindex(1));
    wv_buf *b;
    int r;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (w->busy) {
        /* A finalizer encoding a row while a line is made: a buffer and a
         * key order of its own (at 2, freed by the collector). */
        w = (wv_rowjson *)lua_newuserdata(L, sizeof *w);
        memset(w, 0, sizeof *w);
        luaL_getmetatable(L, WV_SCRATCH_MT);
        lua_setmetatable(L, -2);
    }
    b = &w->b;
    w->busy = 1;
    b->len = 0;
    r = make(L, w, b);
    w->busy = 0;
    if (r == -1)
        return luaL_error(L, "not enough memory");
    if (r == 0)
        lua_pushnil(L);
    else
        lua_pushlstring(L, b->p, b->len);
    if (b->cap > (1u << 20))
        wv_buf_free(b);
    return 1;
}

void wv_rowjson_open(lua_State *L)
{
    wv_set_buffered(L, sizeof(wv_rowjson), l_json_row, "json_row");
}
