/*
 * session.h: private to the units of the wolkvox.session type.
 *
 *   session.c   the userdata: construction, lifecycle (busy/close), methods
 *   request.c   a Lua request table -> an easy handle (checks, headers, MIME)
 *   transfer.c  libcurl callbacks, the multi loop, the result table
 *   token.c     the token: its header line, its id, wiping, masking
 *
 * libcurl callbacks never call Lua: they append to buffers owned by the
 * session and return 0 to abort.  All Lua work (reading the request table,
 * building the result) happens outside curl_multi_perform, and every resource
 * a request allocates is stored in the session before anything may raise, so
 * a Lua error leaves nothing unowned.
 */
#ifndef WOLKVOX_SESSION_H
#define WOLKVOX_SESSION_H

#include <curl/curl.h>

#include "wolkvox.h"

#if LIBCURL_VERSION_NUM < 0x074200
#error "wolkvox.core needs libcurl 7.66.0 or newer (curl_multi_poll)"
#endif

#define WV_MAX_CONNS 2
#define WV_TOKEN_HEADER "wolkvox-token: "
/* A body buffer larger than this is given back after the call. */
#define WV_KEEP_BUFFER_BYTES (4u << 20)
#define WV_SNIPPET_BYTES 200
/* An answer is decoded while it arrives once this much waits undecoded:
 * the body never has to exist whole. */
#define WV_FEED_BYTES (256u << 10)
/* A transfer waits (paused) once this much waits undecoded: libcurl can
 * inflate a whole gzip answer in one perform, and the body must not pile
 * up before Lua gets to decode it.  "Undecoded" is what the decoder has
 * not looked at (wv_stream_pending): a single value larger than this (a
 * long string, key or row) is buffered whole, up to max_bytes, rather
 * than paused on, since the decoder needs it whole; the buffer then holds
 * at most that value and WV_PAUSE_BYTES more. */
#define WV_PAUSE_BYTES (4u * WV_FEED_BYTES)

/* A gzip answer decoded as it arrives is inflated on a thread of the core's
 * own (inflate.c), which wakes the multi handle when it has something:
 * curl_multi_wakeup came with libcurl 7.68.0.  Before it, libcurl inflates. */
#if LIBCURL_VERSION_NUM >= 0x074400
#define WV_OWN_INFLATE 1
#else
#define WV_OWN_INFLATE 0
#endif

typedef struct wv_session wv_session;

typedef struct {
    CURL *easy;
    wv_session *owner;
    wv_buf body;
    wv_buf scratch;
    struct curl_slist *headers;
    curl_mime *mime;
    lua_Integer id;          /* 0 when free */
    int sends;               /* times the request went out (libcurl may re-send) */
    int decode;
    int streaming;           /* decoded as it arrives (wv_stream over `body`) */
    int lua_oom;             /* the answer's tables did not fit in memory */
    size_t received;         /* body bytes received (body holds what is not decoded yet) */
    wv_buf head;             /* the body's first bytes, for an error snippet */
    wv_stream stream;
    wv_json_ctx *json;       /* the stream's decoder context, kept for the session */
    int too_large;
    int out_of_memory;
    int spool_fd;            /* the body goes to this file (-1: to `body`) */
    wv_csv *csv;             /* the rows become CSV lines (`csv`), written to csv_fd */
    int csv_fd;
    lua_Integer csv_cap;     /* the rows' times are given when there are this many */
    int own_inflate;         /* a gzip answer is inflated by `inflater`, not libcurl */
    int gzip;                /* the answer says Content-Encoding: gzip */
    int bad_encoding;        /* an encoding not asked for */
    int inflate_failed;      /* the inflater or what it gave failed: stop */
    wv_inflater *inflater;
    int paused;              /* its writes wait until `body` is decoded */
    int spool_errno;         /* writing it failed */
    int stopped;             /* not JSON: the transfer was stopped once the head was kept */
    int start_errno;         /* its spool file could not be made: never sent, the result says why */
    char retry_after[64];
    char errbuf[CURL_ERROR_SIZE];
} wv_conn;

struct wv_session {
    CURLM *multi;
    wv_conn conn[WV_MAX_CONNS];
    int nconns;
    int inflight;
    int closed;              /* no new work: close() was called */
    int freed;               /* handles and buffers released */
    int busy;                /* C code is using the buffers (start, result) */
    int gc_hold;             /* the collector is held while it waits (wait_held) */
    char *token_line;        /* "wolkvox-token: <token>" (token.c), wiped on close */
    size_t token_len;
    size_t max_bytes;
    long timeout_ms;
    lua_Integer next_id;
    lua_Integer requests;
    lua_Integer connects;
    double bytes;
};

/* ---- small helpers shared by the units ---------------------------------- */

static inline void wv_wipe(void *p, size_t n)
{
    volatile unsigned char *v = (volatile unsigned char *)p;
    while (n--)
        *v++ = 0;
}

static inline int wv_has_ctl(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

static inline int wv_ieq_prefix(const char *s, size_t n, const char *prefix)
{
    size_t i, m = strlen(prefix);
    if (n < m)
        return 0;
    for (i = 0; i < m; i++) {
        char a = s[i], b = prefix[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (a != b)
            return 0;
    }
    return 1;
}

/* Push t[key] without metamethods.  Only raw reads are used on caller
 * tables: a value that __index made up would not be anchored, and the
 * pointers kept below rely on the table holding every string they point to.
 * `idx` must be an absolute index. */
static inline void wv_rawfield(lua_State *L, int idx, const char *key)
{
    lua_pushstring(L, key);
    lua_rawget(L, idx);
}

/* Optional field of the table at `idx`: string or nil.  The string stays
 * valid while the table holds it. */
static inline const char *wv_opt_string(lua_State *L, int idx, const char *key, size_t *len)
{
    const char *s = NULL;
    wv_rawfield(L, idx, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "bad field '%s' (string expected, got %s)", key, luaL_typename(L, -1));
    s = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* still referenced by the table */
    return s;
}

static inline double wv_opt_number(lua_State *L, int idx, const char *key, double def)
{
    double v = def;
    wv_rawfield(L, idx, key);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "bad field '%s' (number expected, got %s)", key, luaL_typename(L, -1));
        v = (double)lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static inline void wv_set_number(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, (lua_Number)v);
    lua_setfield(L, -2, k);
}

static inline void wv_set_integer(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static inline void wv_set_string(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

/* ---- request.c ------------------------------------------------------------ */

/* Start the request described by the table at `idx`; returns its id.  Raises
 * on a bad request (nothing is left unowned).  The session userdata is at
 * index 1 (its user value holds each connection's decoding state). */
lua_Integer wv_start_request(lua_State *L, wv_session *s, int idx);
/* Push connection `c`'s decoding state table (from the session userdata at 1). */
void wv_push_conn_state(lua_State *L, wv_session *s, wv_conn *c);
/* Store the value on top as it (popped). */
void wv_set_conn_state(lua_State *L, wv_session *s, wv_conn *c);
/* Drop it (the answer's rows are the caller's now). */
void wv_clear_conn_state(lua_State *L, wv_session *s, wv_conn *c);
/* Give back what one request allocated (headers, MIME, big buffers). */
void wv_release_request(wv_conn *c);
void wv_free_headers(wv_conn *c);

/* ---- transfer.c ----------------------------------------------------------- */

/* Point the easy handle's callbacks at `c`. */
CURLcode wv_set_callbacks(wv_conn *c);
/* Drive the multi handle until one transfer ends (1, *done and *rc set),
 * the monotonic time `until` (ms, wv_now_ms; negative: no limit) passes (0),
 * or an answer has WV_FEED_BYTES the decoder has not looked at (2); -1 and *why on
 * failure.  No Lua code runs in here. */
int wv_drive(wv_session *s, double until, wv_conn **done, CURLcode *rc, const char **why);
double wv_now_ms(void);
/* Push the result table of a finished transfer (runs protected, busy; the
 * session userdata at index 1). */
void wv_push_result(lua_State *L, wv_session *s, wv_conn *c, CURLcode rc);
/* Decode what has arrived of `c`'s answer so far (runs protected, busy). */
void wv_feed_partial(lua_State *L, wv_session *s, wv_conn *c);
/* Let a paused transfer go on once its body was decoded. */
void wv_resume(wv_conn *c);
/* Push a result's error table: kind, reason, message, curl_code, sent. */
void wv_push_error(lua_State *L, const char *kind, const char *reason, const char *msg,
                   lua_Integer curl_code, int sent);

/* ---- token.c -------------------------------------------------------------- */

/* Keep the token as the header line; 0 when out of memory. */
int wv_token_set(wv_session *s, const char *token, size_t len);
/* Wipe and free it. */
void wv_token_wipe(wv_session *s);
/* The token itself (inside the header line); NULL once wiped. */
const char *wv_token(const wv_session *s);
/* 32 hex digits of SHA-256("wolkvox-token:" .. token) and a NUL; 0 when out of memory. */
int wv_token_id(const wv_session *s, char hex[33]);
/* Push str[0..n) with the token masked. */
void wv_push_masked(lua_State *L, const wv_session *s, const char *str, size_t n);
/* Push the first WV_SNIPPET_BYTES of a body for an error message: printable
 * ASCII, the token masked (escaped, or cut by the snippet's end, too). */
void wv_push_snippet(lua_State *L, const wv_session *s, const wv_buf *b);

#endif
