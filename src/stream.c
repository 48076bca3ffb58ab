/*
 * stream.c: an incremental decoder for wolkvox answers, fed in chunks as
 * they arrive (a cosocket's reads, libcurl's writes), that hands over the
 * rows of the answer's `data` array as soon as each one is complete.
 *
 * An answer is `{"code":..,"msg":..,"data":[row, row, ...]}` (keys in any
 * order) or a bare array of rows.  The decoder keeps only what it has not
 * finished: the bytes of the value being read.  A small state machine walks
 * the envelope; a scanner finds where each value ends (strings, escapes and
 * nesting tracked across chunks, so a value is never scanned twice); each
 * complete value is then decoded by the whole-text decoder (json.c), which
 * also checks it.  So the tables are the same as core.decode would build,
 * and the token is masked in them the same way.
 *
 * Lua: core.decoder { secret = ... } -> d;  d:feed(chunk) -> rows (a list,
 * maybe empty) or nil, err;  d:finish() -> envelope (every member but the
 * streamed rows; `data` itself when it was not an array) or nil, err.
 */
#include <stdio.h>
#include <string.h>

#include "wolkvox.h"

#define WV_DECODER_MT "wolkvox.decoder"

/* The slot of a state table holding json.c's key cache. */
#define KEYS_SLOT 7
/* The slot holding the Lua encoder of a decoder in NDJSON mode. */
#define ENCODE_SLOT 8

enum {
    ST_START,      /* before the top-level value */
    ST_KEY,        /* in the envelope: a key or '}' */
    ST_KEY_ONLY,   /* after ',' in the envelope: a key */
    ST_KEY_NEXT,   /* after a member: ',' or '}' */
    ST_COLON,      /* after a key */
    ST_VALUE,      /* a member's value */
    ST_ROWS,       /* in the rows array: a row or ']' */
    ST_ROW_NEXT,   /* after a row: ',' or ']' */
    ST_ROW,        /* a row after ',' (']' not allowed) */
    ST_WHOLE,      /* a top-level value that is not streamed */
    ST_END,        /* after the top-level value: only white space */
    ST_FAILED
};

/* The core.decoder userdata: a stream with its own buffers. */
typedef struct {
    wv_stream s;
    wv_buf in;
    wv_buf scratch;
    wv_json_ctx *json;
    char *secret;
    int closed;
} wv_decoder;

static wv_decoder *check_decoder(lua_State *L)
{
    return (wv_decoder *)luaL_checkudata(L, 1, WV_DECODER_MT);
}

static int is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static void skip_ws(wv_stream *d)
{
    while (d->pos < d->in->len && is_ws(d->in->p[d->pos]))
        d->pos++;
}

static int failed(wv_stream *d, const char *msg)
{
    if (d->state != ST_FAILED) {
        snprintf(d->err, sizeof d->err, "%s at byte %lu", msg, (unsigned long)(d->dropped + d->pos + 1));
        d->state = ST_FAILED;
    }
    return -1;
}

/*
 * Scan the value that starts at d->pos: 1 when it is complete (its length
 * in *len), 0 when more bytes are needed (the scan resumes where it
 * stopped), -1 on a structural error.  A number or a literal needs the byte
 * after it, unless `last` (the input ended).
 */
static int scan_value(wv_stream *d, size_t *len, int last)
{
    const char *p = d->in->p + d->pos;
    size_t n = d->in->len - d->pos, i;
    if (!d->scanning) {
        d->scanning = 1;
        d->scan = 0;
        d->depth = 0;
        d->in_string = 0;
        d->escape = 0;
        d->scalar = 0;
    }
    i = d->scan;
    if (d->scalar || (i == 0 && n > 0 && p[0] != '{' && p[0] != '[' && p[0] != '"')) {
        /* A number or a literal: up to a delimiter.  The scan resumes
         * where it stopped, as for the other values: a long one is never
         * scanned twice. */
        d->scalar = 1;
        while (i < n && !is_ws(p[i]) && p[i] != ',' && p[i] != ']' && p[i] != '}')
            i++;
        if (i == n && !last) {
            d->scan = i;
            return 0;
        }
        d->scanning = 0;
        d->scalar = 0;
        *len = i;
        return i > 0 ? 1 : -1;
    }
    for (; i < n; i++) {
        char c = p[i];
        if (d->in_string) {
            if (!d->escape && c != '\\' && c != '"') {
                /* The plain run of a string: jump to its next quote or
                 * backslash (most of an answer's bytes are inside strings). */
                const char *q = (const char *)memchr(p + i, '"', n - i);
                const char *b = (const char *)memchr(p + i, '\\', (size_t)((q ? q : p + n) - (p + i)));
                const char *stop = b ? b : q;
                if (stop == NULL) {
                    i = n;
                    break;
                }
                i = (size_t)(stop - p);
                c = *stop;
            }
            if (d->escape)
                d->escape = 0;
            else if (c == '\\')
                d->escape = 1;
            else if (c == '"') {
                d->in_string = 0;
                if (d->depth == 0) {
                    d->scanning = 0;
                    *len = i + 1;
                    return 1;
                }
            }
            continue;
        }
        if (c == '"')
            d->in_string = 1;
        else if (c == '{' || c == '[') {
            if (++d->depth > WV_JSON_MAX_DEPTH)
                return -1;
        } else if (c == '}' || c == ']') {
            if (--d->depth < 0)
                return -1;
            if (d->depth == 0) {
                d->scanning = 0;
                *len = i + 1;
                return 1;
            }
        }
    }
    d->scan = i;
    return 0;
}

/* Decode in[pos .. pos+len) onto the stack (1), or only check it
 * (`check`: nothing pushed), or fail (-1). */
static int decode_slice(lua_State *L, wv_stream *d, size_t len, int check)
{
    char err[160];
    const char *p = d->in->p + d->pos;
    int ok = check ? wv_json_check_ctx(L, d->json, p, len, d->scratch, err, sizeof err)
                   : wv_json_decode_ctx(L, d->json, p, len, d->scratch, d->secret, d->secret_len,
                                        err, sizeof err);
    if (!ok) {
        snprintf(d->err, sizeof d->err, "%s (in the value at byte %lu)", err,
                 (unsigned long)(d->dropped + d->pos + 1));
        d->state = ST_FAILED;
        return -1;
    }
    d->pos += len;
    return 1;
}

/* The next complete value decoded onto the stack (1; `check`: only
 * checked, nothing pushed); 0 when more input is needed; -1 on an error
 * (`what` names a malformed value). */
static int take_value(lua_State *L, wv_stream *d, int last, const char *what, int check)
{
    size_t len = 0;
    int r;
    if (!d->scanning && d->pos < d->in->len && (d->in->p[d->pos] == '{' || d->in->p[d->pos] == '[')) {
        /* An object or an array (a row) is most often whole in the buffer:
         * decoded at once, its bytes are read once instead of scanned for
         * its end first.  One cut by the buffer's end, or a malformed one,
         * goes to the scanner as before (which resumes where it stops: a
         * value is tried this way once, then only scanned until complete). */
        if (wv_json_decode_prefix_ctx(L, d->json, d->in->p + d->pos, d->in->len - d->pos, d->scratch, d->secret,
                                      d->secret_len, check, &len)) {
            d->pos += len;
            return 1;
        }
    }
    r = scan_value(d, &len, last);
    if (r < 0)
        return failed(d, what);
    if (r == 0)
        return 0;
    return decode_slice(L, d, len, check);
}

/* The NDJSON line of a row csv.c leaves to the Lua encoder (a nested
 * value, a number JSON cannot hold): the row decoded and given to it.  1,
 * or 0 and err (its message: the field JSON cannot hold). */
static int encoded_line(lua_State *L, wv_stream *d, const char *row, size_t len, char *err, size_t errlen)
{
    size_t n;
    const char *text;
    int ok;
    wv_buf *out = wv_csv_out(d->csv);
    if (d->encode == 0) {
        snprintf(err, errlen, "a row needs the Lua encoder, and none was given");
        return 0;
    }
    if (!wv_json_decode_ctx(L, d->json, row, len, d->scratch, d->secret, d->secret_len, err, errlen))
        return 0;
    lua_pushvalue(L, d->encode);
    lua_insert(L, -2);
    lua_call(L, 1, 2);
    text = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &n) : NULL;
    if (text == NULL) {
        snprintf(err, errlen, "%s", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                                   : "the row cannot be written as JSON");
        lua_pop(L, 2);
        d->encode_failed = 1;
        return 0;
    }
    ok = wv_buf_add(out, text, n) && wv_buf_add(out, "\n", 1);
    lua_pop(L, 2);
    if (!ok)
        snprintf(err, errlen, "not enough memory");
    return ok;
}

/*
 * Run the state machine over what is buffered.  Rows go into the table at
 * `rows`, members into the envelope at `env`.  0 when it needs more input,
 * 1 when the answer is complete, -1 on an error.
 */
static int run(lua_State *L, wv_stream *d, int rows, int env, int last)
{
    for (;;) {
        int r;
        if (d->state == ST_FAILED)
            return -1;
        skip_ws(d);
        if (d->state == ST_END) {
            if (d->pos < d->in->len)
                return failed(d, "trailing characters after the JSON value");
            return 1;
        }
        if (d->pos >= d->in->len)
            return last ? failed(d, "unexpected end of input") : 0;
        switch (d->state) {
        case ST_START:
            /* A UTF-8 byte order mark is tolerated as the answer's very
             * first bytes, as core.decode does (and nowhere else). */
            if (d->dropped + d->pos == 0 && (unsigned char)d->in->p[0] == 0xEF) {
                if (d->in->len < 3 && !last)
                    return 0;
                if (d->in->len >= 3 && memcmp(d->in->p, "\xEF\xBB\xBF", 3) == 0) {
                    d->pos += 3;
                    continue;
                }
            }
            if (d->in->p[d->pos] == '{') {
                d->pos++;
                d->state = ST_KEY;
            } else if (d->in->p[d->pos] == '[') {
                d->pos++;
                d->top_array = 1;
                d->state = ST_ROWS;
            } else
                d->state = ST_WHOLE;
            break;
        case ST_KEY_NEXT:
            if (d->in->p[d->pos] == '}') {
                d->pos++;
                d->state = ST_END;
                break;
            }
            if (d->in->p[d->pos] != ',')
                return failed(d, "expected ',' or '}' in object");
            d->pos++;
            d->state = ST_KEY_ONLY;
            break;
        case ST_KEY:
        case ST_KEY_ONLY:
            if (d->state == ST_KEY && d->in->p[d->pos] == '}') {
                d->pos++;
                d->state = ST_END;
                break;
            }
            if (d->in->p[d->pos] != '"')
                return failed(d, "expected a string key in object");
            if ((r = take_value(L, d, last, "bad key", 0)) <= 0)
                return r;
            d->rows_key = strcmp(lua_tostring(L, -1), "data") == 0;
            lua_replace(L, env + 1); /* the key waits in its slot */
            d->state = ST_COLON;
            break;
        case ST_COLON:
            if (d->in->p[d->pos] != ':')
                return failed(d, "expected ':' after key in object");
            d->pos++;
            d->state = ST_VALUE;
            break;
        case ST_VALUE:
            if (d->rows_key && d->in->p[d->pos] == '[') {
                d->pos++;
                d->state = ST_ROWS;
                break;
            }
            if ((r = take_value(L, d, last, "bad value", 0)) <= 0)
                return r;
            /* JSON null leaves the member out, as core.decode does. */
            if (lua_islightuserdata(L, -1) && lua_touserdata(L, -1) == NULL) {
                lua_pop(L, 1);
                lua_pushnil(L);
            }
            lua_pushvalue(L, env + 1);
            lua_insert(L, -2);
            lua_rawset(L, env);
            d->state = ST_KEY_NEXT;
            break;
        case ST_ROWS:
        case ST_ROW_NEXT:
        case ST_ROW:
            if (d->state != ST_ROW && d->in->p[d->pos] == ']') {
                d->pos++;
                d->state = d->top_array ? ST_END : ST_KEY_NEXT;
                d->streamed = !d->top_array;
                break;
            }
            if (d->state == ST_ROW_NEXT) {
                if (d->in->p[d->pos] != ',')
                    return failed(d, "expected ',' or ']' in array");
                d->pos++;
                d->state = ST_ROW;
                break;
            }
            if (d->csv != NULL) {
                char err[160];
                size_t len = 0;
                /* Most rows are whole in the buffer: made in one reading,
                 * their end found on the way (else found first, below). */
                if (!d->scanning && wv_csv_json_row_try(L, d->csv, d->in->p + d->pos, d->in->len - d->pos,
                                                        d->json, d->scratch, d->secret, d->secret_len, &len)) {
                    d->pos += len;
                    d->rows++;
                    d->state = ST_ROW_NEXT;
                    break;
                }
                r = scan_value(d, &len, last);
                if (r <= 0)
                    return r < 0 ? failed(d, "bad row") : 0;
                r = wv_csv_json_row(L, d->csv, d->in->p + d->pos, len, d->json, d->scratch, d->secret,
                                    d->secret_len, err, sizeof err);
                if (r == 2)
                    r = encoded_line(L, d, d->in->p + d->pos, len, err, sizeof err);
                if (!r) {
                    snprintf(d->err, sizeof d->err, "%s (in the row at byte %lu)", err,
                             (unsigned long)(d->dropped + d->pos + 1));
                    d->state = ST_FAILED;
                    return -1;
                }
                d->pos += len;
                d->rows++;
                d->state = ST_ROW_NEXT;
                break;
            }
            if ((r = take_value(L, d, last, "bad row", d->count_only)) <= 0)
                return r;
            if (!d->count_only)
                lua_rawseti(L, rows, (int)++d->batch);
            d->rows++;
            d->state = ST_ROW_NEXT;
            break;
        case ST_WHOLE:
            if ((r = take_value(L, d, last, "bad value", 0)) <= 0)
                return r;
            lua_replace(L, env + 3);
            d->whole = 1;
            d->state = ST_END;
            break;
        default:
            return failed(d, "internal state");
        }
    }
}

/* Drop what was consumed, keep the rest at the front of the buffer. */
static void compact(wv_stream *d)
{
    if (d->pos > 0) {
        memmove(d->in->p, d->in->p + d->pos, d->in->len - d->pos);
        d->in->len -= d->pos;
        d->dropped += d->pos;
        d->pos = 0;
    }
}

void wv_stream_init(wv_stream *d, wv_buf *in, wv_buf *scratch, wv_json_ctx *json, const char *secret,
                    size_t secret_len)
{
    memset(d, 0, sizeof *d);
    d->in = in;
    d->scratch = scratch;
    d->json = json;
    d->secret = secret;
    d->secret_len = secret != NULL ? secret_len : 0;
    d->state = ST_START;
    /* A new answer comes with a new state table (wv_stream_state): the
     * keys cached from the last one are no longer held. */
    if (json != NULL)
        wv_json_ctx_forget_keys(json);
}

void wv_stream_state(lua_State *L)
{
    lua_createtable(L, KEYS_SLOT, 0);
    lua_newtable(L);
    lua_rawseti(L, -2, 1);
    lua_newtable(L);
    lua_rawseti(L, -2, 5);
    /* The rows' keys and repeated values, decoded once (json.c's caches). */
    wv_json_cache_table(L, 1);
    lua_rawseti(L, -2, KEYS_SLOT);
}

void wv_stream_set_encoder(lua_State *L, int st, int fn)
{
    lua_pushvalue(L, fn);
    lua_rawseti(L, st, ENCODE_SLOT);
}

int wv_stream_step(lua_State *L, wv_stream *d, int st, int last)
{
    int base, r, i;
    st = st < 0 ? lua_gettop(L) + st + 1 : st;
    if (d->state == ST_FAILED)
        return -1;
    base = lua_gettop(L) + 1;
    for (i = 1; i <= 5; i++)
        lua_rawgeti(L, st, i);
    lua_rawgeti(L, st, KEYS_SLOT);
    lua_rawgeti(L, st, ENCODE_SLOT);
    d->encode = lua_isfunction(L, base + 6) ? base + 6 : 0;
    if (d->json != NULL)
        wv_json_ctx_keys(d->json, L, lua_istable(L, base + 5) ? base + 5 : 0);
    r = run(L, d, base + 4, base, last);
    d->encode = 0;
    if (d->json != NULL)
        wv_json_ctx_keys(d->json, L, 0);
    if (r == 0 && last)
        r = failed(d, "unexpected end of input");
    for (i = 0; i < 4; i++) {
        lua_pushvalue(L, base + i);
        lua_rawseti(L, st, i + 1);
    }
    lua_settop(L, base - 1);
    compact(d);
    return r;
}

size_t wv_stream_pending(const wv_stream *d)
{
    size_t seen;
    if (d->state == ST_FAILED)
        return 0;
    seen = d->pos + (d->scanning ? d->scan : 0);
    return d->in->len > seen ? d->in->len - seen : 0;
}

const char *wv_stream_error(const wv_stream *d)
{
    return d->err;
}

int wv_stream_failed(const wv_stream *d)
{
    return d->state == ST_FAILED;
}

void wv_stream_push_value(lua_State *L, const wv_stream *d, int st)
{
    st = st < 0 ? lua_gettop(L) + st + 1 : st;
    if (d->top_array) {
        lua_rawgeti(L, st, 5);
    } else if (d->whole) {
        lua_rawgeti(L, st, 4);
    } else {
        lua_rawgeti(L, st, 1);
        if (d->streamed) {
            lua_rawgeti(L, st, 5);
            lua_setfield(L, -2, "data");
        }
    }
}

/* Push the decoder's state table (its uservalue). */
static void push_uv(lua_State *L)
{
    wv_push_uservalue(L, 1);
}

/***
 * Feed the next chunk of the answer.
 * @function decoder:feed
 * @tparam string chunk
 * @return a list of the rows completed by it (maybe empty); or nil and what
 *   is wrong (later calls say the same)
 */
/* Run a step with the buffered input (`last`: it has ended), the decoder
 * at 1: pushes the state table (2) and the list of the rows this step
 * completes (3), and returns the step's result; or pushes nil and the
 * error and returns -1 (a closed decoder raises). */
static int step(lua_State *L, wv_decoder *d, int last)
{
    int r;
    if (d->closed)
        return luaL_error(L, "decoder is closed");
    if (d->s.state != ST_FAILED) {
        push_uv(L);                 /* 2: the state table */
        lua_newtable(L);            /* 3: the rows this step completes */
        lua_pushvalue(L, -1);
        lua_rawseti(L, 2, 5);
        d->s.batch = 0;
        r = wv_stream_step(L, &d->s, 2, last);
        if (r > 0 || (r == 0 && !last))
            return r;
    }
    lua_settop(L, 1);
    lua_pushnil(L);
    lua_pushstring(L, d->s.err);
    return -1;
}

/* Push the CSV lines made so far (a decoder in CSV mode) and let them go. */
static int csv_lines(lua_State *L, wv_decoder *d)
{
    wv_buf *out = wv_csv_out(d->s.csv);
    lua_pushlstring(L, out->len > 0 ? out->p : "", out->len);
    out->len = 0;
    return 1;
}

static int l_feed(lua_State *L)
{
    wv_decoder *d = check_decoder(L);
    size_t n;
    const char *chunk = luaL_checklstring(L, 2, &n);
    if (!d->closed && d->s.state != ST_FAILED && n > 0) {
        if (!wv_buf_reserve(&d->in, n))
            return luaL_error(L, "not enough memory");
        memcpy(d->in.p + d->in.len, chunk, n);
        d->in.len += n;
    }
    lua_settop(L, 1);
    if (step(L, d, 0) < 0)
        return 2;
    if (d->s.csv != NULL)
        return csv_lines(L, d); /* the lines of the rows instead */
    return 1;                       /* the rows */
}

/***
 * The input has ended.
 * @function decoder:finish
 * @return the envelope (every member but the streamed rows, whose `data`
 *   member is then absent; an empty table for a bare array of rows; the
 *   value itself for an answer that is neither: see `shape`), the rows
 *   completed by the end (a list), and the count of all rows handed over;
 *   or nil and what is wrong
 */
static int l_finish(lua_State *L)
{
    wv_decoder *d = check_decoder(L);
    lua_settop(L, 1);
    if (step(L, d, 1) < 0)
        return 2;
    if (d->s.whole)
        lua_rawgeti(L, 2, 4); /* a top-level value that is not an object or an array */
    else
        lua_rawgeti(L, 2, 1);
    if (d->s.csv != NULL)
        csv_lines(L, d);
    else
        lua_pushvalue(L, 3);
    lua_pushinteger(L, (lua_Integer)d->s.rows);
    return 3;
}

/***
 * What the answer is: "array" (a bare array: its elements were the rows),
 * "envelope" (an object: its `data` array's elements were the rows, when
 * `streamed()`), "value" (anything else, given whole by finish) or nil
 * before the first byte.
 * @function decoder:shape
 */
static int l_shape(lua_State *L)
{
    wv_decoder *d = check_decoder(L);
    if (d->s.top_array)
        lua_pushliteral(L, "array");
    else if (d->s.whole)
        lua_pushliteral(L, "value");
    else if (d->s.state == ST_START)
        lua_pushnil(L);
    else
        lua_pushliteral(L, "envelope");
    return 1;
}

/***
 * Whether the rows were streamed out of a `data` array (or a bare array).
 * @function decoder:streamed
 */
static int l_streamed(lua_State *L)
{
    wv_decoder *d = check_decoder(L);
    lua_pushboolean(L, d->s.top_array || d->s.streamed);
    return 1;
}

/***
 * With `csv` or `ndjson`: whether the first row had a member no column
 * takes (CSV only; false for NDJSON).
 * @function decoder:extra
 */
static int l_extra(lua_State *L)
{
    wv_decoder *d = check_decoder(L);
    lua_pushboolean(L, d->s.csv != NULL && wv_csv_extra(d->s.csv));
    return 1;
}

/***
 * With `csv` or `ndjson` and `time`: the rows' values of that field so far,
 * a list (false where a row had none); an empty list without them.
 * @function decoder:times
 */
static int l_times(lua_State *L)
{
    wv_decoder *d = check_decoder(L);
    if (d->s.csv != NULL)
        wv_csv_push_times(L, d->s.csv);
    else
        lua_newtable(L);
    return 1;
}

/***
 * Whether the decoder stopped because a row's line could not be made (the
 * NDJSON encoder raised or gave no string): the output's failure, not the
 * answer's.
 * @function decoder:lines_failed
 */
static int l_lines_failed(lua_State *L)
{
    wv_decoder *d = check_decoder(L);
    lua_pushboolean(L, d->s.encode_failed);
    return 1;
}

static int l_gc(lua_State *L)
{
    wv_decoder *d = (wv_decoder *)luaL_checkudata(L, 1, WV_DECODER_MT);
    d->closed = 1;
    wv_buf_free(&d->in);
    wv_buf_free(&d->scratch);
    wv_json_ctx_free(d->json);
    d->json = NULL;
    wv_csv_free(d->s.csv);
    d->s.csv = NULL;
    if (d->secret != NULL) {
        memset(d->secret, 0, d->s.secret_len);
        free(d->secret);
        d->secret = NULL;
        d->s.secret = NULL;
    }
    return 0;
}

static int l_tostring(lua_State *L)
{
    wv_decoder *d = check_decoder(L);
    lua_pushfstring(L, "wolkvox.decoder (%d rows, %d bytes waiting)", (int)d->s.rows, (int)d->in.len);
    return 1;
}

void wv_decoder_push(lua_State *L, const char *secret, size_t slen, int count)
{
    wv_decoder *d;
#if LUA_VERSION_NUM >= 504
    d = (wv_decoder *)lua_newuserdatauv(L, sizeof *d, 1);
#else
    d = (wv_decoder *)lua_newuserdata(L, sizeof *d);
#endif
    memset(d, 0, sizeof *d);
    luaL_getmetatable(L, WV_DECODER_MT);
    lua_setmetatable(L, -2);
    /* The state table: [1] the envelope, [5] the rows list (wv_stream_state). */
    wv_stream_state(L);
    wv_set_uservalue(L, -2);
    d->json = wv_json_ctx_new();
    if (d->json == NULL)
        luaL_error(L, "not enough memory");
    if (secret != NULL && slen > 0) {
        d->secret = (char *)malloc(slen);
        if (d->secret == NULL)
            luaL_error(L, "not enough memory");
        memcpy(d->secret, secret, slen);
    }
    wv_stream_init(&d->s, &d->in, &d->scratch, d->json, d->secret, d->secret != NULL ? slen : 0);
    d->s.count_only = count;
}

/***
 * A decoder for one answer.
 * @function decoder
 * @tparam[opt] table opts `secret`: masked with '*' in every decoded string;
 *   `count`: the rows are checked and counted but not decoded (feed gives
 *   empty lists; finish's third value is the count); `csv`: a list of
 *   column names: each row becomes a CSV line (what core.csv_row makes of
 *   the decoded row), and feed and finish give the lines as one string
 *   instead of a list; `ndjson`: `wolkvox.json.encode_row` (or a function
 *   like it): each row becomes an NDJSON line, what that function makes of
 *   the decoded row (made in C but for a row with a nested value or a
 *   number JSON cannot hold, given to the function), given as `csv`'s
 *   lines are; `skip`: with `csv` or `ndjson`, the first rows are left out;
 *   `time`: with `csv` or `ndjson`, the rows' field whose values `times()`
 *   gives; `strict`: with `csv` or `ndjson`, every value checked as the
 *   decoder checks it (text nobody checked before: an answer as it arrives)
 * @return the decoder
 */
void wv_decoder_csv(lua_State *L, int dec, int opts)
{
    wv_decoder *d = (wv_decoder *)luaL_checkudata(L, dec, WV_DECODER_MT);
    size_t i, n, skip, tlen = 0;
    const char *time = NULL;
    int strict, top = lua_gettop(L);
    lua_getfield(L, opts, "skip");
    skip = lua_isnil(L, -1) ? 0 : (size_t)luaL_checkinteger(L, -1);
    lua_getfield(L, opts, "strict");
    strict = lua_toboolean(L, -1);
    /* The time field's name stays on the stack (a metamethod of opts may
     * run below) until the lines' state has copied it. */
    lua_getfield(L, opts, "time");
    if (!lua_isnil(L, -1)) {
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, opts, "time: the name of a field expected");
        time = lua_tolstring(L, -1, &tlen);
    }
    lua_getfield(L, opts, "ndjson");
    if (!lua_isnil(L, -1)) {
        luaL_argcheck(L, lua_isfunction(L, -1), opts, "ndjson: the Lua encoder of a row expected");
        lua_getfield(L, opts, "csv");
        luaL_argcheck(L, lua_isnil(L, -1), opts, "csv and ndjson: one or the other");
        lua_pop(L, 1);
        d->s.csv = wv_ndjson_new(skip, time, tlen);
        if (d->s.csv == NULL)
            luaL_error(L, "not enough memory");
        if (strict)
            wv_csv_strict(d->s.csv);
        wv_push_uservalue(L, dec);
        wv_stream_set_encoder(L, lua_gettop(L), lua_gettop(L) - 1);
        lua_settop(L, top);
        return;
    }
    lua_getfield(L, opts, "csv");
    if (lua_isnil(L, -1)) {
        lua_settop(L, top);
        return;
    }
    luaL_argcheck(L, lua_istable(L, -1), opts, "csv: a list of column names expected");
    n = lua_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, opts, "csv: a list of column names expected");
        lua_pop(L, 1);
    }
    d->s.csv = wv_csv_new(L, lua_gettop(L), skip, time, tlen);
    lua_settop(L, top);
    if (d->s.csv == NULL)
        luaL_error(L, "not enough memory");
    if (strict)
        wv_csv_strict(d->s.csv);
}

static int l_decoder(lua_State *L)
{
    size_t slen = 0;
    const char *secret = NULL;
    int count = 0;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_getfield(L, 1, "secret");
        if (!lua_isnil(L, -1))
            secret = luaL_checklstring(L, -1, &slen);
        lua_getfield(L, 1, "count");
        count = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    wv_decoder_push(L, secret, slen, count);
    if (!lua_isnoneornil(L, 1))
        wv_decoder_csv(L, lua_gettop(L), 1);
    return 1;
}

static const luaL_Reg decoder_methods[] = {
    { "feed", l_feed },
    { "finish", l_finish },
    { "streamed", l_streamed },
    { "shape", l_shape },
    { "extra", l_extra },
    { "times", l_times },
    { "lines_failed", l_lines_failed },
    { NULL, NULL }
};

void wv_stream_open(lua_State *L)
{
    wv_newclass(L, WV_DECODER_MT, decoder_methods, l_gc, l_tostring);
    lua_pushcfunction(L, l_decoder);
    lua_setfield(L, -2, "decoder");
}
