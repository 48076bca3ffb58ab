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

typedef struct {
    wv_buf b;                /* first: the scratch metatable's __gc frees it */
    int busy;
    wv_key_order order;      /* the last row's, for the next */
} wv_rowjson;

int wv_order_keys(lua_State *L, wv_key_order *o, const char *const *keys, const size_t *lens, size_t n)
{
    const char *at = o->keys;
    size_t i, room = 0;
    int same = n == o->n, base;
    for (i = 0; same && i < n; i++) {
        same = lens[i] == o->lens[i] && memcmp(keys[i], at, lens[i]) == 0;
        at += lens[i];
    }
    if (same)
        return 0;
    if (!lua_checkstack(L, (int)n + 2))
        return -1;
    base = lua_gettop(L);
    for (i = 0; i < n; i++)
        lua_pushlstring(L, keys[i], lens[i]);
    /* Insertion sort (stable): a row has a few dozen keys. */
    for (i = 0; i < n; i++) {
        size_t j = i;
#if LUA_VERSION_NUM >= 502
        while (j > 0 && lua_compare(L, base + 1 + (int)i, base + 1 + (int)o->order[j - 1], LUA_OPLT)) {
#else
        while (j > 0 && lua_lessthan(L, base + 1 + (int)i, base + 1 + (int)o->order[j - 1])) {
#endif
            o->order[j] = o->order[j - 1];
            j--;
        }
        o->order[j] = i;
    }
    lua_settop(L, base);
    for (i = 0; i < n && room + lens[i] <= WV_ORDER_ROOM; i++) {
        memcpy(o->keys + room, keys[i], lens[i]);
        room += lens[i];
        o->lens[i] = lens[i];
    }
    o->n = i == n ? n : 0;
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
#ifdef WV_JSON_SWAR
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
        if (!wv_buf_add(b, s + start, i - start))
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
        if (!wv_buf_add(b, esc, k))
            return 0;
    }
    if (!wv_buf_add(b, s + start, n - start) || !wv_buf_add(b, "\"", 1))
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
        return len > 0 && (size_t)len < sizeof num && wv_buf_add(b, num, (size_t)len);
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
    return len > 0 && (size_t)len < sizeof num && wv_buf_add(b, num, (size_t)len);
}

/* The row at 1 into b: 1, or 0 when the Lua encoder must do it (-1: out of
 * memory).  Its members are left on the stack (keys and values) while the
 * line is made, so the strings stay alive. */
static int make(lua_State *L, wv_rowjson *w, wv_buf *b)
{
    const char *keys[WV_ORDER_MAX];
    size_t lens[WV_ORDER_MAX], n = 0, i;
    int values[WV_ORDER_MAX];    /* the values' stack indices */
    const size_t *order;
    int base = lua_gettop(L);
    if (lua_getmetatable(L, 1))
        return 0;
    if (!lua_checkstack(L, 2 * WV_ORDER_MAX + 4))
        return 0;
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        int t = lua_type(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING || n == WV_ORDER_MAX)
            return 0;
        if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN
            && !(t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL))
            return 0;
        keys[n] = lua_tolstring(L, -2, &lens[n]);
        values[n] = lua_gettop(L);
        n++;
        lua_pushvalue(L, -2); /* the key again, for lua_next; the pair stays */
    }
    if (wv_order_keys(L, &w->order, keys, lens, n) < 0)
        return 0;
    order = w->order.order;
    if (!wv_buf_add(b, "{", 1))
        return -1;
    for (i = 0; i < n; i++) {
        size_t k = order[i];
        int v = values[k], t = lua_type(L, v), ok;
        if ((i > 0 && !wv_buf_add(b, ",", 1)) || !wv_json_put_string(b, keys[k], lens[k]) || !wv_buf_add(b, ":", 1))
            return -1;
        if (t == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, v, &len);
            ok = wv_json_put_string(b, s, len) ? 1 : -1;
        } else if (t == LUA_TNUMBER) {
            ok = wv_json_put_number(L, b, v);
        } else if (t == LUA_TBOOLEAN) {
            ok = lua_toboolean(L, v) ? wv_buf_add(b, "true", 4) : wv_buf_add(b, "false", 5);
            ok = ok ? 1 : -1;
        } else {
            ok = wv_buf_add(b, "null", 4) ? 1 : -1;
        }
        if (ok != 1)
            return ok;
    }
    if (!wv_buf_add(b, "}", 1))
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
