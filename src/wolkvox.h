/*
 * wolkvox.h: internal interface between the C units of wolkvox.core.
 * Nothing here is exported: the build uses -fvisibility=hidden and only
 * luaopen_wolkvox_core carries WV_EXPORT.
 */
#ifndef WOLKVOX_H
#define WOLKVOX_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"

#define WV_VERSION "0.2.0"

#if defined(__GNUC__)
#define WV_EXPORT __attribute__((visibility("default")))
#else
#define WV_EXPORT
#endif

/* A growable byte buffer.  Whoever embeds one frees it (wv_buf_free). */
typedef struct {
    char *p;
    size_t len;
    size_t cap;
} wv_buf;

/* Make room for `extra` more bytes; 0 when out of memory (buffer unchanged). */
static inline int wv_buf_reserve(wv_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;
    if (extra > (size_t)-1 - b->len)
        return 0;
    need = b->len + extra;
    if (need <= b->cap)
        return 1;
    cap = b->cap ? b->cap : 4096;
    while (cap < need)
        cap = cap > (size_t)-1 / 2 ? need : cap * 2;
    p = (char *)realloc(b->p, cap);
    if (p == NULL)
        return 0;
    b->p = p;
    b->cap = cap;
    return 1;
}

/* Append s[0..n); 0 when out of memory (buffer unchanged). */
static inline int wv_buf_add(wv_buf *b, const char *s, size_t n)
{
    if (n == 0)
        return 1;
    if (!wv_buf_reserve(b, n))
        return 0;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 1;
}

static inline void wv_buf_free(wv_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Where a string's plain run ends: the first byte that is a quote, a
 * backslash or a control character.  Most of an answer's bytes are inside
 * strings, so on little-endian machines with 64-bit words eight of them are
 * looked at together: each test sets the high bit of a byte that matches
 * (a borrow can only mark bytes after a match, never before it, so the
 * lowest marked byte is the first match). */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) \
    && defined(__SIZEOF_LONG_LONG__)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && __SIZEOF_LONG_LONG__ == 8
#define WV_JSON_SWAR 1
#endif
#endif

static inline const char *wv_plain_end(const char *p, const char *e)
{
#ifdef WV_JSON_SWAR
    const unsigned long long ones = 0x0101010101010101ULL, highs = ones * 0x80;
    while (e - p >= 8) {
        unsigned long long x, q, b, m;
        memcpy(&x, p, 8);
        q = x ^ (ones * '"');
        b = x ^ (ones * '\\');
        m = (((q - ones) & ~q) | ((b - ones) & ~b) | ((x - ones * 0x20) & ~x)) & highs;
        if (m != 0)
            return p + (__builtin_ctzll(m) >> 3);
        p += 8;
    }
#endif
    while (p < e && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
        p++;
    return p;
}

/* Registry names of the userdata types. */
#define WV_SESSION_MT "wolkvox.session"
#define WV_SCRATCH_MT "wolkvox.scratch"

/* Maximum nesting the JSON decoder accepts (lua-cjson's default too). */
#define WV_JSON_MAX_DEPTH 1000

/* Largest size hint the decoder gives a new table: hints come from the
 * answer (the previous row's size) and must not let it make huge tables. */
#define WV_JSON_MAX_HINT 64

/*
 * Decode the JSON text s[0..len) and push the value on L.  Returns 1 on
 * success; on a syntax error pushes nothing, writes a message into err and
 * returns 0.  `scratch` holds unescaped strings; its owner frees it, so a Lua
 * memory error raised while decoding leaks nothing.  JSON null is pushed as
 * a NULL light userdata inside arrays and at top level, and left out of objects.
 * Every decoded string (key or value) that holds secret[0..m) is pushed with
 * it masked (see wv_mask_plain); m = 0 masks nothing.
 */
int wv_json_decode_masked(lua_State *L, const char *s, size_t len, wv_buf *scratch,
                          const char *secret, size_t m, char *err, size_t errlen);

/*
 * Token masking (token.c).  wv_mask_plain overwrites with '*' every occurrence
 * of secret[0..m) in buf[0..n); wv_mask_text also finds it JSON-escaped and
 * its beginning cut by the end of the text.  Both return the count masked.
 */
size_t wv_mask_plain(char *buf, size_t n, const char *secret, size_t m);
/* Whether buf[0..n) holds secret[0..m) (what wv_mask_plain would mask). */
int wv_holds_plain(const char *buf, size_t n, const char *secret, size_t m);
size_t wv_mask_text(char *buf, size_t n, const char *secret, size_t m);

/* A decoder context owned by the caller (heap; free it with
 * wv_json_ctx_free): decoding many texts with one keeps the size hints.
 * wv_json_decode_ctx decodes one value of a larger text: no byte order mark. */
typedef struct wv_json_ctx wv_json_ctx;
wv_json_ctx *wv_json_ctx_new(void);
void wv_json_ctx_free(wv_json_ctx *c);
int wv_json_decode_ctx(lua_State *L, wv_json_ctx *c, const char *s, size_t len, wv_buf *scratch,
                       const char *secret, size_t m, char *err, size_t errlen);
/* Unescape the rest of a JSON string from `from` (inside the quotes) up to
 * its closing quote, appending to b: 1 and *at just after the quote, or 0
 * and *msg, *at where it is wrong (the decoder's own rules and messages). */
int wv_json_unescape(const char *from, const char *e, wv_buf *b, const char **at, const char **msg);

/* Check one value of a larger text as wv_json_decode_ctx would decode it,
 * building nothing: 1 when it would decode, else 0 and err. */
int wv_json_check_ctx(lua_State *L, wv_json_ctx *c, const char *s, size_t len, wv_buf *scratch,
                      char *err, size_t errlen);

/* The key and value caches of a context: the table at stack index `idx`
 * (absolute; 0: none, for the calls that follow), made by
 * wv_json_cache_table(L, 1), holds the keys and the repeated short values
 * of the rows decoded, so those of same-shaped rows are pushed again
 * instead of made again.  wv_json_ctx_forget_keys must be called whenever
 * another table takes its place (a new answer's state: stream.c). */
void wv_json_cache_table(lua_State *L, int values);
void wv_json_ctx_keys(wv_json_ctx *c, lua_State *L, int idx);
void wv_json_ctx_forget_keys(wv_json_ctx *c);

/* The value at the start of s[0..len), which may be followed by anything
 * (the rest of a stream's buffer): 1 with its length in *used when it is
 * whole and valid (decoded onto the stack, or only checked: `check`); 0
 * otherwise, nothing pushed and no message (cut short by the end of the
 * buffer, or malformed: the caller's scanner tells which). */
int wv_json_decode_prefix_ctx(lua_State *L, wv_json_ctx *c, const char *s, size_t len, wv_buf *scratch,
                              const char *secret, size_t m, int check, size_t *used);

/*
 * An answer decoded as it arrives (stream.c): the bytes are appended to
 * `*in` by the owner; each step consumes what it can.  The Lua side of the
 * state is a table (wv_stream_state: [1] envelope, [2] current key, [4] a
 * whole top-level value, [5] the rows list, where rows are appended).
 */
typedef struct {
    wv_buf *in;
    wv_buf *scratch;
    wv_json_ctx *json;
    const char *secret;
    size_t secret_len;
    size_t pos, dropped, scan;
    int depth, in_string, escape, scanning;
    int scalar;              /* the value being scanned is a number or a literal */
    int state, top_array, streamed, whole, rows_key;
    int count_only;          /* rows are checked and counted, not decoded */
    struct wv_csv *csv;      /* rows become CSV lines there (csv.c), not tables */
    int encode;              /* during a step: the stack index of the Lua encoder
                              * of the NDJSON rows csv.c leaves to it (0: none) */
    int encode_failed;       /* the stream failed because the encoder could not
                              * write a row (an output error, not the answer's) */
    size_t rows, batch;
    char err[320];
} wv_stream;
void wv_stream_init(wv_stream *d, wv_buf *in, wv_buf *scratch, wv_json_ctx *json, const char *secret,
                    size_t secret_len);
/* Push a new state table. */
void wv_stream_state(lua_State *L);
/* Consume what `in` holds (`last`: the input has ended): 1 complete, 0 more
 * input needed, -1 failed (wv_stream_error). */
/* The Lua encoder (the function at `fn`) of the NDJSON rows csv.c leaves to
 * it, kept in the stream's state table at `st` (absolute indices). */
void wv_stream_set_encoder(lua_State *L, int st, int fn);
int wv_stream_step(lua_State *L, wv_stream *d, int st, int last);
int wv_stream_failed(const wv_stream *d);
/* Bytes of `in` the decoder has not looked at yet (0 once failed).  The
 * bytes of a value it is still reading (scanned up to the end of `in`) are
 * not counted: no step can make progress on them before more input comes,
 * so a value of any size arrives in one pass over its bytes. */
size_t wv_stream_pending(const wv_stream *d);
const char *wv_stream_error(const wv_stream *d);
/* After a complete step: push the answer as core.decode would give it. */
void wv_stream_push_value(lua_State *L, const wv_stream *d, int st);

/* Push a new core.decoder (stream.c) masking secret[0..slen); `count`:
 * rows are checked and counted, not decoded. */
void wv_decoder_push(lua_State *L, const char *secret, size_t slen, int count);
/* Put the decoder at `dec` in CSV mode when the options at `opts` say so
 * (`csv`, `skip`). */
void wv_decoder_csv(lua_State *L, int dec, int opts);

/* Answers spooled to an unnamed temporary file (spool.c).  create: a file
 * in `dir`, or -1 and *err; write: all of p[0..n), or 0 and *err; push: a
 * wolkvox.spool owning *fd (set to -1 once owned) and a copy of the secret. */
int wv_spool_create(const char *dir, int *err);
int wv_spool_write(int fd, const char *p, size_t n, int *err);
void wv_spool_push(lua_State *L, int *fd, const char *secret, size_t secret_len);

/* CSV lines made straight from rows' JSON text (csv.c), for a decoder in
 * CSV mode and for a transfer that spools lines: the same lines
 * core.csv_row makes of the decoded rows.  new: the columns from the Lua
 * list of strings at `cols` (copied), the first `skip` rows left out, and
 * each row's `time` field (a name, or NULL) noted for push_times; NULL
 * when out of memory.  strict: every value is checked as the decoder
 * checks it (for text nothing checked before).  extra: the first row had
 * a member no column takes.  json_row: append the line of one row (1), or
 * 0 and err; out: the lines made so far. */
typedef struct wv_csv wv_csv;
wv_csv *wv_csv_new(lua_State *L, int cols, size_t skip, const char *time, size_t tlen);
/* The same for NDJSON lines: what wolkvox.json.encode_row makes of each
 * decoded row.  json_row gives 2 for a row it leaves to the Lua encoder (a
 * nested value, a number JSON cannot hold, more than 256 members). */
wv_csv *wv_ndjson_new(size_t skip, const char *time, size_t tlen);
void wv_csv_strict(wv_csv *c);
int wv_csv_extra(const wv_csv *c);
/* Push the list of the rows' times: strings, false where a row had none. */
void wv_csv_push_times(lua_State *L, const wv_csv *c);
void wv_csv_free(wv_csv *c);
wv_buf *wv_csv_out(wv_csv *c);
int wv_csv_json_row(lua_State *L, wv_csv *c, const char *row, size_t len, wv_json_ctx *json,
                    wv_buf *scratch, const char *secret, size_t slen, char *err, size_t errlen);
/* The row at the start of the `avail` bytes at `row`, when it is whole and
 * well formed there: its line added as wv_csv_json_row adds it, its length
 * in `used`, 1; else 0 and nothing added (the caller finds the row's end
 * first and calls wv_csv_json_row, which says what is wrong). */
int wv_csv_json_row_try(lua_State *L, wv_csv *c, const char *row, size_t avail, wv_json_ctx *json,
                        wv_buf *scratch, const char *secret, size_t slen, size_t *used);

/* A gzip answer inflated on a thread of its own (inflate.c).  start: the
 * thread, calling wake(ud) when there is output or room (NULL when it cannot
 * start); put: a copy of compressed bytes (0 once it failed or out of
 * memory); full: enough input waits (pause the transfer); end_input: no
 * more input; take: what is inflated given to give(ud, p, n) (which says 0
 * to stop), waiting for some with `wait`: 0 more to come, 1 all given, -1
 * the data is bad (error), -2 give said stop; free: stop and join. */
typedef struct wv_inflater wv_inflater;
wv_inflater *wv_inflater_start(void (*wake)(void *), void *ud);
int wv_inflater_put(wv_inflater *f, const char *p, size_t n);
int wv_inflater_full(wv_inflater *f);
void wv_inflater_end_input(wv_inflater *f);
int wv_inflater_take(wv_inflater *f, int (*give)(void *, const char *, size_t), void *ud, int wait);
const char *wv_inflater_error(wv_inflater *f);
void wv_inflater_free(wv_inflater *f);

/* Push a new scratch buffer userdata (freed by its __gc) and return it. */
wv_buf *wv_scratch_new(lua_State *L);

/* SHA-256 of data; wv_hex writes 2n hex digits and a NUL. */
void wv_sha256(const void *data, size_t len, unsigned char out[32]);
void wv_hex(const unsigned char *bytes, size_t n, char *out);

/* Make the metatable `name`: `methods` as __index, `close` as __gc and (Lua
 * 5.4) __close, `tostring` as __tostring.  Leaves the stack as it was. */
void wv_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                 lua_CFunction close, lua_CFunction tostring);

/* Registration of each unit's types and functions into the module table on top. */
void wv_json_open(lua_State *L);
void wv_session_open(lua_State *L);
void wv_sys_open(lua_State *L);
void wv_stream_open(lua_State *L);
void wv_spool_open(lua_State *L);
/* Set field `name` of the table on top to the C function f with one upvalue:
 * a zeroed userdata of `size` bytes whose first member is a wv_buf (freed by
 * the scratch metatable's __gc): a buffer kept from call to call. */
void wv_set_buffered(lua_State *L, size_t size, lua_CFunction f, const char *name);
void wv_rowjson_open(lua_State *L);
/* A string, a number (at stack index idx) as wolkvox.json's encoder writes
 * them (rowjson.c): 1, or 0 (out of memory; for a number also NaN and the
 * infinities, which JSON cannot hold). */
int wv_json_put_string(wv_buf *b, const char *s, size_t n);
int wv_json_put_number(lua_State *L, wv_buf *b, int idx);

/* The order in which wolkvox.json's encoder writes a row's keys: Lua's own
 * `<` (the VM's comparison), keys of one name in the order they came
 * (rowjson.c).  Rows of one answer have the same keys in the same order,
 * so the last row's order is kept (up to WV_ORDER_ROOM bytes of keys) and
 * taken again.  wv_order_keys sets o->order for keys[i], lens[i] (n at most
 * WV_ORDER_MAX): 1 when it was made again, 0 when taken again, -1 when the
 * Lua stack has no room. */
#define WV_ORDER_MAX 256
#define WV_ORDER_ROOM 4096
typedef struct {
    size_t n;                    /* the keys kept (0: none) */
    size_t lens[WV_ORDER_MAX];
    char keys[WV_ORDER_ROOM];
    size_t order[WV_ORDER_MAX];
} wv_key_order;
int wv_order_keys(lua_State *L, wv_key_order *o, const char *const *keys, const size_t *lens, size_t n);
void wv_csv_open(lua_State *L);
void wv_cells_open(lua_State *L);

#endif
