/*
 * json.c: a JSON (RFC 8259) decoder that builds Lua tables directly from the
 * response buffer.
 *
 * Why not call lua-cjson: its decoder allocates every table empty and lets
 * Lua rehash it up to the row's size (five rehashes for a 20-field cdr_1
 * row), copies the body into a Lua string first, and on Lua 5.4 (Debian's
 * 2.1.0) turns every number into a float.  Here each object is created with
 * the key count of the previous object at the same depth, so a list of
 * same-shaped rows allocates each row once; integral numbers stay integers.
 * spec/json_spec.lua checks this decoder against lua-cjson on a corpus.
 */
#include <stdio.h>
#include <string.h>

#include "wolkvox.h"

typedef struct {
    lua_State *L;
    const char *start;
    const char *p;
    const char *end;
    wv_buf *scratch;
    const char *secret;      /* masked out of every string (may be NULL) */
    size_t secret_len;
    const char *errmsg;
    const char *errat;
    int depth;
    int check;               /* only check the text: push nothing */
    int plain;               /* neither checking nor masking: a plain string is pushed as it is */
    int obj_hint[WV_JSON_MAX_DEPTH + 1];
    int arr_hint[WV_JSON_MAX_DEPTH + 1];
    /* The key cache: the n-th key of the last object (at any depth) that
     * had an n-th key, when it was plain text.  A list of same-shaped rows
     * then pushes each key with lua_rawgeti instead of hashing and
     * interning it again.  The strings stay alive in the table at stack
     * index `kc` (0: no cache), so the pointers into them stay valid. */
    int kc;
    const char *kc_ptr[WV_JSON_MAX_HINT];
    size_t kc_len[WV_JSON_MAX_HINT];
    struct vcache *vc;       /* the value cache (below), or NULL: none */
} decoder;

/* The value cache: members' short string values, by the member's place in
 * its object and a hash of the bytes, each slot the last one seen there.
 * A row list repeats most of its values (an agent's name, a skill, a
 * code, "-"), and a hit pushes the string again with lua_rawgeti from the
 * cache table (slots WV_JSON_MAX_HINT + 1 onwards) instead of hashing it
 * and walking the interned strings' chains, which on a big answer miss
 * the processor's caches on every value.  A value the cache did not have
 * takes the slot.  A member whose values seldom repeat (an id, a time)
 * soon stops being looked up, for a while, so it costs nothing and
 * evicts nothing.  Only a value whose string is the text's bytes as they
 * are (no escape, no secret masked) is kept, so a hit is exactly what
 * string() would have pushed. */
#define VC_BITS 12
#define VC_SLOTS (1 << VC_BITS)
#define VC_MAX_LEN 40             /* Lua 5.4's short strings: the interned ones */
#define VC_WINDOW 64              /* a member's lookups judged together */
#define VC_MIN_HITS 16            /* fewer hits in a window: */
#define VC_REST 1024              /* so many values not looked up */
struct vcache {
    const char *ptr[VC_SLOTS];
    unsigned char len[VC_SLOTS];  /* 0: empty */
    unsigned short tries[WV_JSON_MAX_HINT];
    unsigned short hits[WV_JSON_MAX_HINT];
    unsigned short rest[WV_JSON_MAX_HINT];
};

static int value(decoder *d);

/* The hot paths are inlined whatever the compiler guesses; the rare ones
 * are kept out of them. */
#if defined(__GNUC__)
#define HOT static inline __attribute__((always_inline))
#define COLD static __attribute__((noinline))
#else
#define HOT static inline
#define COLD static
#endif

static int fail(decoder *d, const char *msg)
{
    if (d->errmsg == NULL) {
        d->errmsg = msg;
        d->errat = d->p;
    }
    return 0;
}

HOT void skip_ws(decoder *d)
{
    const char *p = d->p, *e = d->end;
    /* Compact text first: one test for the byte that is not white space. */
    if (p < e && (unsigned char)*p > ' ')
        return;
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    d->p = p;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Read 4 hex digits after "\u"; -1 when malformed. */
static long hex4(const char *p, const char *end)
{
    long v = 0;
    int i;
    if (end - p < 4)
        return -1;
    for (i = 0; i < 4; i++) {
        int h = hexval((unsigned char)p[i]);
        if (h < 0)
            return -1;
        v = (v << 4) | h;
    }
    return v;
}

static size_t put_utf8(char *out, unsigned long cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Push s[0..n) with the secret masked (copied into scratch first when it
 * holds the secret), and continue after `next`. */
static int push_masked(decoder *d, const char *s, size_t n, const char *next)
{
    wv_buf *b = d->scratch;
    const char *q = s, *e = s + n;
    int found = 0;
    if (d->check) {
        d->p = next;
        return 1;
    }
    while (q + d->secret_len <= e) {
        q = (const char *)memchr(q, (unsigned char)d->secret[0], (size_t)(e - q) - d->secret_len + 1);
        if (q == NULL)
            break;
        if (memcmp(q, d->secret, d->secret_len) == 0) {
            found = 1;
            break;
        }
        q++;
    }
    if (!found) {
        lua_pushlstring(d->L, s, n);
    } else {
        b->len = 0;
        if (!wv_buf_reserve(b, n))
            return fail(d, "out of memory");
        memcpy(b->p, s, n);
        wv_mask_plain(b->p, n, d->secret, d->secret_len);
        lua_pushlstring(d->L, b->p, n);
    }
    d->p = next;
    return 1;
}

int wv_json_unescape(const char *from, const char *e, wv_buf *b, const char **at, const char **msg)
{
    const char *p = from;
    /* The unescaped text is never longer than the escaped one. */
    if (!wv_buf_reserve(b, (size_t)(e - p))) {
        *at = p;
        *msg = "out of memory";
        return 0;
    }
#define BAD(why) do { *at = p; *msg = (why); return 0; } while (0)
    while (p < e) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *at = p + 1;
            return 1;
        }
        if (c < 0x20)
            BAD("control character in string");
        if (c != '\\') {
            b->p[b->len++] = (char)c;
            p++;
            continue;
        }
        if (p + 1 >= e)
            break;
        switch (p[1]) {
        case '"':  b->p[b->len++] = '"';  p += 2; break;
        case '\\': b->p[b->len++] = '\\'; p += 2; break;
        case '/':  b->p[b->len++] = '/';  p += 2; break;
        case 'b':  b->p[b->len++] = '\b'; p += 2; break;
        case 'f':  b->p[b->len++] = '\f'; p += 2; break;
        case 'n':  b->p[b->len++] = '\n'; p += 2; break;
        case 'r':  b->p[b->len++] = '\r'; p += 2; break;
        case 't':  b->p[b->len++] = '\t'; p += 2; break;
        case 'u': {
            long hi = hex4(p + 2, e);
            unsigned long cp;
            if (hi < 0)
                BAD("bad \\u escape");
            p += 6;
            cp = (unsigned long)hi;
            if (hi >= 0xD800 && hi <= 0xDBFF) {
                long lo = (e - p >= 6 && p[0] == '\\' && p[1] == 'u') ? hex4(p + 2, e) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    BAD("unpaired surrogate in \\u escape");
                cp = 0x10000 + (((unsigned long)hi - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
                p += 6;
            } else if (hi >= 0xDC00 && hi <= 0xDFFF) {
                BAD("unpaired surrogate in \\u escape");
            }
            /* 6 escaped bytes always give at most 3 (or 12 give 4): room is there. */
            b->len += put_utf8(b->p + b->len, cp);
            break;
        }
        default:
            BAD("bad escape in string");
        }
    }
#undef BAD
    *at = e;
    *msg = "unterminated string";
    return 0;
}

/* The slow path of string(): scratch holds the plain prefix, `from` is the
 * first backslash. */
static int string_escaped(decoder *d, const char *from)
{
    wv_buf *b = d->scratch;
    const char *at, *msg;
    if (!wv_json_unescape(from, d->end, b, &at, &msg)) {
        d->p = at;
        return fail(d, msg);
    }
    if (d->secret_len > 0 && !d->check)
        wv_mask_plain(b->p, b->len, d->secret, d->secret_len);
    if (!d->check)
        lua_pushlstring(d->L, b->p, b->len);
    d->p = at;
    return 1;
}

/* The rest of string(): a secret to mask, an escape, or an error. */
COLD int string_slow(decoder *d, const char *p)
{
    if (p >= d->end) {
        d->p = d->end;
        return fail(d, "unterminated string");
    }
    if (*p == '"') {
        size_t n = (size_t)(p - d->p);
        if (d->secret_len > 0 && n >= d->secret_len)
            return push_masked(d, d->p, n, p + 1);
        if (!d->check)
            lua_pushlstring(d->L, d->p, n);
        d->p = p + 1;
        return 1;
    }
    if (*p == '\\') {
        /* Keep the plain prefix, then unescape the rest. */
        size_t plain = (size_t)(p - d->p);
        wv_buf *b = d->scratch;
        b->len = 0;
        if (!wv_buf_reserve(b, plain))
            return fail(d, "out of memory");
        if (plain > 0)
            memcpy(b->p, d->p, plain);
        b->len = plain;
        return string_escaped(d, p);
    }
    d->p = p;
    return fail(d, "control character in string");
}

/* The string that starts at d->p (just after its opening quote) and whose
 * plain run ends at p.  The common case (plain text, no secret, decoding)
 * is kept small enough to be inlined. */
HOT int string_to(decoder *d, const char *p)
{
    if (p < d->end && *p == '"' && d->plain) {
        lua_pushlstring(d->L, d->p, (size_t)(p - d->p));
        d->p = p + 1;
        return 1;
    }
    return string_slow(d, p);
}

/* d->p is just after the opening quote. */
HOT int string(decoder *d)
{
    return string_to(d, wv_plain_end(d->p, d->end));
}

static int number(decoder *d)
{
    const char *p = d->p, *e = d->end, *s = p;
    int integral = 1;
    unsigned long long mag = 0;
    int ndigits = 0, neg = 0;
    if (p < e && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= e)
        return fail(d, "bad number");
    if (*p == '0') {
        p++;
        ndigits = 1;
    } else if (*p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9') {
            if (ndigits < 19)
                mag = mag * 10 + (unsigned long long)(*p - '0');
            ndigits++;
            p++;
        }
    } else {
        d->p = p;
        return fail(d, "bad number");
    }
    if (p < e && *p == '.') {
        integral = 0;
        p++;
        if (p >= e || *p < '0' || *p > '9') {
            d->p = p;
            return fail(d, "bad number");
        }
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        integral = 0;
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9') {
            d->p = p;
            return fail(d, "bad number");
        }
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    d->p = p;
#if WV_HAVE_INTEGERS
    if (integral && ndigits <= 18) {
        lua_Integer v = (lua_Integer)mag;
        if (!d->check)
            lua_pushinteger(d->L, neg ? -v : v);
        return 1;
    }
#else
    if (integral && ndigits <= 15) {
        double v = (double)mag;
        if (!d->check)
            lua_pushnumber(d->L, neg ? -v : v);
        return 1;
    }
#endif
    /* Fractions, exponents and very long integers: let Lua convert the text,
     * which is locale-independent in 5.3+ and LuaJIT. */
    {
        char tmp[64];
        size_t n = (size_t)(p - s);
        if (n >= sizeof tmp) {
            lua_pushlstring(d->L, s, n);
        } else {
            memcpy(tmp, s, n);
            tmp[n] = '\0';
            lua_pushlstring(d->L, tmp, n);
        }
#if LUA_VERSION_NUM >= 503
        {
            const char *txt = lua_tostring(d->L, -1);
            if (lua_stringtonumber(d->L, txt) == 0) {
                lua_pop(d->L, 1);
                return fail(d, "bad number");
            }
            lua_remove(d->L, -2);
            if (d->check)
                lua_pop(d->L, 1);
        }
#else
        {
            lua_Number v = lua_tonumber(d->L, -1);
            lua_pop(d->L, 1);
            if (!d->check)
                lua_pushnumber(d->L, v);
        }
#endif
    }
    return 1;
}

static int literal(decoder *d, const char *word, size_t n)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return fail(d, "unexpected character");
    d->p += n;
    return 1;
}

/* The key at d->p (after its opening quote), the n-th of its object: the
 * cached string when the text holds the same bytes followed by the closing
 * quote (the cached key had no escape, so these bytes are valid as they
 * are); otherwise string(), and the key is cached when plain.  2 when the
 * colon after the key was taken too. */
/* Whether a[0..n) and b[0..n) hold the same bytes: keys are short, so
 * words are compared (the last one overlapping) instead of calling memcmp. */
HOT int same_bytes(const char *a, const char *b, size_t n)
{
    unsigned long long x8, y8;
    unsigned int x4, y4;
    size_t i;
    if (n >= 8) {
        for (i = 0; i + 8 < n; i += 8) {
            memcpy(&x8, a + i, 8);
            memcpy(&y8, b + i, 8);
            if (x8 != y8)
                return 0;
        }
        memcpy(&x8, a + n - 8, 8);
        memcpy(&y8, b + n - 8, 8);
        return x8 == y8;
    }
    if (n >= 4) {
        memcpy(&x4, a, 4);
        memcpy(&y4, b, 4);
        if (x4 != y4)
            return 0;
        memcpy(&x4, a + n - 4, 4);
        memcpy(&y4, b + n - 4, 4);
        return x4 == y4;
    }
    for (i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

static int key(decoder *d, int n)
{
    lua_State *L = d->L;
    const char *s = d->p;
    size_t len = d->kc_len[n], got;
    const char *str;
    if (len > 0 && (size_t)(d->end - s) > len && s[len] == '"' && same_bytes(s, d->kc_ptr[n], len)) {
        lua_rawgeti(L, d->kc, n + 1);
        /* Compact text: the colon right after the key is taken here (2). */
        if ((size_t)(d->end - s) > len + 1 && s[len + 1] == ':') {
            d->p = s + len + 2;
            return 2;
        }
        d->p = s + len + 1;
        return 1;
    }
    if (!string(d))
        return 0;
    /* Plain when the string is the text between the quotes, byte for byte
     * (no escape, no secret masked out of it). */
    str = lua_tolstring(L, -1, &got);
    if (got > 0 && got == (size_t)(d->p - 1 - s) && memcmp(str, s, got) == 0) {
        lua_pushvalue(L, -1);
        lua_rawseti(L, d->kc, n + 1);
        d->kc_ptr[n] = str;
        d->kc_len[n] = got;
    }
    return 1;
}

/* The value cache's slot for s[0..n) (1 <= n <= VC_MAX_LEN), the value of
 * a row's n-th member: a hash of its length, its first and its last eight
 * bytes (all of them up to 16; a collision only costs a miss). */
HOT unsigned int vc_slot(const char *s, size_t n, int member)
{
    unsigned long long a, b = 0;
    if (n >= 8) {
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
    } else if (n >= 4) {
        unsigned int x, y;
        memcpy(&x, s, 4);
        memcpy(&y, s + n - 4, 4);
        a = x;
        b = y;
    } else {
        a = (unsigned long long)(unsigned char)s[0] | (unsigned long long)(unsigned char)s[n / 2] << 8
            | (unsigned long long)(unsigned char)s[n - 1] << 16;
    }
    a ^= b * 0x9E3779B97F4A7C15ULL ^ (unsigned long long)n << 56 ^ (unsigned long long)member << 48;
    return (unsigned int)((a * 0xD6E8FEB86659FD93ULL) >> (64 - VC_BITS));
}

/* A member's string value through the value cache: d->p is just after its
 * opening quote, `n` its place in the object (< WV_JSON_MAX_HINT). */
static int cached_value(decoder *d, int n)
{
    struct vcache *vc = d->vc;
    lua_State *L = d->L;
    const char *s = d->p, *q;
    size_t len;
    unsigned int slot;
    int hit;
    if (vc->rest[n] > 0) {
        vc->rest[n]--;
        return string(d);
    }
    q = wv_plain_end(s, d->end);
    len = (size_t)(q - s);
    if (q >= d->end || *q != '"' || len == 0 || len > VC_MAX_LEN)
        return string_to(d, q);
    slot = vc_slot(s, len, n);
    hit = vc->len[slot] == len && same_bytes(vc->ptr[slot], s, len);
    if (hit) {
        lua_rawgeti(L, d->kc, WV_JSON_MAX_HINT + 1 + (int)slot);
        d->p = q + 1;
    } else {
        const char *str;
        if (!string_to(d, q))
            return 0;
        str = lua_tostring(L, -1);
        /* Kept when it is the text's bytes (no secret was masked out). */
        if (d->secret_len == 0 || same_bytes(str, s, len)) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, d->kc, WV_JSON_MAX_HINT + 1 + (int)slot);
            vc->ptr[slot] = str;
            vc->len[slot] = (unsigned char)len;
        }
    }
    vc->hits[n] = (unsigned short)(vc->hits[n] + hit);
    if (++vc->tries[n] == VC_WINDOW) {
        if (vc->hits[n] < VC_MIN_HITS)
            vc->rest[n] = VC_REST;
        vc->tries[n] = 0;
        vc->hits[n] = 0;
    }
    return 1;
}

static int array(decoder *d)
{
    lua_State *L = d->L;
    int n = 0, hint = d->arr_hint[d->depth];
    if (!d->check)
        lua_createtable(L, hint > WV_JSON_MAX_HINT ? WV_JSON_MAX_HINT : hint, 0);
    skip_ws(d);
    if (d->p < d->end && *d->p == ']') {
        d->p++;
        return 1;
    }
    for (;;) {
        if (!value(d))
            return 0;
        n++;
        if (!d->check)
            lua_rawseti(L, -2, n);
        skip_ws(d);
        if (d->p >= d->end)
            return fail(d, "unexpected end of input in array");
        if (*d->p == ',') {
            d->p++;
            continue;
        }
        if (*d->p == ']') {
            d->p++;
            d->arr_hint[d->depth] = n;
            return 1;
        }
        return fail(d, "expected ',' or ']' in array");
    }
}

/* Whether the next byte is c (compact text: most often so, no white space
 * to skip first). */
HOT int at(const decoder *d, char c)
{
    return d->p < d->end && *d->p == c;
}

static int object(decoder *d)
{
    lua_State *L = d->L;
    int n = 0, hint = d->obj_hint[d->depth];
    /* (neither changes while the object is read) */
    const int keys = d->kc != 0 && !d->check, values = d->vc != NULL && !d->check;
    /* The hint counts members, duplicates included: capped, so one huge
     * object cannot make every later one huge too. */
    if (!d->check)
        lua_createtable(L, 0, hint > WV_JSON_MAX_HINT ? WV_JSON_MAX_HINT : hint);
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        return 1;
    }
    for (;;) {
        int isnull, ok;
        if (!at(d, '"')) {
            skip_ws(d);
            if (!at(d, '"'))
                return fail(d, "expected a string key in object");
        }
        d->p++;
        if (keys && n < WV_JSON_MAX_HINT) {
            if (!(ok = key(d, n)))
                return 0;
        } else if (!(ok = string(d))) {
            return 0;
        }
        if (ok != 2) {
            skip_ws(d);
            if (d->p >= d->end || *d->p != ':') {
                if (!d->check)
                    lua_pop(L, 1);
                return fail(d, "expected ':' after key in object");
            }
            d->p++;
        }
        if (!at(d, '"'))
            skip_ws(d);
        /* Most members are strings: read here, without value()'s call.
         * Only null starts with 'n' (value() checks the rest). */
        isnull = 0;
        if (at(d, '"')) {
            d->p++;
            ok = values && n < WV_JSON_MAX_HINT ? cached_value(d, n) : string(d);
        } else {
            isnull = d->p < d->end && *d->p == 'n';
            ok = value(d);
        }
        if (!ok) {
            if (!d->check)
                lua_pop(L, 1);
            return 0;
        }
        n++;
        if (d->check)
            goto next;
        /* Lua cannot hold a null member: store nil, which also drops an
         * earlier member of the same name, as a later value would. */
        if (isnull) {
            lua_pop(L, 1);
            lua_pushnil(L);
        }
        lua_rawset(L, -3);
next:
        if (at(d, ',')) {
            d->p++;
            continue;
        }
        skip_ws(d);
        if (d->p >= d->end)
            return fail(d, "unexpected end of input in object");
        if (*d->p == ',') {
            d->p++;
            continue;
        }
        if (*d->p == '}') {
            d->p++;
            d->obj_hint[d->depth] = n;
            return 1;
        }
        return fail(d, "expected ',' or '}' in object");
    }
}

static int value(decoder *d)
{
    int ok;
    skip_ws(d);
    if (d->p >= d->end)
        return fail(d, "unexpected end of input");
    switch (*d->p) {
    case '{':
    case '[':
        if (d->depth >= WV_JSON_MAX_DEPTH)
            return fail(d, "nesting too deep");
        /* Each level holds the container, plus a key and a value in objects. */
        if (!lua_checkstack(d->L, 4))
            return fail(d, "nesting too deep for the Lua stack");
        d->depth++;
        if (*d->p++ == '{')
            ok = object(d);
        else
            ok = array(d);
        d->depth--;
        return ok;
    case '"':
        d->p++;
        return string(d);
    case 't':
        if (!literal(d, "true", 4))
            return 0;
        if (!d->check)
            lua_pushboolean(d->L, 1);
        return 1;
    case 'f':
        if (!literal(d, "false", 5))
            return 0;
        if (!d->check)
            lua_pushboolean(d->L, 0);
        return 1;
    case 'n':
        if (!literal(d, "null", 4))
            return 0;
        if (!d->check)
            lua_pushlightuserdata(d->L, NULL);
        return 1;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9'))
            return number(d);
        return fail(d, "unexpected character");
    }
}

/* A text shorter than this is decoded without the value cache (making
 * the cache would cost more than it saves). */
#define VC_MIN_TEXT 65536

/* The cache pays where interning a string costs most: Lua 5.4 hashes every
 * byte of it.  Lua 5.1 and LuaJIT hash a few words, and there the cache
 * only added work (LuaJIT, realistic rows: 694 -> 707 M instructions, the
 * same time), so they go without it. */
#if LUA_VERSION_NUM >= 504
#define VC_ON 1
#else
#define VC_ON 0
#endif

static void vc_clear(struct vcache *vc)
{
    memset(vc->len, 0, sizeof vc->len);
    memset(vc->tries, 0, sizeof vc->tries);
    memset(vc->hits, 0, sizeof vc->hits);
    memset(vc->rest, 0, sizeof vc->rest);
}

void wv_json_cache_table(lua_State *L, int values)
{
    /* Room for every slot: storing a key or a value never allocates. */
    lua_createtable(L, WV_JSON_MAX_HINT + (VC_ON && values ? VC_SLOTS : 0), 0);
}

/* decode_with's flags: a byte order mark may start the text; only check it;
 * cache the keys (a whole text: the cache lives for the call). */
#define BOM_OK 1
#define CHECK_ONLY 2
#define KEY_CACHE 4
#define PREFIX 8        /* the value may be followed by anything: not checked */

/* Decode s[0..len) with the decoder `d` (its hints kept from earlier texts:
 * rows of one answer decoded one by one still get tables of their size). */
static int decode_with(decoder *d, lua_State *L, const char *s, size_t len, wv_buf *scratch,
                       const char *secret, size_t m, int flags, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    d->L = L;
    d->check = (flags & CHECK_ONLY) != 0;
    d->start = s;
    d->p = s;
    d->end = s + len;
    d->scratch = scratch;
    d->secret = secret;
    d->secret_len = secret != NULL ? m : 0;
    d->plain = d->secret_len == 0 && !d->check;
    d->errmsg = NULL;
    d->errat = NULL;
    d->depth = 0;
    if (flags & KEY_CACHE) {
        /* A cache for this call: the keys, and the values of a text long
         * enough to repeat them. */
        d->vc = NULL;
        if (VC_ON && len >= VC_MIN_TEXT && !d->check) {
            d->vc = (struct vcache *)lua_newuserdata(L, sizeof *d->vc);
            vc_clear(d->vc);
        }
        wv_json_cache_table(L, d->vc != NULL);
        d->kc = lua_gettop(L);
        memset(d->kc_len, 0, sizeof d->kc_len);
    }
    /* A UTF-8 byte order mark is tolerated at the start of a whole text
     * (some PHP files emit one); never inside one (`bom` 0). */
    if ((flags & BOM_OK) && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        d->p += 3;
    if (value(d)) {
        if (flags & PREFIX)
            return 1;
        skip_ws(d);
        if (d->p == d->end) {
            if (flags & KEY_CACHE) {
                lua_remove(L, d->kc);
                if (d->vc != NULL)
                    lua_remove(L, d->kc - 1);
                d->kc = 0;
                d->vc = NULL;
            }
            return 1;
        }
        fail(d, "trailing characters after the JSON value");
    }
    if (err != NULL && errlen > 0) {
        size_t at = (size_t)(d->errat - d->start);
        if (d->errat >= d->end)
            snprintf(err, errlen, "%s at end of input (byte %lu)", d->errmsg,
                     (unsigned long)at + 1);
        else
            snprintf(err, errlen, "%s at byte %lu", d->errmsg, (unsigned long)at + 1);
    }
    lua_settop(L, top);
    if (flags & KEY_CACHE) {
        d->kc = 0;
        d->vc = NULL;
    }
    return 0;
}

int wv_json_decode_masked(lua_State *L, const char *s, size_t len, wv_buf *scratch,
                          const char *secret, size_t m, char *err, size_t errlen)
{
    /* The hint arrays make this too big for some C stacks: keep it on the heap,
     * owned by a userdata so a Lua memory error cannot leak it. */
    decoder *d;
    int top = lua_gettop(L), ok;
    luaL_checkstack(L, 8, "no room on the Lua stack");
    d = (decoder *)lua_newuserdata(L, sizeof *d);
    memset(d, 0, sizeof *d);
    ok = decode_with(d, L, s, len, scratch, secret, m, BOM_OK | KEY_CACHE, err, errlen);
    if (ok)
        lua_remove(L, top + 1); /* the decoder userdata */
    else
        lua_settop(L, top);
    return ok;
}

struct wv_json_ctx {
    decoder d;
    const void *keys;        /* the table the cached keys and values are held by */
    struct vcache vc;
};

/* The key and value caches of a context: the table at stack index `idx`
 * (absolute; 0: none, for the calls that follow; made by
 * wv_json_cache_table with values) holds their strings for as long as the
 * context uses it.  wv_json_ctx_forget_keys must be called whenever
 * another table takes its place (stream.c: a new answer comes with a new
 * state table); a table other than the last one also empties the cache. */
void wv_json_ctx_forget_keys(wv_json_ctx *c)
{
    c->d.kc = 0;
    c->d.vc = NULL;
    c->keys = NULL;
    memset(c->d.kc_len, 0, sizeof c->d.kc_len);
    vc_clear(&c->vc);
}

void wv_json_ctx_keys(wv_json_ctx *c, lua_State *L, int idx)
{
    if (idx != 0 && lua_topointer(L, idx) != c->keys) {
        wv_json_ctx_forget_keys(c);
        c->keys = lua_topointer(L, idx);
    }
    c->d.kc = idx;
    c->d.vc = VC_ON && idx != 0 ? &c->vc : NULL;
}

wv_json_ctx *wv_json_ctx_new(void)
{
    return (wv_json_ctx *)calloc(1, sizeof(wv_json_ctx));
}

void wv_json_ctx_free(wv_json_ctx *c)
{
    free(c);
}

int wv_json_decode_ctx(lua_State *L, wv_json_ctx *c, const char *s, size_t len, wv_buf *scratch,
                       const char *secret, size_t m, char *err, size_t errlen)
{
    luaL_checkstack(L, 8, "no room on the Lua stack");
    return decode_with(&c->d, L, s, len, scratch, secret, m, 0, err, errlen);
}

/* The value at the start of s[0..len), which may be followed by anything
 * (the rest of a stream's buffer): 1 with its length in *used when it is
 * complete and valid (decoded onto the stack, or only checked: `check`);
 * 0 otherwise, nothing pushed and no message: cut short by the end of the
 * buffer, or malformed, the caller's scanner tells which. */
int wv_json_decode_prefix_ctx(lua_State *L, wv_json_ctx *c, const char *s, size_t len, wv_buf *scratch,
                              const char *secret, size_t m, int check, size_t *used)
{
    int ok;
    luaL_checkstack(L, 8, "no room on the Lua stack");
    ok = decode_with(&c->d, L, s, len, scratch, secret, m, PREFIX | (check ? CHECK_ONLY : 0), NULL, 0);
    c->d.check = 0;
    if (ok)
        *used = (size_t)(c->d.p - s);
    return ok;
}

int wv_json_check_ctx(lua_State *L, wv_json_ctx *c, const char *s, size_t len, wv_buf *scratch,
                      char *err, size_t errlen)
{
    int ok;
    luaL_checkstack(L, 8, "no room on the Lua stack");
    ok = decode_with(&c->d, L, s, len, scratch, NULL, 0, CHECK_ONLY, err, errlen);
    c->d.check = 0;
    return ok;
}

/* ---- scratch buffers and core.decode ---------------------------------- */

static int scratch_gc(lua_State *L)
{
    wv_buf *b = (wv_buf *)luaL_checkudata(L, 1, WV_SCRATCH_MT);
    wv_buf_free(b);
    return 0;
}

void wv_set_buffered(lua_State *L, size_t size, lua_CFunction f, const char *name)
{
    void *state = lua_newuserdata(L, size);
    memset(state, 0, size);
    luaL_getmetatable(L, WV_SCRATCH_MT);
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -2, name);
}

wv_buf *wv_scratch_new(lua_State *L)
{
    wv_buf *b = (wv_buf *)lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, WV_SCRATCH_MT);
    lua_setmetatable(L, -2);
    return b;
}

/***
 * Decode a JSON text into Lua values.
 * @function decode
 * @tparam string text
 * @tparam[opt] string secret masked with '*' in every decoded string (the
 *   ngx transport passes the token)
 * @return the value (JSON null at top level or in arrays is `core.null`;
 *   null members of objects are left out)
 * @treturn[2] nil
 * @treturn[2] string what is wrong and at which byte
 */
static int l_decode(lua_State *L)
{
    size_t len;
    size_t mlen = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *secret = luaL_optlstring(L, 2, NULL, &mlen);
    char err[160];
    wv_buf *scratch = wv_scratch_new(L);
    if (wv_json_decode_masked(L, s, len, scratch, secret, mlen, err, sizeof err))
        return 1;
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/***
 * Check a JSON text without building anything: what `decode` accepts.
 * @function check
 * @tparam string text
 * @return true
 * @treturn[2] nil
 * @treturn[2] string what is wrong and at which byte
 */
static int l_check(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char err[160];
    wv_buf *scratch = wv_scratch_new(L);
    decoder *d = (decoder *)lua_newuserdata(L, sizeof *d);
    memset(d, 0, sizeof *d);
    if (decode_with(d, L, s, len, scratch, NULL, 0, BOM_OK | CHECK_ONLY, err, sizeof err)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

void wv_json_open(lua_State *L)
{
    lua_pushcfunction(L, l_check);
    lua_setfield(L, -2, "check");
    luaL_newmetatable(L, WV_SCRATCH_MT);
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_decode);
    lua_setfield(L, -2, "decode");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
}
