/*
 * csv.c: one CSV line (RFC 4180) from a row table and a list of columns,
 * for wolkvox.export: the writer's hot loop in C.  A cell with a comma, a
 * quote or a line break is quoted and its quotes doubled; a missing field is
 * an empty cell; numbers and booleans are written as Lua's tostring would.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wolkvox.h"

/* Append one cell to `b`: quoted (its quotes doubled) when it holds a
 * comma, a quote or a line break.  0 when out of memory. */
static int add_cell(wv_buf *b, const char *s, size_t n)
{
    size_t i, quotes = 0;
    int quote = 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"')
            quotes++;
        quote |= c == ',' || c == '"' || c == '\r' || c == '\n';
    }
    if (n == 0)
        return 1;
    if (!wv_buf_reserve(b, n + (quote ? quotes + 2 : 0)))
        return 0;
    if (!quote) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
        return 1;
    }
    b->p[b->len++] = '"';
    for (i = 0; i < n; i++) {
        if (s[i] == '"')
            b->p[b->len++] = '"';
        b->p[b->len++] = s[i];
    }
    b->p[b->len++] = '"';
    return 1;
}

/* add_cell for a string as the answer sent it (cell_text's raw): it has no
 * quote nor line break, so only a comma makes it quoted. */
static int add_raw_cell(wv_buf *b, const char *s, size_t n)
{
    int quote = memchr(s, ',', n) != NULL;
    if (!wv_buf_reserve(b, n + 2))
        return 0;
    if (quote)
        b->p[b->len++] = '"';
    memcpy(b->p + b->len, s, n);
    b->len += n;
    if (quote)
        b->p[b->len++] = '"';
    return 1;
}

/* tostring() of the value on top of the stack (popped) into `out`, as
 * csv_row writes numbers and booleans: in this Lua's own form. */
static size_t lua_form(lua_State *L, char *out, size_t cap)
{
    size_t len = 0;
    const char *t;
    lua_getglobal(L, "tostring");
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    t = lua_tolstring(L, -1, &len);
    if (t == NULL || len >= cap)
        len = 0;
    else
        memcpy(out, t, len);
    lua_pop(L, 1);
    return len;
}

/***
 * One CSV line (ending "\r\n") of `row`'s fields named in `columns`.
 * @function csv_row
 * @tparam table row
 * @tparam table columns a list of field names
 * @treturn string
 */
/* csv_row's buffer, kept between calls (its upvalue): a new one per row
 * would leave a malloc'd block per row waiting for its finalizer, memory the
 * collector does not count.  `busy` when a finalizer calls csv_row while a
 * line is being made: that call gets a buffer of its own. */
typedef struct {
    wv_buf b;                /* first: the scratch metatable's __gc frees it */
    int busy;
} wv_line;

static int csv_line(lua_State *L, wv_buf *b)
{
    size_t i, n = lua_rawlen(L, 2);
    for (i = 1; i <= n; i++) {
        size_t len = 0;
        const char *s = NULL;
        char num[64];
        lua_rawgeti(L, 2, (int)i);             /* the column name */
        lua_rawget(L, 1);                      /* row[name], without metamethods */
        if (lua_type(L, -1) == LUA_TSTRING) {
            s = lua_tolstring(L, -1, &len);    /* held by the row */
        } else if (lua_type(L, -1) == LUA_TNUMBER || lua_type(L, -1) == LUA_TBOOLEAN) {
            lua_pushvalue(L, -1);
            len = lua_form(L, num, sizeof num);
            s = num;
        }
        if ((i > 1 && !wv_buf_add(b, ",", 1)) || (s != NULL && !add_cell(b, s, len)))
            return luaL_error(L, "not enough memory");
        lua_pop(L, 1);
    }
    if (!wv_buf_add(b, "\r\n", 2))
        return luaL_error(L, "not enough memory");
    lua_pushlstring(L, b->p, b->len);
    return 1;
}

static int l_csv_row(lua_State *L)
{
    wv_line *line = (wv_line *)lua_touserdata(L, lua_upvalueindex(1));
    int r;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    if (line->busy)
        return csv_line(L, wv_scratch_new(L)); /* freed by the collector */
    line->busy = 1;
    line->b.len = 0;
    /* A raise in here (memory) leaves it busy: later calls use their own. */
    r = csv_line(L, &line->b);
    line->busy = 0;
    if (line->b.cap > (1u << 20))
        wv_buf_free(&line->b);
    return r;
}

/* ---- CSV lines straight from a row's JSON text ---------------------------- */

enum { CELL_NONE, CELL_STRING, CELL_SCALAR };

typedef struct {
    int kind;
    int escaped;
    const char *p;           /* a string's bytes (after its quote), a scalar's text */
    size_t n;
} wv_cell;

struct wv_csv {
    size_t ncols;            /* the columns of a line */
    size_t nmatch;           /* ncols, and the time field when it is none of them */
    const char **names;      /* copies, in `block` */
    size_t *lens;
    wv_cell *cells;
    char *block;
    size_t skip;             /* rows already written another way */
    int unique;              /* no column named twice: a key has one column */
    size_t hint;             /* the column after the last one matched */
    int strict;              /* every value checked as the decoder checks it */
    int extra;               /* the first row had a member no column takes */
    size_t made;             /* rows made */
    long time_col;           /* the time field's column (-1: not kept) */
    wv_buf times;            /* each row's time: a 4-byte length (NO_TIME: none), its bytes */
    size_t ntimes;
    wv_buf out;              /* the lines made since the last take */
    wv_buf text;             /* one unescaped string */
    struct wv_ndjson *nd;    /* NDJSON lines instead (wv_ndjson_new) */
};

/* NDJSON mode: a row's members as they come, then written in the order of
 * their keys. */
#define ND_MAX WV_ORDER_MAX
typedef struct {
    size_t koff, klen;       /* the key in nd->keys (unescaped, masked) */
    wv_cell v;               /* CELL_NONE: null (it removes the member) */
} wv_member;

struct wv_ndjson {
    wv_member mem[ND_MAX];
    size_t n;
    int lua;                 /* the row needs the Lua encoder */
    int final;               /* the careful way (wv_csv_json_row): a row left
                              * to the Lua encoder is made by the caller */
    char *time;              /* the time field noted for push_times, or NULL */
    size_t tlen;
    wv_buf keys;
    wv_key_order order;      /* the members' order (kept for the next row) */
    /* Each sorted key written as the encoder writes it, with its colon
     * (made once for an order: valid while `rendered`). */
    wv_buf rend;
    size_t rend_off[ND_MAX + 1];
    int rendered;
};

#define NO_TIME 0xFFFFFFFFu

/* Whether no name of c->names[0..n) is given twice. */
static int names_unique(const wv_csv *c, size_t n)
{
    size_t i, j;
    for (i = 0; i < n; i++)
        for (j = i + 1; j < n; j++)
            if (c->lens[i] == c->lens[j] && memcmp(c->names[i], c->names[j], c->lens[i]) == 0)
                return 0;
    return 1;
}

wv_csv *wv_csv_new(lua_State *L, int cols, size_t skip, const char *time, size_t tlen)
{
    size_t i, n = lua_rawlen(L, cols), total = tlen + 1;
    char *at;
    wv_csv *c = (wv_csv *)calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->ncols = c->nmatch = n;
    c->skip = skip;
    c->time_col = -1;
    for (i = 0; i < n; i++) {
        int is_string;
        lua_rawgeti(L, cols, (int)i + 1);
        is_string = lua_type(L, -1) == LUA_TSTRING;
        total += lua_rawlen(L, -1) + 1;
        lua_pop(L, 1);
        if (!is_string) { /* (the callers check the list first) */
            free(c);
            return NULL;
        }
    }
    c->names = (const char **)calloc(n + 1, sizeof *c->names);
    c->lens = (size_t *)calloc(n + 1, sizeof *c->lens);
    c->cells = (wv_cell *)calloc(n + 1, sizeof *c->cells);
    c->block = (char *)malloc(total);
    if (c->names == NULL || c->lens == NULL || c->cells == NULL || c->block == NULL) {
        wv_csv_free(c);
        return NULL;
    }
    at = c->block;
    for (i = 0; i < n; i++) {
        const char *name;
        lua_rawgeti(L, cols, (int)i + 1);
        name = lua_tolstring(L, -1, &c->lens[i]);
        memcpy(at, name, c->lens[i]);
        c->names[i] = at;
        at += c->lens[i] + 1;
        lua_pop(L, 1);
    }
    c->unique = names_unique(c, n);
    if (time != NULL) {
        /* The time field's own column, or one more that is never written. */
        for (i = 0; i < n && c->time_col < 0; i++)
            if (c->lens[i] == tlen && memcmp(c->names[i], time, tlen) == 0)
                c->time_col = (long)i;
        if (c->time_col < 0) {
            memcpy(at, time, tlen);
            c->names[n] = at;
            c->lens[n] = tlen;
            c->time_col = (long)n;
            c->nmatch = n + 1;
        }
    }
    return c;
}

void wv_csv_strict(wv_csv *c)
{
    c->strict = 1;
}

int wv_csv_extra(const wv_csv *c)
{
    return c->extra;
}

void wv_csv_push_times(lua_State *L, const wv_csv *c)
{
    const char *p = c->times.p;
    size_t i;
    lua_createtable(L, c->ntimes < 0x7fffffff ? (int)c->ntimes : 0, 0);
    for (i = 0; i < c->ntimes; i++) {
        uint32_t len;
        memcpy(&len, p, sizeof len);
        p += sizeof len;
        if (len == NO_TIME) {
            lua_pushboolean(L, 0);
        } else {
            lua_pushlstring(L, p, len);
            p += len;
        }
        lua_rawseti(L, -2, (int)i + 1);
    }
}

void wv_csv_free(wv_csv *c)
{
    if (c == NULL)
        return;
    free(c->names);
    free(c->lens);
    free(c->cells);
    free(c->block);
    wv_buf_free(&c->times);
    wv_buf_free(&c->out);
    wv_buf_free(&c->text);
    if (c->nd != NULL) {
        wv_buf_free(&c->nd->keys);
        wv_buf_free(&c->nd->rend);
        free(c->nd->time);
        free(c->nd);
    }
    free(c);
}

wv_csv *wv_ndjson_new(size_t skip, const char *time, size_t tlen)
{
    wv_csv *c = (wv_csv *)calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->skip = skip;
    c->time_col = -1;
    c->nd = (struct wv_ndjson *)calloc(1, sizeof *c->nd);
    if (c->nd == NULL) {
        free(c);
        return NULL;
    }
    if (time != NULL) {
        c->nd->time = (char *)malloc(tlen + 1);
        if (c->nd->time == NULL) {
            wv_csv_free(c);
            return NULL;
        }
        memcpy(c->nd->time, time, tlen);
        c->nd->tlen = tlen;
    }
    return c;
}

wv_buf *wv_csv_out(wv_csv *c)
{
    return &c->out;
}

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* The closing quote of a string whose bytes start at p; *esc when it has a
 * backslash.  NULL when it does not end, or holds a control character (not
 * JSON, as the decoder says). */
static const char *string_end(const char *p, const char *e, int *esc)
{
    while ((p = wv_plain_end(p, e)) < e) {
        if (*p == '"')
            return p;
        if (*p != '\\')
            return NULL;
        *esc = 1;
        p += 2;
    }
    return NULL;
}

/* Just after the value at p (an object, an array, a number or a literal;
 * strings are read by the caller).  NULL when it does not end. */
static const char *skip_value(const char *p, const char *e)
{
    int depth = 0, esc = 0;
    if (*p != '{' && *p != '[') {
        while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r'
               && *p != '\t')
            p++;
        return p;
    }
    while (p < e) {
        char ch = *p;
        if (ch == '"') {
            const char *q = string_end(p + 1, e, &esc);
            if (q == NULL)
                return NULL;
            p = q + 1;
            continue;
        }
        if (ch == '{' || ch == '[')
            depth++;
        else if ((ch == '}' || ch == ']') && --depth == 0)
            return p + 1;
        p++;
    }
    return NULL;
}

/* The text of a string cell as the decoder gives it (unescaped, the token
 * masked) in *s and *n: the cell's own bytes when it has no escape and no
 * token (*raw: such a string has no quote nor line break, JSON escapes
 * them), else made in c->text.  0 with *msg on failure. */
static int cell_text(wv_csv *c, const wv_cell *cell, const char *e, const char *secret, size_t slen,
                     const char **s, size_t *n, int *raw, const char **msg)
{
    const char *at;
    *raw = !cell->escaped && !wv_holds_plain(cell->p, cell->n, secret, slen);
    if (*raw) {
        *s = cell->p;
        *n = cell->n;
        return 1;
    }
    c->text.len = 0;
    if (cell->escaped) {
        if (!wv_json_unescape(cell->p, e, &c->text, &at, msg))
            return 0;
    } else if (!wv_buf_add(&c->text, cell->p, cell->n)) {
        *msg = "out of memory";
        return 0;
    }
    if (slen > 0 && c->text.len >= slen)
        wv_mask_plain(c->text.p, c->text.len, secret, slen);
    *s = c->text.p;
    *n = c->text.len;
    return 1;
}

/* Whether the n bytes at a and b are the same (a key and a column's name:
 * short, and most often equal, where a call to memcmp costs more). */
static int same_bytes(const char *a, const char *b, size_t n)
{
    while (n >= 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y)
            return 0;
        a += 8;
        b += 8;
        n -= 8;
    }
    while (n > 0) {
        if (*a++ != *b++)
            return 0;
        n--;
    }
    return 1;
}

/* The member `key` is `v`: in its column (every column of that name when
 * a name is given twice).  Rows of one answer have their members in one
 * order, mostly the columns' own: the search starts after the column the
 * last member went to.  The column taken (the first), or -1 for none; a
 * value it replaces (a member named twice) in *old. */
static long set_cell(wv_csv *c, const char *key, size_t klen, const wv_cell *v, wv_cell *old)
{
    size_t i, j;
    long first = -1;
    if (!c->unique) {
        for (i = 0; i < c->nmatch; i++)
            if (c->lens[i] == klen && memcmp(c->names[i], key, klen) == 0) {
                if (c->cells[i].kind != CELL_NONE)
                    *old = c->cells[i];
                c->cells[i] = *v;
                first = first < 0 ? (long)i : first;
            }
        return first;
    }
    for (j = 0, i = c->hint; j < c->nmatch; j++, i++) {
        if (i == c->nmatch)
            i = 0;
        if (c->lens[i] == klen && same_bytes(c->names[i], key, klen)) {
            if (c->cells[i].kind != CELL_NONE)
                *old = c->cells[i];
            c->cells[i] = *v;
            c->hint = i + 1 == c->nmatch ? 0 : i + 1;
            return (long)i;
        }
    }
    return -1;
}

/* Check a value that no line will hold (strict mode): as the decoder
 * would, so an answer a check rejects is rejected here too. */
static int check_value(lua_State *L, wv_csv *c, const wv_cell *v, const char *e, wv_json_ctx *json,
                       wv_buf *scratch, char *err, size_t errlen)
{
    const char *at, *msg = NULL;
    if (v->kind == CELL_STRING) {
        if (!v->escaped)
            return 1;
        c->text.len = 0;
        if (wv_json_unescape(v->p, e, &c->text, &at, &msg))
            return 1;
        snprintf(err, errlen, "%s", msg);
        return 0;
    }
    return wv_json_check_ctx(L, json, v->p, v->n, scratch, err, errlen);
}

/* The row's time (a string) noted in c->times; 0 and *msg on failure. */
static int keep_time(wv_csv *c, const wv_cell *t, const char *e, const char *secret, size_t slen,
                     const char **msg)
{
    uint32_t len = NO_TIME;
    const char *s = NULL;
    size_t n = 0;
    int raw;
    if (t->kind == CELL_STRING) {
        if (!cell_text(c, t, e, secret, slen, &s, &n, &raw, msg))
            return 0;
        len = n < NO_TIME ? (uint32_t)n : NO_TIME;
    }
    if (!wv_buf_reserve(&c->times, sizeof len + (len == NO_TIME ? 0 : len))) {
        *msg = "not enough memory";
        return 0;
    }
    memcpy(c->times.p + c->times.len, &len, sizeof len);
    c->times.len += sizeof len;
    if (len != NO_TIME) {
        memcpy(c->times.p + c->times.len, s, len);
        c->times.len += len;
    }
    c->ntimes++;
    return 1;
}

/* NDJSON: one member of the row kept, its key copied (unescaped: the key
 * at c->text when `kesc`; masked with the row's, in row_line).  0 when out
 * of memory. */
static int nd_member(wv_csv *c, const char *key, size_t klen, const wv_cell *v)
{
    struct wv_ndjson *nd = c->nd;
    wv_member *m;
    if (nd->n == ND_MAX) {
        nd->lua = 1;
        return 1;
    }
    m = &nd->mem[nd->n++];
    m->koff = nd->keys.len;
    m->klen = klen;
    m->v = *v;
    return wv_buf_add(&nd->keys, key, klen);
}

/* The key of member `m`: its bytes in nd->keys, or "" while no key has any
 * (nd->keys.p is NULL then, and NULL plus an offset, even 0, is undefined). */
static const char *nd_key(const struct wv_ndjson *nd, const wv_member *m)
{
    return nd->keys.p != NULL ? nd->keys.p + m->koff : "";
}

/* Whether members i and j have the same key. */
static int nd_same_key(const struct wv_ndjson *nd, size_t i, size_t j)
{
    const wv_member *a = &nd->mem[i], *b = &nd->mem[j];
    return a->klen == b->klen && (a->klen == 0 || memcmp(nd_key(nd, a), nd_key(nd, b), a->klen) == 0);
}

/* The members' order (nd->order.order): by key as the encoder orders
 * them, members of one name in the order they came (the last one wins);
 * their written keys made again when it changed.  0 when out of memory. */
static int nd_order(lua_State *L, struct wv_ndjson *nd)
{
    const char *keys[ND_MAX];
    size_t lens[ND_MAX], i;
    int r;
    for (i = 0; i < nd->n; i++) {
        keys[i] = nd_key(nd, &nd->mem[i]);
        lens[i] = nd->mem[i].klen;
    }
    r = wv_order_keys(L, &nd->order, keys, lens, nd->n);
    if (r == 1)
        nd->rendered = 0;
    return r >= 0;
}

/* The NDJSON line of the members collected (c->nd) added to c->out: 1; 2
 * when the Lua encoder must make it (a number JSON cannot hold); 0 and
 * *msg on failure. */
static int nd_line(lua_State *L, wv_csv *c, const char *e, wv_json_ctx *json, wv_buf *scratch,
                   const char *secret, size_t slen, const char **msg, char *err, size_t errlen)
{
    struct wv_ndjson *nd = c->nd;
    size_t i, written = 0, start = c->out.len;
    if (!nd_order(L, nd) || !wv_buf_add(&c->out, "{", 1))
        return 0;
    if (!nd->rendered) {
        nd->rend.len = 0;
        for (i = 0; i < nd->n; i++) {
            const wv_member *m = &nd->mem[nd->order.order[i]];
            nd->rend_off[i] = nd->rend.len;
            if (!wv_json_put_string(&nd->rend, nd_key(nd, m), m->klen) || !wv_buf_add(&nd->rend, ":", 1))
                return 0;
        }
        nd->rend_off[nd->n] = nd->rend.len;
        nd->rendered = 1;
    }
    for (i = 0; i < nd->n; i++) {
        const wv_member *m = &nd->mem[nd->order.order[i]];
        const wv_cell *v = &m->v;
        /* Of members of one name the last one is written (or, null, none);
         * in strict mode the others are checked as the decoder checks them. */
        if (i + 1 < nd->n && nd_same_key(nd, nd->order.order[i], nd->order.order[i + 1])) {
            if (c->strict && v->kind != CELL_NONE && !check_value(L, c, v, e, json, scratch, err, errlen)) {
                *msg = NULL;
                return 0;
            }
            continue;
        }
        if (v->kind == CELL_NONE)
            continue;
        if ((written++ > 0 && !wv_buf_add(&c->out, ",", 1))
            || !wv_buf_add(&c->out, nd->rend.p + nd->rend_off[i], nd->rend_off[i + 1] - nd->rend_off[i]))
            return 0;
        if (v->kind == CELL_STRING) {
            const char *s;
            size_t n;
            int raw;
            if (!cell_text(c, v, e, secret, slen, &s, &n, &raw, msg) || !wv_json_put_string(&c->out, s, n))
                return 0;
        } else if (v->n == 4 && memcmp(v->p, "true", 4) == 0) {
            if (!wv_buf_add(&c->out, "true", 4))
                return 0;
        } else if (v->n == 5 && memcmp(v->p, "false", 5) == 0) {
            if (!wv_buf_add(&c->out, "false", 5))
                return 0;
        } else {
            char derr[160];
            int ok;
            /* A number: as the decoder reads it and the encoder writes it. */
            if (!wv_json_decode_ctx(L, json, v->p, v->n, scratch, NULL, 0, derr, sizeof derr)
                || lua_type(L, -1) != LUA_TNUMBER) {
                c->out.len = start;
                return 2;
            }
            ok = wv_json_put_number(L, &c->out, -1);
            lua_pop(L, 1);
            if (!ok) {
                c->out.len = start;
                return 2;
            }
        }
    }
    if (!wv_buf_add(&c->out, "}\n", 2))
        return 0;
    return 1;
}

/* NDJSON: the row's time noted (the last member of the time field's name;
 * none when it is null or absent).  0 and *msg on failure. */
static int nd_time(wv_csv *c, const char *e, const char *secret, size_t slen, const char **msg)
{
    struct wv_ndjson *nd = c->nd;
    wv_cell none = { CELL_NONE, 0, NULL, 0 };
    size_t i;
    for (i = nd->n; i > 0; i--) {
        const wv_member *m = &nd->mem[i - 1];
        if (m->klen == nd->tlen && (m->klen == 0 || memcmp(nd_key(nd, m), nd->time, m->klen) == 0))
            return keep_time(c, &m->v, e, secret, slen, msg);
    }
    return keep_time(c, &none, e, secret, slen, msg);
}

/* The CSV line of the row at `row` (within `len` bytes) added to c->out:
 * 1, and with `used` the bytes of the row (it may end before `len`); 0 and
 * a message in `err`. */
static int row_line(lua_State *L, wv_csv *c, const char *row, size_t len, wv_json_ctx *json,
                    wv_buf *scratch, const char *secret, size_t slen, size_t *used, char *err, size_t errlen)
{
    const char *p = row, *e = row + len, *end = NULL, *msg = "not enough memory";
    size_t i;
    int scan = 0; /* 1: a text may hold the secret, 2: one is escaped */
    if (c->skip > 0) {
        c->skip--;
        return 1;
    }
    for (i = 0; i < c->nmatch; i++)
        c->cells[i].kind = CELL_NONE;
    if (c->nd != NULL) {
        c->nd->n = 0;
        c->nd->lua = 0;
        c->nd->keys.len = 0;
    }
    p = skip_ws(p, e);
    if (p >= e || *p != '{') {
        snprintf(err, errlen, "a row is not an object");
        return 0;
    }
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}') {
        end = p + 1;
        p = e;
    }
    while (p < e) {
        const char *key, *kend, *at;
        int kesc = 0, vesc = 0;
        wv_cell v, old;
        size_t klen;
        long col;
        if (*p != '"' || (kend = string_end(p + 1, e, &kesc)) == NULL)
            goto bad;
        key = p + 1;
        klen = (size_t)(kend - key);
        if (kesc) {
            c->text.len = 0;
            if (!wv_json_unescape(key, e, &c->text, &at, &msg))
                goto failed;
            key = c->text.p;
            klen = c->text.len;
        }
        p = skip_ws(kend + 1, e);
        if (p >= e || *p != ':')
            goto bad;
        p = skip_ws(p + 1, e);
        if (p >= e)
            goto bad;
        v.kind = CELL_NONE;
        v.escaped = 0;
        if (*p == '"') {
            const char *q = string_end(p + 1, e, &vesc);
            if (q == NULL)
                goto bad;
            v.kind = CELL_STRING;
            v.escaped = vesc;
            v.p = p + 1;
            v.n = (size_t)(q - v.p);
            p = q + 1;
        } else {
            const char *q = skip_value(p, e);
            if (q == NULL)
                goto bad;
            v.p = p;
            v.n = (size_t)(q - p);
            if (c->nd != NULL && (*p == '{' || *p == '['))
                c->nd->lua = 1; /* (a nested value: the Lua encoder's) */
            /* null, an object or an array: an empty cell, as csv_row makes
             * of what the decoder leaves out or gives as a table. */
            if (*p != 'n' && *p != '{' && *p != '[')
                v.kind = CELL_SCALAR;
            else if (c->strict && !(v.n == 4 && memcmp(p, "null", 4) == 0)) {
                v.kind = CELL_SCALAR; /* (only to check it) */
                if (!check_value(L, c, &v, e, json, scratch, err, errlen))
                    return 0;
                v.kind = CELL_NONE;
            }
            p = q;
        }
        /* Only a text at least as long as the secret can hold it, and an
         * escaped one may spell it: the row is looked at once (below). */
        if (kesc || vesc)
            scan |= 2;
        else if (klen >= slen || v.n >= slen)
            scan |= 1;
        if (c->nd != NULL) {
            if (!nd_member(c, key, klen, &v))
                goto failed;
            goto next;
        }
        /* A later member of the same name wins, as in the decoder. */
        old.kind = CELL_NONE;
        col = set_cell(c, key, klen, &v, &old);
        if (col < 0 || (size_t)col >= c->ncols) {
            /* No line holds it: the columns settled by a first row that
             * has it would (unless it is null: the decoder leaves such a
             * member out), and in strict mode it is checked now. */
            if (c->made == 0 && !(v.kind == CELL_NONE && *v.p == 'n'))
                c->extra = 1;
            if (c->strict && v.kind != CELL_NONE && !check_value(L, c, &v, e, json, scratch, err, errlen))
                return 0;
        }
        if (c->strict && old.kind != CELL_NONE && !check_value(L, c, &old, e, json, scratch, err, errlen))
            return 0;
next:
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}') {
            end = p + 1;
            break;
        }
        goto bad;
    }
    if (end == NULL)
        goto bad; /* (the row does not end within len) */
    if (used != NULL)
        *used = (size_t)(end - row);
    /* A row without an escape whose bytes do not hold the secret has no
     * key or value that does: one search of the row, not one of each. */
    if (slen > 0 && scan < 2 && (scan == 0 || !wv_holds_plain(row, (size_t)(end - row), secret, slen)))
        slen = 0;
    if (c->nd != NULL) {
        int r;
        /* (the keys, escaped ones too: a row with an escape keeps slen) */
        for (i = 0; slen > 0 && i < c->nd->n; i++)
            if (c->nd->mem[i].klen >= slen)
                wv_mask_plain(c->nd->keys.p + c->nd->mem[i].koff, c->nd->mem[i].klen, secret, slen);
        r = c->nd->lua ? 2 : nd_line(L, c, e, json, scratch, secret, slen, &msg, err, errlen);
        if (r == 0 && msg == NULL)
            return 0; /* (err written) */
        if (r == 0)
            goto failed;
        /* A row left to the Lua encoder is noted once, on the careful way. */
        if ((r == 1 || c->nd->final) && c->nd->time != NULL && !nd_time(c, e, secret, slen, &msg))
            goto failed;
        c->made += r == 1;
        return r;
    }
    for (i = 0; i < c->ncols; i++) {
        const wv_cell *cell = &c->cells[i];
        if (i > 0 && !wv_buf_add(&c->out, ",", 1))
            goto failed;
        if (cell->kind == CELL_STRING) {
            const char *s;
            size_t n;
            int raw;
            if (!cell_text(c, cell, e, secret, slen, &s, &n, &raw, &msg)
                || !(raw ? add_raw_cell(&c->out, s, n) : add_cell(&c->out, s, n)))
                goto failed;
        } else if (cell->kind == CELL_SCALAR) {
            char num[64];
            size_t n;
            char derr[160];
            /* A number or a boolean: decoded and written by this Lua. */
            if (!wv_json_decode_ctx(L, json, cell->p, cell->n, scratch, NULL, 0, derr, sizeof derr)) {
                snprintf(err, errlen, "%s", derr);
                return 0;
            }
            n = lua_form(L, num, sizeof num);
            if (!add_cell(&c->out, num, n))
                goto failed;
        }
    }
    if (!wv_buf_add(&c->out, "\r\n", 2))
        goto failed;
    if (c->time_col >= 0 && !keep_time(c, &c->cells[c->time_col], e, secret, slen, &msg))
        goto failed;
    c->made++;
    return 1;
bad:
    msg = "malformed row";
failed:
    snprintf(err, errlen, "%s", msg);
    return 0;
}

int wv_csv_json_row(lua_State *L, wv_csv *c, const char *row, size_t len, wv_json_ctx *json,
                    wv_buf *scratch, const char *secret, size_t slen, char *err, size_t errlen)
{
    int r;
    if (c->nd != NULL)
        c->nd->final = 1;
    r = row_line(L, c, row, len, json, scratch, secret, slen, NULL, err, errlen);
    if (c->nd != NULL)
        c->nd->final = 0;
    return r;
}

int wv_csv_json_row_try(lua_State *L, wv_csv *c, const char *row, size_t avail, wv_json_ctx *json,
                        wv_buf *scratch, const char *secret, size_t slen, size_t *used)
{
    size_t out_len = c->out.len, hint = c->hint;
    char err[8];
    if (c->skip > 0)
        return 0;
    if (row_line(L, c, row, avail, json, scratch, secret, slen, used, err, sizeof err) == 1)
        return 1;
    c->out.len = out_len;  /* (nothing of it kept: the caller goes the careful way) */
    c->hint = hint;
    return 0;
}

void wv_csv_open(lua_State *L)
{
    wv_set_buffered(L, sizeof(wv_line), l_csv_row, "csv_row");
}
