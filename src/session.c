/*
 * session.c: the wolkvox.session userdata.  One session owns one libcurl multi
 * handle and up to two easy handles (wolkvox allows two calls in flight per
 * token), the token, and every buffer a transfer needs.  Connections live in
 * the multi handle's cache, so consecutive calls reuse them.
 *
 * libcurl callbacks never call Lua: they append to buffers owned by the
 * session and return 0 to abort.  All Lua work (reading the request table,
 * building the result) happens outside curl_multi_perform, and every resource
 * a request allocates is stored in the session before anything may raise, so
 * a Lua error leaves nothing unowned.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "wolkvox.h"

#if LIBCURL_VERSION_NUM < 0x074200
#error "wolkvox.core needs libcurl 7.66.0 or newer (curl_multi_poll)"
#endif

#define WV_MAX_CONNS 2
#define TOKEN_HEADER "wolkvox-token: "
/* A body buffer larger than this is given back after the call. */
#define KEEP_BUFFER_BYTES (4u << 20)
#define SNIPPET_BYTES 200

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
    int too_large;
    int out_of_memory;
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
    char *token_line;        /* "wolkvox-token: <token>", wiped on close */
    size_t token_len;
    size_t max_bytes;
    long timeout_ms;
    lua_Integer next_id;
    lua_Integer requests;
    lua_Integer connects;
    double bytes;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- small helpers ---------------------------------------------------- */

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = (volatile unsigned char *)p;
    while (n--)
        *v++ = 0;
}

static int has_ctl(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

static int ieq_prefix(const char *s, size_t n, const char *prefix)
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

static wv_session *check_session(lua_State *L)
{
    return (wv_session *)luaL_checkudata(L, 1, WV_SESSION_MT);
}

/* Push t[key] without metamethods.  Only raw reads are used on caller
 * tables: a value that __index made up would not be anchored, and the
 * pointers kept below rely on the table holding every string they point to.
 * `idx` must be an absolute index. */
static void rawfield(lua_State *L, int idx, const char *key)
{
    lua_pushstring(L, key);
    lua_rawget(L, idx);
}

/* Optional field of the table at `idx`: string or nil.  The string stays
 * valid while the table holds it. */
static const char *opt_string(lua_State *L, int idx, const char *key, size_t *len)
{
    const char *s = NULL;
    rawfield(L, idx, key);
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

static double opt_number(lua_State *L, int idx, const char *key, double def)
{
    double v = def;
    rawfield(L, idx, key);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "bad field '%s' (number expected, got %s)", key, luaL_typename(L, -1));
        v = (double)lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* ---- libcurl callbacks (no Lua in here) -------------------------------- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    wv_conn *c = (wv_conn *)ud;
    size_t n = size * nmemb;
    if (n > c->owner->max_bytes || c->body.len > c->owner->max_bytes - n) {
        c->too_large = 1;
        return 0;
    }
    if (!wv_buf_reserve(&c->body, n)) {
        c->out_of_memory = 1;
        return 0;
    }
    memcpy(c->body.p + c->body.len, ptr, n);
    c->body.len += n;
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    wv_conn *c = (wv_conn *)ud;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (ieq_prefix(ptr, n, name)) {
        const char *v = ptr + sizeof name - 1, *e = ptr + n;
        size_t len;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
            e--;
        len = (size_t)(e - v);
        if (len >= sizeof c->retry_after)
            len = sizeof c->retry_after - 1;
        memcpy(c->retry_after, v, len);
        c->retry_after[len] = '\0';
    }
    return n;
}

/* Counts request sends.  libcurl re-sends a request once, by itself, when a
 * reused connection dies before any answer byte arrives; each send may cost
 * a call of the daily quota, so the caller is told.  The data (which holds
 * the token header) is not looked at. */
static int on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *ud)
{
    (void)h;
    (void)data;
    (void)size;
    if (type == CURLINFO_HEADER_OUT)
        ((wv_conn *)ud)->sends++;
    return 0;
}

/* ---- per-request resources --------------------------------------------- */

static void free_headers(wv_conn *c)
{
    struct curl_slist *h;
    for (h = c->headers; h != NULL; h = h->next)
        if (h->data != NULL)
            wipe(h->data, strlen(h->data));
    curl_slist_free_all(c->headers);
    c->headers = NULL;
}

static void release_request(wv_conn *c)
{
    free_headers(c);
    if (c->mime != NULL) {
        curl_easy_setopt(c->easy, CURLOPT_MIMEPOST, (curl_mime *)NULL);
        curl_mime_free(c->mime);
        c->mime = NULL;
    }
    c->body.len = 0;
    if (c->body.cap > KEEP_BUFFER_BYTES)
        wv_buf_free(&c->body);
    if (c->scratch.cap > KEEP_BUFFER_BYTES)
        wv_buf_free(&c->scratch);
}

/* Give back every handle and buffer and wipe the token.  Only when no C
 * code of the session is running (see `busy`). */
static void release_all(wv_session *s)
{
    int i;
    if (s->freed)
        return;
    s->freed = 1;
    for (i = 0; i < s->nconns; i++) {
        wv_conn *c = &s->conn[i];
        if (c->easy != NULL) {
            if (c->id != 0 && s->multi != NULL)
                curl_multi_remove_handle(s->multi, c->easy);
            release_request(c);
            curl_easy_cleanup(c->easy);
            c->easy = NULL;
        }
        c->id = 0;
        wv_buf_free(&c->body);
        wv_buf_free(&c->scratch);
    }
    s->inflight = 0;
    if (s->multi != NULL) {
        curl_multi_cleanup(s->multi);
        s->multi = NULL;
    }
    if (s->token_line != NULL) {
        wipe(s->token_line, strlen(s->token_line));
        free(s->token_line);
        s->token_line = NULL;
    }
}

/* close(), __gc and __close.  Lua code can run at any allocation (a __gc
 * finalizer, a hook), and may close the session while the C code below
 * starts a request or decodes an answer: the release then waits until that
 * code is done (end_busy), and the call in progress reports `closed`. */
static void session_close(wv_session *s)
{
    if (s->closed)
        return;
    s->closed = 1;
    if (s->busy == 0)
        release_all(s);
}

static void end_busy(wv_session *s)
{
    s->busy--;
    if (s->busy == 0 && s->closed)
        release_all(s);
}

/* ---- session construction ---------------------------------------------- */

typedef struct {
    long timeout_ms;
    long connect_timeout_ms;
    const char *user_agent;
    const char *cainfo;
    const char *capath;
    const char *proxy;
    int verify;
} easy_options;

static CURLcode setup_easy(wv_conn *c, const easy_options *o)
{
    CURL *e = c->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, c->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)c);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)c);
    SET(CURLOPT_DEBUGFUNCTION, on_debug);
    SET(CURLOPT_DEBUGDATA, (void *)c);
    SET(CURLOPT_VERBOSE, 1L); /* feeds on_debug only: nothing is printed */
    SET(CURLOPT_ACCEPT_ENCODING, "");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(CURLOPT_TIMEOUT_MS, o->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->owner->max_bytes);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_SSL_VERIFYPEER, o->verify ? 1L : 0L);
    SET(CURLOPT_SSL_VERIFYHOST, o->verify ? 2L : 0L);
    if (o->user_agent != NULL)
        SET(CURLOPT_USERAGENT, o->user_agent);
    if (o->cainfo != NULL)
        SET(CURLOPT_CAINFO, o->cainfo);
    if (o->capath != NULL)
        SET(CURLOPT_CAPATH, o->capath);
    if (o->proxy != NULL)
        SET(CURLOPT_PROXY, o->proxy);
#undef SET
    return rc;
}

/***
 * Create a session.
 * @function session
 * @tparam table opts `token` (required), `timeout` and `connect_timeout`
 *   (seconds), `max_bytes`, `max_conns` (1 or 2), `user_agent`, `cainfo`,
 *   `capath`, `proxy`, `verify` (default true)
 * @return a session userdata
 */
static int l_session(lua_State *L)
{
    wv_session *s;
    easy_options o;
    size_t tlen = 0;
    const char *token;
    double timeout, ctimeout, max_bytes, nconns;
    int i;

    luaL_checktype(L, 1, LUA_TTABLE);
    if (pthread_once(&global_once, global_init) != 0 || global_rc != CURLE_OK)
        return luaL_error(L, "libcurl global initialisation failed");

    token = opt_string(L, 1, "token", &tlen);
    if (token == NULL || tlen == 0)
        return luaL_error(L, "bad field 'token' (non-empty string expected)");
    if (has_ctl(token, tlen))
        return luaL_error(L, "bad field 'token' (control characters are not allowed)");
    timeout = opt_number(L, 1, "timeout", 60.0);
    ctimeout = opt_number(L, 1, "connect_timeout", 10.0);
    max_bytes = opt_number(L, 1, "max_bytes", 256.0 * 1024 * 1024);
    nconns = opt_number(L, 1, "max_conns", (double)WV_MAX_CONNS);
    if (!(timeout > 0 && timeout < 86400))
        return luaL_error(L, "bad field 'timeout' (seconds between 0 and 86400 expected)");
    if (!(ctimeout > 0 && ctimeout < 86400))
        return luaL_error(L, "bad field 'connect_timeout' (seconds between 0 and 86400 expected)");
    if (!(max_bytes >= 1 && max_bytes <= 4294967296.0))
        return luaL_error(L, "bad field 'max_bytes' (1 to 4 GiB expected)");
    if (!(nconns >= 1 && nconns <= WV_MAX_CONNS))
        return luaL_error(L, "bad field 'max_conns' (1 or 2 expected)");
    memset(&o, 0, sizeof o);
    o.timeout_ms = (long)(timeout * 1000.0 + 0.5);
    o.connect_timeout_ms = (long)(ctimeout * 1000.0 + 0.5);
    o.user_agent = opt_string(L, 1, "user_agent", NULL);
    o.cainfo = opt_string(L, 1, "cainfo", NULL);
    o.capath = opt_string(L, 1, "capath", NULL);
    o.proxy = opt_string(L, 1, "proxy", NULL);
    rawfield(L, 1, "verify");
    o.verify = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);

    s = (wv_session *)lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->closed = 1; /* until fully set up: __gc then has nothing to do */
    luaL_getmetatable(L, WV_SESSION_MT);
    lua_setmetatable(L, -2);

    s->closed = 0;
    s->max_bytes = (size_t)max_bytes;
    s->timeout_ms = o.timeout_ms;
    s->nconns = (int)nconns;
    s->token_len = tlen;
    s->token_line = (char *)malloc(sizeof TOKEN_HEADER + tlen);
    if (s->token_line == NULL)
        return luaL_error(L, "not enough memory");
    memcpy(s->token_line, TOKEN_HEADER, sizeof TOKEN_HEADER - 1);
    memcpy(s->token_line + sizeof TOKEN_HEADER - 1, token, tlen);
    s->token_line[sizeof TOKEN_HEADER - 1 + tlen] = '\0';

    s->multi = curl_multi_init();
    if (s->multi == NULL)
        return luaL_error(L, "curl_multi_init failed");
    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->nconns);
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)s->nconns);
    for (i = 0; i < s->nconns; i++) {
        wv_conn *c = &s->conn[i];
        CURLcode rc;
        c->owner = s;
        c->easy = curl_easy_init();
        if (c->easy == NULL)
            return luaL_error(L, "curl_easy_init failed");
        rc = setup_easy(c, &o);
        if (rc != CURLE_OK)
            return luaL_error(L, "libcurl rejected an option: %s", curl_easy_strerror(rc));
    }
    return 1;
}

/* ---- starting a transfer ----------------------------------------------- */

static int method_ok(const char *m)
{
    static const char *const ok[] = { "GET", "POST", "PUT", "DELETE", "PATCH", NULL };
    int i;
    for (i = 0; ok[i] != NULL; i++)
        if (strcmp(m, ok[i]) == 0)
            return 1;
    return 0;
}

static void add_header(lua_State *L, wv_conn *c, const char *line)
{
    struct curl_slist *h = curl_slist_append(c->headers, line);
    if (h == NULL)
        luaL_error(L, "not enough memory");
    c->headers = h;
}

/* Check the multipart list at the top of the stack; raises on bad types. */
static void check_parts(lua_State *L, int idx)
{
    size_t i, n = lua_rawlen(L, idx);
    if (n == 0)
        luaL_error(L, "bad field 'parts' (non-empty list expected)");
    for (i = 1; i <= n; i++) {
        const char *name, *data, *path;
        lua_rawgeti(L, idx, (int)i);
        if (!lua_istable(L, -1))
            luaL_error(L, "bad part #%d (table expected)", (int)i);
        const char *filename, *ctype;
        name = opt_string(L, lua_gettop(L), "name", NULL);
        data = opt_string(L, lua_gettop(L), "data", NULL);
        path = opt_string(L, lua_gettop(L), "path", NULL);
        filename = opt_string(L, lua_gettop(L), "filename", NULL);
        ctype = opt_string(L, lua_gettop(L), "content_type", NULL);
        /* These become header lines of the part: no line breaks, no quotes. */
        if ((name != NULL && (has_ctl(name, strlen(name)) || strchr(name, '"') != NULL))
            || (filename != NULL && (has_ctl(filename, strlen(filename)) || strchr(filename, '"') != NULL))
            || (ctype != NULL && has_ctl(ctype, strlen(ctype))))
            luaL_error(L, "bad part #%d (control characters or quotes in name, filename or content_type)", (int)i);
        if (name == NULL)
            luaL_error(L, "bad part #%d (field 'name' expected)", (int)i);
        if ((data == NULL) == (path == NULL))
            luaL_error(L, "bad part #%d (exactly one of 'data' or 'path' expected)", (int)i);
        lua_pop(L, 1);
    }
}

/* Build c->mime from a checked list; returns a libcurl error or CURLE_OK. */
static CURLcode build_mime(lua_State *L, wv_conn *c, int idx)
{
    size_t i, n = lua_rawlen(L, idx);
    CURLcode rc = CURLE_OK;
    c->mime = curl_mime_init(c->easy);
    if (c->mime == NULL)
        return CURLE_OUT_OF_MEMORY;
    for (i = 1; i <= n && rc == CURLE_OK; i++) {
        int t;
        size_t dlen = 0;
        const char *name, *data, *path, *filename, *ctype;
        curl_mimepart *part = curl_mime_addpart(c->mime);
        if (part == NULL)
            return CURLE_OUT_OF_MEMORY;
        lua_rawgeti(L, idx, (int)i);
        t = lua_gettop(L);
        name = opt_string(L, t, "name", NULL);
        data = opt_string(L, t, "data", &dlen);
        path = opt_string(L, t, "path", NULL);
        filename = opt_string(L, t, "filename", NULL);
        ctype = opt_string(L, t, "content_type", NULL);
        rc = curl_mime_name(part, name);
        if (rc == CURLE_OK && data != NULL)
            rc = curl_mime_data(part, data, dlen);
        if (rc == CURLE_OK && path != NULL)
            rc = curl_mime_filedata(part, path);
        if (rc == CURLE_OK && filename != NULL)
            rc = curl_mime_filename(part, filename);
        if (rc == CURLE_OK && ctype != NULL)
            rc = curl_mime_type(part, ctype);
        lua_pop(L, 1);
    }
    return rc;
}

static wv_conn *free_conn(wv_session *s)
{
    int i;
    for (i = 0; i < s->nconns; i++)
        if (s->conn[i].id == 0)
            return &s->conn[i];
    return NULL;
}

/* Start the request described by the table at `idx`; returns its id. */
static lua_Integer start_request(lua_State *L, wv_session *s, int idx)
{
    const char *method, *url, *body, *ctype;
    size_t ulen = 0, blen = 0;
    int has_parts, decode, fresh, nheaders, i;
    double timeout;
    wv_conn *c;
    CURL *e;
    CURLcode rc = CURLE_OK;
    CURLMcode mrc;

    luaL_checktype(L, idx, LUA_TTABLE);
    if (s->closed)
        luaL_error(L, "session is closed");
    method = opt_string(L, idx, "method", NULL);
    if (method == NULL)
        method = "GET";
    if (!method_ok(method))
        luaL_error(L, "bad field 'method' (GET, POST, PUT, DELETE or PATCH expected)");
    url = opt_string(L, idx, "url", &ulen);
    if (url == NULL || !(ieq_prefix(url, ulen, "http://") || ieq_prefix(url, ulen, "https://")))
        luaL_error(L, "bad field 'url' (http:// or https:// URL expected)");
    if (has_ctl(url, ulen) || memchr(url, ' ', ulen) != NULL)
        luaL_error(L, "bad field 'url' (spaces and control characters are not allowed)");
    body = opt_string(L, idx, "body", &blen);
    ctype = opt_string(L, idx, "content_type", NULL);
    if (ctype != NULL && has_ctl(ctype, strlen(ctype)))
        luaL_error(L, "bad field 'content_type' (control characters are not allowed)");
    rawfield(L, idx, "decode");
    decode = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    timeout = opt_number(L, idx, "timeout", 0);
    if (timeout < 0 || timeout > 86400)
        luaL_error(L, "bad field 'timeout' (seconds between 0 and 86400 expected)");
    rawfield(L, idx, "fresh");
    fresh = lua_toboolean(L, -1);
    lua_pop(L, 1);
    rawfield(L, idx, "parts");
    has_parts = !lua_isnil(L, -1);
    if (has_parts) {
        if (!lua_istable(L, -1))
            luaL_error(L, "bad field 'parts' (table expected)");
        if (body != NULL)
            luaL_error(L, "bad request ('body' and 'parts' are exclusive)");
        check_parts(L, lua_gettop(L));
    }
    lua_pop(L, 1);
    rawfield(L, idx, "headers");
    nheaders = 0;
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1))
            luaL_error(L, "bad field 'headers' (list of strings expected)");
        nheaders = (int)lua_rawlen(L, -1);
        for (i = 1; i <= nheaders; i++) {
            size_t hlen;
            const char *h;
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "bad header #%d (string expected)", i);
            h = lua_tolstring(L, -1, &hlen);
            if (has_ctl(h, hlen) || memchr(h, ':', hlen) == NULL)
                luaL_error(L, "bad header #%d ('Name: value' without control characters expected)", i);
            if (ieq_prefix(h, hlen, "wolkvox-token"))
                luaL_error(L, "bad header #%d (the token header belongs to the session)", i);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);

    c = free_conn(s);
    if (c == NULL)
        luaL_error(L, "no free connection: %d transfers already in flight", s->inflight);
    e = c->easy;

    /* From here every allocation is stored in c before the next may raise;
     * leftovers of a result that failed to build are dropped first. */
    release_request(c);
    c->too_large = 0;
    c->out_of_memory = 0;
    c->retry_after[0] = '\0';
    c->errbuf[0] = '\0';
    c->decode = decode;
    c->sends = 0;
    add_header(L, c, s->token_line);
    add_header(L, c, "Accept: application/json");
    add_header(L, c, "Expect:");
    if (body != NULL) {
        char line[300];
        snprintf(line, sizeof line, "Content-Type: %s", ctype ? ctype : "application/json");
        add_header(L, c, line);
    }
    if (nheaders > 0) {
        rawfield(L, idx, "headers");
        for (i = 1; i <= nheaders; i++) {
            lua_rawgeti(L, -1, i);
            add_header(L, c, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (has_parts) {
        rawfield(L, idx, "parts");
        rc = build_mime(L, c, lua_gettop(L));
        lua_pop(L, 1);
    }

#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_HTTPHEADER, c->headers);
    /* A fresh connection cannot die mid-reuse, so libcurl never re-sends it. */
    SET(CURLOPT_FRESH_CONNECT, fresh ? 1L : 0L);
    /* A deadline may shorten a call; 0 keeps the session's timeout. */
    SET(CURLOPT_TIMEOUT_MS, timeout > 0 ? (long)(timeout * 1000.0 + 0.5) : s->timeout_ms);
    if (has_parts) {
        SET(CURLOPT_MIMEPOST, c->mime);
        SET(CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
    } else if (strcmp(method, "GET") == 0 && body == NULL) {
        SET(CURLOPT_HTTPGET, 1L);
        SET(CURLOPT_CUSTOMREQUEST, (char *)NULL);
    } else {
        /* POST, PUT, DELETE, PATCH, and GET with a body (list_templates). */
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        SET(CURLOPT_COPYPOSTFIELDS, body != NULL ? body : "");
        SET(CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
    }
#undef SET
    if (rc != CURLE_OK) {
        release_request(c);
        luaL_error(L, "libcurl rejected the request: %s", curl_easy_strerror(rc));
    }
    mrc = curl_multi_add_handle(s->multi, e);
    if (mrc != CURLM_OK) {
        release_request(c);
        luaL_error(L, "curl_multi_add_handle failed: %s", curl_multi_strerror(mrc));
    }
    c->id = ++s->next_id;
    s->inflight++;
    s->requests++;
    return c->id;
}

/* ---- finishing a transfer ----------------------------------------------- */

static const char *reason_of(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "dns";
    case CURLE_COULDNT_CONNECT:
        return "connect";
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return "tls";
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
        return "reset";
    case CURLE_PARTIAL_FILE:
        return "partial";
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return "protocol";
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return "url";
    case CURLE_OUT_OF_MEMORY:
        return "memory";
    default:
        return "other";
    }
}

static const char *session_token(const wv_session *s)
{
    return s->token_line + sizeof TOKEN_HEADER - 1;
}

/* Push s[0..n) with the token masked (header values a server sent back). */
static void push_masked(lua_State *L, wv_session *s, const char *str, size_t n)
{
    char small[128];
    char *buf = n <= sizeof small ? small : (char *)malloc(n);
    if (buf == NULL) {
        lua_pushliteral(L, "(not enough memory)");
        return;
    }
    memcpy(buf, str, n);
    wv_mask_text(buf, n, session_token(s), s->token_len);
    lua_pushlstring(L, buf, n);
    if (buf != small)
        free(buf);
}

/* The first SNIPPET_BYTES of the body, for an error message: printable ASCII
 * only, and never the token, even if a proxy page echoed the request.  The
 * token is masked on more of the body than is kept (a token cut by the end
 * of the snippet is masked whole), escaped or not. */
static void push_snippet(lua_State *L, wv_session *s, const wv_buf *b)
{
    size_t i, keep = b->len < SNIPPET_BYTES ? b->len : SNIPPET_BYTES;
    size_t look = s->token_len > ((size_t)-1 - SNIPPET_BYTES) / 6 ? b->len
                  : SNIPPET_BYTES + 6 * s->token_len;
    char *out;
    if (look > b->len)
        look = b->len;
    out = (char *)malloc(look > 0 ? look : 1);
    if (out == NULL) {
        lua_pushliteral(L, "(not enough memory)");
        return;
    }
    memcpy(out, b->p, look);
    wv_mask_text(out, look, session_token(s), s->token_len);
    for (i = 0; i < keep; i++) {
        unsigned char ch = (unsigned char)out[i];
        if (ch < 0x20 || ch >= 0x7f)
            out[i] = ' ';
    }
    lua_pushlstring(L, out, keep);
    free(out);
}

static void set_number(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, (lua_Number)v);
    lua_setfield(L, -2, k);
}

static void set_integer(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static void set_string(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

/* libcurl 7.x says "out of memory" for a header line past its own limit
 * (100 KiB), and "receive error" for a malformed chunked body: both are
 * protocol errors of the server.  Our own buffers failing is `memory`. */
static const char *honest_reason(CURLcode rc, const wv_conn *c, const char *reason,
                                 const char **msg)
{
    if (rc == CURLE_OUT_OF_MEMORY && !c->out_of_memory) {
        *msg = "the answer's header is malformed or larger than libcurl accepts";
        return "protocol";
    }
    if ((rc == CURLE_RECV_ERROR || rc == CURLE_PARTIAL_FILE)
        && (strstr(c->errbuf, "chunk") != NULL || strstr(c->errbuf, "Chunk") != NULL))
        return "protocol";
    return reason;
}

/* The error part of a result: kind, reason, message, curl_code, sent. */
static void push_error(lua_State *L, const char *kind, const char *reason, const char *msg,
                       lua_Integer curl_code, int sent)
{
    lua_createtable(L, 0, 5);
    set_string(L, "kind", kind);
    set_string(L, "reason", reason);
    set_integer(L, "curl_code", curl_code);
    set_string(L, "message", msg);
    lua_pushboolean(L, sent);
    lua_setfield(L, -2, "sent");
}

/* Build the result table of a finished transfer on the stack.  Runs in
 * protected mode (result_p), with the session busy. */
static void push_result(lua_State *L, wv_session *s, wv_conn *c, CURLcode rc)
{
    long status = 0, connects = 0;
    double total = 0;
    curl_off_t wire = 0;
    char *ctype = NULL;
    CURL *e = c->easy;

    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &total);
    curl_easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &wire);
    curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ctype);
    s->connects += connects;
    s->bytes += (double)c->body.len;

    lua_createtable(L, 0, 12);
    set_integer(L, "status", (lua_Integer)status);
    set_integer(L, "bytes", (lua_Integer)c->body.len);
    set_number(L, "wire_bytes", (double)wire);
    set_number(L, "time", total);
    set_integer(L, "connects", (lua_Integer)connects);
    set_integer(L, "sends", (lua_Integer)c->sends);
    if (ctype != NULL) {
        push_masked(L, s, ctype, strlen(ctype));
        lua_setfield(L, -2, "content_type");
    }
    if (c->retry_after[0] != '\0') {
        push_masked(L, s, c->retry_after, strlen(c->retry_after));
        lua_setfield(L, -2, "retry_after");
    }

    if (rc != CURLE_OK) {
        const char *kind = "transport", *msg = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
        const char *reason = honest_reason(rc, c, reason_of(rc), &msg);
        if (c->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
            char big[80];
            snprintf(big, sizeof big, "answer larger than the %lu-byte limit",
                     (unsigned long)s->max_bytes);
            push_error(L, "too_large", "size", big, (lua_Integer)rc, c->sends > 0);
        } else {
            if (c->out_of_memory)
                reason = "memory";
            push_error(L, kind, reason, "", (lua_Integer)rc, c->sends > 0);
            push_masked(L, s, msg, strlen(msg));
            lua_setfield(L, -2, "message");
        }
        lua_setfield(L, -2, "error");
        return;
    }
    if (c->body.len == 0)
        return;
    if (!c->decode) {
        lua_pushlstring(L, c->body.p, c->body.len);
        lua_setfield(L, -2, "body");
        return;
    }
    {
        char err[160];
        if (wv_json_decode_masked(L, c->body.p, c->body.len, &c->scratch, session_token(s),
                                  s->token_len, err, sizeof err)) {
            lua_setfield(L, -2, "value");
        } else {
            lua_pushstring(L, err);
            lua_setfield(L, -2, "decode_error");
            push_snippet(L, s, &c->body);
            lua_setfield(L, -2, "snippet");
        }
    }
}

/* Drive the multi handle until one transfer ends (1, *done set) or `slice`
 * seconds pass (0; a negative slice waits as long as it takes).  No Lua code
 * runs in here.  When two end together, the second stays queued. */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int drive(wv_session *s, double slice, wv_conn **done, CURLcode *rc, const char **why)
{
    double until = slice < 0 ? -1 : now_ms() + slice * 1000.0;
    for (;;) {
        int running = 0, queued = 0, timeout = 1000;
        CURLMsg *m;
        CURLMcode mrc = curl_multi_perform(s->multi, &running);
        if (mrc != CURLM_OK) {
            *why = curl_multi_strerror(mrc);
            return -1;
        }
        while ((m = curl_multi_info_read(s->multi, &queued)) != NULL) {
            int i;
            if (m->msg != CURLMSG_DONE)
                continue;
            for (i = 0; i < s->nconns; i++) {
                wv_conn *c = &s->conn[i];
                if (c->id != 0 && c->easy == m->easy_handle) {
                    *rc = m->data.result;
                    *done = c;
                    curl_multi_remove_handle(s->multi, c->easy);
                    return 1;
                }
            }
        }
        if (running == 0) {
            *why = "no transfer in flight finished (internal error)";
            return -1;
        }
        if (until >= 0) {
            double left = until - now_ms();
            if (left <= 0)
                return 0;
            timeout = left < 1000 ? (int)left + 1 : 1000;
        }
        mrc = curl_multi_poll(s->multi, NULL, 0, timeout, NULL);
        if (mrc != CURLM_OK) {
            *why = curl_multi_strerror(mrc);
            return -1;
        }
    }
}

/* ---- Lua methods -------------------------------------------------------- */

/*
 * Lua code may run at any allocation below (a __gc finalizer, a hook): the
 * work that allocates runs in protected mode with the session marked busy,
 * so a close() from such code is deferred until the work is done, and an
 * error (a memory error too) never leaves the session busy.  The protected
 * workers reach the methods as upvalues, so starting them allocates nothing.
 */

static int start_p(lua_State *L)
{
    wv_session *s = (wv_session *)lua_touserdata(L, 1);
    lua_pushinteger(L, start_request(L, s, 2));
    return 1;
}

static int result_p(lua_State *L)
{
    wv_session *s = (wv_session *)lua_touserdata(L, 1);
    wv_conn *c = (wv_conn *)lua_touserdata(L, 2);
    CURLcode rc = (CURLcode)lua_tointeger(L, 3);
    push_result(L, s, c, rc);
    return 1;
}

static void not_reentrant(lua_State *L, wv_session *s)
{
    if (s->busy)
        luaL_error(L, "session is in use (called from a finalizer or a hook during a call)");
}

static int closed_result(lua_State *L, const char *msg, int sent)
{
    lua_createtable(L, 0, 2);
    push_error(L, "closed", "closed", msg, 0, sent);
    lua_setfield(L, -2, "error");
    return 1;
}

/* Start the request at index 2; pushes its id, or nil and "closed". */
static int do_start(lua_State *L, wv_session *s)
{
    int status;
    luaL_checktype(L, 2, LUA_TTABLE);
    not_reentrant(L, s);
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1)); /* start_p */
    lua_pushlightuserdata(L, s);
    lua_pushvalue(L, 2);
    if (s->closed) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    s->busy++;
    status = lua_pcall(L, 2, 1, 0);
    end_busy(s);
    if (status != 0)
        return lua_error(L);
    if (s->closed) { /* closed while starting: the transfer is gone */
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    return 1;
}

/* Wait up to `slice` seconds (negative: until done) for one transfer; pushes
 * id and result, false when the slice ran out, nil when nothing is in flight. */
static int do_wait(lua_State *L, wv_session *s, double slice)
{
    wv_conn *c = NULL;
    CURLcode rc = CURLE_OK;
    const char *why = NULL;
    lua_Integer id;
    int r, status;
    not_reentrant(L, s);
    if (s->closed || s->inflight == 0) {
        lua_pushnil(L);
        return 1;
    }
    r = drive(s, slice, &c, &rc, &why);
    if (r < 0)
        return luaL_error(L, "libcurl: %s", why);
    if (r == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    id = c->id;
    c->id = 0;
    s->inflight--;
    free_headers(c);
    lua_pushinteger(L, id);
    lua_pushvalue(L, lua_upvalueindex(2)); /* result_p */
    lua_pushlightuserdata(L, s);
    lua_pushlightuserdata(L, c);
    lua_pushinteger(L, (lua_Integer)rc);
    s->busy++;
    status = lua_pcall(L, 3, 1, 0);
    if (!s->closed)
        release_request(c);
    end_busy(s);
    if (s->closed) {
        /* Closed while the answer was read: its buffers are gone. */
        lua_pop(L, 1);
        return 1 + closed_result(L, "the session was closed while the answer was read", 1);
    }
    if (status == LUA_ERRMEM) {
        char msg[120];
        lua_pop(L, 1);
        snprintf(msg, sizeof msg, "not enough memory to build the answer's tables");
        lua_createtable(L, 0, 2);
        push_error(L, "too_large", "memory", msg, 0, 1);
        lua_setfield(L, -2, "error");
        return 2;
    }
    if (status != 0)
        return lua_error(L);
    return 2;
}

/***
 * Start a request without waiting for it.
 * @function session:start
 * @tparam table req `method`, `url`, `body`, `content_type`, `parts`,
 *   `headers`, `decode` (default true), `fresh` (a new connection, for
 *   writes: libcurl then never re-sends the request by itself), `timeout`
 *   (seconds, for this call only)
 * @treturn integer the request id that wait() reports; or nil and "closed"
 *   when the session is (or was, during the start) closed
 */
static int l_start(lua_State *L)
{
    return do_start(L, check_session(L));
}

/***
 * Wait until one started request ends.
 * @function session:wait
 * @tparam[opt] number slice seconds to wait at most; without it, as long as
 *   it takes (an interrupt or a hook cannot run meanwhile)
 * @treturn integer id, nil when nothing is in flight, or false when the slice
 *   ran out first
 * @treturn table the result (its `error.kind` is "closed" when the session
 *   was closed while the answer was read, "too_large" with reason "memory"
 *   when its tables did not fit in memory)
 */
static int l_wait(lua_State *L)
{
    wv_session *s = check_session(L);
    double slice = luaL_optnumber(L, 2, -1);
    if (slice != slice)
        return luaL_argerror(L, 2, "seconds expected");
    lua_settop(L, 1);
    return do_wait(L, s, slice);
}

/***
 * Send one request and wait for its result.
 * @function session:request
 * @tparam table req as for start()
 * @treturn table the result: `status`, `value` (decoded JSON), `bytes`,
 *   `time`, `connects`, `sends` (times the request went out), `content_type`, `retry_after`, `decode_error`,
 *   `snippet`, `error` (`kind`, `reason`, `message`, `curl_code`, `sent`)
 */
static int l_request(lua_State *L)
{
    wv_session *s = check_session(L);
    if (s->closed)
        return luaL_error(L, "session is closed");
    if (s->inflight > 0)
        return luaL_error(L, "request() while %d started transfers are in flight", s->inflight);
    if (do_start(L, s) == 2)
        return closed_result(L, "the session was closed while the request was started", 0);
    lua_settop(L, 1);
    if (do_wait(L, s, -1) == 1)
        return closed_result(L, "the session was closed during the call", 1);
    return 1;
}

/***
 * Abort every transfer in flight (an abandoned iteration, for one).
 * @function session:cancel
 * @treturn integer transfers aborted
 * @treturn integer times their requests had gone out (each may cost a call)
 */
static int l_cancel(lua_State *L)
{
    wv_session *s = check_session(L);
    int i, n = 0, sends = 0;
    not_reentrant(L, s);
    for (i = 0; i < s->nconns && !s->closed; i++) {
        wv_conn *c = &s->conn[i];
        if (c->id != 0) {
            curl_multi_remove_handle(s->multi, c->easy);
            c->id = 0;
            s->inflight--;
            n++;
            sends += c->sends;
            release_request(c);
        }
    }
    lua_pushinteger(L, n);
    lua_pushinteger(L, sends);
    return 2;
}

/***
 * A name for the token that does not reveal it: 32 hex digits of
 * SHA-256("wolkvox-token:" .. token).  Pacing files are named after it.
 * @function session:token_id
 */
static int l_token_id(lua_State *L)
{
    wv_session *s = check_session(L);
    unsigned char digest[32];
    char hex[65];
    if (s->token_line == NULL)
        return luaL_error(L, "session is closed");
    /* The header line is "wolkvox-token: <token>": hash "wolkvox-token:<token>". */
    {
        size_t n = strlen(s->token_line);
        char *copy = (char *)malloc(n);
        if (copy == NULL)
            return luaL_error(L, "not enough memory");
        memcpy(copy, "wolkvox-token:", 14);
        memcpy(copy + 14, s->token_line + sizeof TOKEN_HEADER - 1, s->token_len);
        wv_sha256(copy, 14 + s->token_len, digest);
        wipe(copy, n);
        free(copy);
    }
    wv_hex(digest, 16, hex);
    lua_pushstring(L, hex);
    return 1;
}

static int l_inflight(lua_State *L)
{
    wv_session *s = check_session(L);
    lua_pushinteger(L, s->inflight);
    return 1;
}

static int l_capacity(lua_State *L)
{
    wv_session *s = check_session(L);
    lua_pushinteger(L, s->closed ? 0 : s->nconns);
    return 1;
}

static int l_stats(lua_State *L)
{
    wv_session *s = check_session(L);
    lua_createtable(L, 0, 4);
    set_integer(L, "requests", s->requests);
    set_integer(L, "connects", s->connects);
    set_number(L, "bytes", s->bytes);
    set_integer(L, "inflight", s->inflight);
    return 1;
}

static int l_close(lua_State *L)
{
    wv_session *s = check_session(L);
    session_close(s);
    return 0;
}

static int l_closed(lua_State *L)
{
    wv_session *s = check_session(L);
    lua_pushboolean(L, s->closed);
    return 1;
}

static int l_tostring(lua_State *L)
{
    wv_session *s = check_session(L);
    if (s->closed)
        lua_pushfstring(L, "wolkvox.session (closed): %p", (void *)s);
    else
        lua_pushfstring(L, "wolkvox.session (%d of %d in flight): %p", s->inflight,
                        s->nconns, (void *)s);
    return 1;
}

static const luaL_Reg session_methods[] = {
    { "cancel", l_cancel },
    { "token_id", l_token_id },
    { "inflight", l_inflight },
    { "capacity", l_capacity },
    { "stats", l_stats },
    { "close", l_close },
    { "closed", l_closed },
    { NULL, NULL }
};

void wv_session_open(lua_State *L)
{
    static const luaL_Reg workers[] = {
        { "start", l_start },
        { "wait", l_wait },
        { "request", l_request },
        { NULL, NULL }
    };
    const luaL_Reg *r;
    wv_newclass(L, WV_SESSION_MT, session_methods, l_close, l_tostring);
    /* The methods that run protected work hold their workers as upvalues. */
    luaL_getmetatable(L, WV_SESSION_MT);
    lua_getfield(L, -1, "__index");
    for (r = workers; r->name != NULL; r++) {
        lua_pushcfunction(L, start_p);
        lua_pushcfunction(L, result_p);
        lua_pushcclosure(L, r->func, 2);
        lua_setfield(L, -2, r->name);
    }
    lua_pop(L, 2);

    lua_pushcfunction(L, l_session);
    lua_setfield(L, -2, "session");
    lua_pushstring(L, curl_version());
    lua_setfield(L, -2, "curl_version");
}
