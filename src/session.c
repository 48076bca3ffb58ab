/*
 * session.c: the wolkvox.session userdata.  One session owns one libcurl multi
 * handle and up to two easy handles (wolkvox allows two calls in flight per
 * token), the token, and every buffer a transfer needs.  Connections live in
 * the multi handle's cache, so consecutive calls reuse them.  See session.h
 * for the units that build requests, run transfers and keep the token.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "session.h"

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static wv_session *check_session(lua_State *L)
{
    return (wv_session *)luaL_checkudata(L, 1, WV_SESSION_MT);
}

/* ---- each connection's decoding state (the user value, by slot) ------------ */

/* Push the session's user value; the session userdata is at index 1. */
static void push_uv(lua_State *L)
{
    wv_push_uservalue(L, 1);
}

static int slot_of(wv_session *s, wv_conn *c)
{
    return (int)(c - s->conn) + 1;
}

void wv_push_conn_state(lua_State *L, wv_session *s, wv_conn *c)
{
    push_uv(L);
    lua_rawgeti(L, -1, slot_of(s, c));
    lua_remove(L, -2);
}

void wv_set_conn_state(lua_State *L, wv_session *s, wv_conn *c)
{
    push_uv(L);
    lua_insert(L, -2);
    lua_rawseti(L, -2, slot_of(s, c));
    lua_pop(L, 1);
}

void wv_clear_conn_state(lua_State *L, wv_session *s, wv_conn *c)
{
    lua_pushnil(L);
    wv_set_conn_state(L, s, c);
}

/* ---- lifecycle ------------------------------------------------------------ */

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
            wv_release_request(c);
            curl_easy_cleanup(c->easy);
            c->easy = NULL;
        }
        c->id = 0;
        wv_buf_free(&c->body);
        wv_buf_free(&c->scratch);
        wv_buf_free(&c->head);
        wv_json_ctx_free(c->json);
        c->json = NULL;
    }
    s->inflight = 0;
    if (s->multi != NULL) {
        curl_multi_cleanup(s->multi);
        s->multi = NULL;
    }
    wv_token_wipe(s);
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

/* ---- construction --------------------------------------------------------- */

typedef struct {
    long timeout_ms;
    long connect_timeout_ms;
    const char *user_agent;
    const char *cainfo;
    const char *capath;
    const char *proxy;
    const char *noproxy;     /* libcurl copies it */
    int verify;
} easy_options;

static CURLcode setup_easy(wv_conn *c, const easy_options *o)
{
    CURL *e = c->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
    rc = wv_set_callbacks(c);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, c->errbuf);
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
    else
        SET(CURLOPT_NOPROXY, o->noproxy);
#undef SET
    return rc;
}

/* An optional string option that goes into a header or a path: control
 * characters (CR/LF would add header lines, NUL would cut it) are refused. */
static const char *safe_string(lua_State *L, const char *key)
{
    size_t len = 0;
    const char *v = wv_opt_string(L, 1, key, &len);
    if (v != NULL && wv_has_ctl(v, len))
        luaL_error(L, "bad field '%s' (control characters are not allowed)", key);
    return v;
}

/***
 * Create a session.
 * @function session
 * @tparam table opts `token` (required), `timeout` and `connect_timeout`
 *   (seconds), `max_bytes`, `max_conns` (1 or 2), `user_agent`, `cainfo`,
 *   `capath`, `proxy`, `verify` (default true), `gc_hold` (default true: the
 *   Lua collector is held while the session waits, see wait_held)
 * @return a session userdata
 */
static int l_session(lua_State *L)
{
    wv_session *s;
    easy_options o;
    char noproxy[1024];
    size_t tlen = 0;
    const char *token;
    double timeout, ctimeout, max_bytes, nconns;
    int i, gc_hold;

    luaL_checktype(L, 1, LUA_TTABLE);
    if (pthread_once(&global_once, global_init) != 0 || global_rc != CURLE_OK)
        return luaL_error(L, "libcurl global initialisation failed");

    token = wv_opt_string(L, 1, "token", &tlen);
    if (token == NULL || tlen == 0)
        return luaL_error(L, "bad field 'token' (non-empty string expected)");
    if (wv_has_ctl(token, tlen))
        return luaL_error(L, "bad field 'token' (control characters are not allowed)");
    timeout = wv_opt_number(L, 1, "timeout", 60.0);
    ctimeout = wv_opt_number(L, 1, "connect_timeout", 10.0);
    max_bytes = wv_opt_number(L, 1, "max_bytes", 256.0 * 1024 * 1024);
    nconns = wv_opt_number(L, 1, "max_conns", (double)WV_MAX_CONNS);
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
    o.user_agent = safe_string(L, "user_agent");
    o.cainfo = safe_string(L, "cainfo");
    o.capath = safe_string(L, "capath");
    o.proxy = safe_string(L, "proxy");
    /* A proxy from the environment (http_proxy, ...) never sees a call to
     * this machine itself: loopback goes direct, plus the environment's own
     * no_proxy list.  An explicit `proxy` option is taken as it is. */
    {
        const char *env = getenv("no_proxy");
        if (env == NULL || *env == '\0')
            env = getenv("NO_PROXY");
        if (env != NULL && *env != '\0' && strlen(env) < sizeof noproxy - 40)
            snprintf(noproxy, sizeof noproxy, "localhost,127.0.0.0/8,::1,%s", env);
        else
            snprintf(noproxy, sizeof noproxy, "localhost,127.0.0.0/8,::1");
        o.noproxy = noproxy;
    }
    wv_rawfield(L, 1, "verify");
    o.verify = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    wv_rawfield(L, 1, "gc_hold");
    gc_hold = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);

#if LUA_VERSION_NUM >= 504
    s = (wv_session *)lua_newuserdatauv(L, sizeof *s, 1);
#else
    s = (wv_session *)lua_newuserdata(L, sizeof *s);
#endif
    memset(s, 0, sizeof *s);
    s->closed = 1; /* until fully set up: __gc then has nothing to do */
    luaL_getmetatable(L, WV_SESSION_MT);
    lua_setmetatable(L, -2);
    /* Its user value: each connection's decoding state, by slot. */
    lua_createtable(L, WV_MAX_CONNS, 0);
    wv_set_uservalue(L, -2);

    s->closed = 0;
    s->gc_hold = gc_hold;
    s->max_bytes = (size_t)max_bytes;
    s->timeout_ms = o.timeout_ms;
    s->nconns = (int)nconns;
    if (!wv_token_set(s, token, tlen))
        return luaL_error(L, "not enough memory");

    s->multi = curl_multi_init();
    if (s->multi == NULL)
        return luaL_error(L, "curl_multi_init failed");
    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->nconns);
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)s->nconns);
    for (i = 0; i < s->nconns; i++) {
        wv_conn *c = &s->conn[i];
        CURLcode rc;
        c->owner = s;
        c->spool_fd = -1;
        c->csv_fd = -1;
        c->easy = curl_easy_init();
        if (c->easy == NULL)
            return luaL_error(L, "curl_easy_init failed");
        rc = setup_easy(c, &o);
        if (rc != CURLE_OK)
            return luaL_error(L, "libcurl rejected an option: %s", curl_easy_strerror(rc));
    }
    return 1;
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
    lua_pushinteger(L, wv_start_request(L, s, 2));
    return 1;
}

static int result_p(lua_State *L)
{
    wv_session *s = (wv_session *)lua_touserdata(L, 1);
    wv_conn *c = (wv_conn *)lua_touserdata(L, 2);
    CURLcode rc = (CURLcode)lua_tointeger(L, 3);
    wv_push_result(L, s, c, rc);
    return 1;
}

static int closed_result(lua_State *L, const char *msg, int sent)
{
    lua_createtable(L, 0, 2);
    wv_push_error(L, "closed", "closed", msg, 0, sent);
    lua_setfield(L, -2, "error");
    return 1;
}

static int gc_p(lua_State *L)
{
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

/* After a memory error: a full collection now (LuaJIT does none of its own
 * before it gives up), protected and busy, since finalizers may run. */
static void collect_now(lua_State *L, wv_session *s)
{
    lua_pushvalue(L, lua_upvalueindex(4)); /* gc_p */
    s->busy++;
    if (lua_pcall(L, 0, 0, 0) != 0)
        lua_pop(L, 1);
    end_busy(s);
}

static int feed_p(lua_State *L)
{
    wv_session *s = (wv_session *)lua_touserdata(L, 1);
    wv_conn *c = (wv_conn *)lua_touserdata(L, 2);
    wv_feed_partial(L, s, c);
    return 0;
}

/* While transfers run, decode what has arrived of their answers (a slice
 * of waiting ran out): protected and busy like building a result.  Pushes
 * an id and a `closed` result when a finalizer closed the session meanwhile
 * (returns 2), else nothing (returns 0). */
static int feed_inflight(lua_State *L, wv_session *s)
{
    int i;
    for (i = 0; i < s->nconns && !s->closed; i++) {
        wv_conn *c = &s->conn[i];
        int status;
        lua_Integer id = c->id;
        if (id == 0 || !c->streaming || c->lua_oom || c->body.len == 0 || wv_stream_failed(&c->stream)) {
            if (id != 0)
                wv_resume(c);
            continue;
        }
        lua_pushvalue(L, lua_upvalueindex(3)); /* feed_p */
        lua_pushvalue(L, 1);
        lua_pushlightuserdata(L, c);
        s->busy++;
        status = lua_pcall(L, 2, 0, 0);
        end_busy(s);
        if (s->closed) {
            if (status != 0)
                lua_pop(L, 1);
            lua_pushinteger(L, id);
            closed_result(L, "the session was closed while the answer was read", 1);
            return 2;
        }
        if (status == LUA_ERRMEM) {
            lua_pop(L, 1);
            /* Reported when the transfer ends (soon: its writes now fail);
             * the rows made so far are let go at once. */
            c->lua_oom = 1;
            wv_clear_conn_state(L, s, c);
            collect_now(L, s);
            if (s->closed) {
                lua_pushinteger(L, id);
                closed_result(L, "the session was closed while the answer was read", 1);
                return 2;
            }
        } else if (status != 0)
            return lua_error(L);
        wv_resume(c);
    }
    return 0;
}

/* A request that never went out (its spool file could not be made), or NULL. */
static wv_conn *unstarted(wv_session *s)
{
    int i;
    for (i = 0; i < s->nconns; i++)
        if (s->conn[i].id != 0 && s->conn[i].start_errno != 0)
            return &s->conn[i];
    return NULL;
}

static void not_reentrant(lua_State *L, wv_session *s)
{
    if (s->busy)
        luaL_error(L, "session is in use (called from a finalizer or a hook during a call)");
}


/* Start the request at index 2; pushes its id, or nil and "closed". */
static int do_start(lua_State *L, wv_session *s)
{
    int status;
    luaL_checktype(L, 2, LUA_TTABLE);
    not_reentrant(L, s);
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1)); /* start_p */
    lua_pushvalue(L, 1);                   /* the session */
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
    double until;
    int r, status;
    not_reentrant(L, s);
    if (s->closed || s->inflight == 0) {
        lua_pushnil(L);
        return 1;
    }
    until = slice < 0 ? -1 : wv_now_ms() + slice * 1000.0;
    for (;;) {
        if ((c = unstarted(s)) != NULL)
            break; /* its result says why it never went out */
        r = wv_drive(s, until, &c, &rc, &why);
        if (r < 0)
            return luaL_error(L, "libcurl: %s", why);
        if (r == 1)
            break;
        /* The slice ran out (0) or an answer has bytes to decode (2). */
        if (feed_inflight(L, s) == 2)
            return 2;
        if (r == 0) {
            lua_pushboolean(L, 0);
            return 1;
        }
    }
    id = c->id;
    c->id = 0;
    s->inflight--;
    wv_free_headers(c);
    lua_pushinteger(L, id);
    lua_pushvalue(L, lua_upvalueindex(2)); /* result_p */
    lua_pushvalue(L, 1);                   /* the session */
    lua_pushlightuserdata(L, c);
    lua_pushinteger(L, (lua_Integer)rc);
    s->busy++;
    status = lua_pcall(L, 3, 1, 0);
    if (!s->closed) {
        wv_clear_conn_state(L, s, c);
        wv_release_request(c);
    }
    end_busy(s);
    if (s->closed) {
        /* Closed while the answer was read: its buffers are gone. */
        lua_pop(L, 1);
        return 1 + closed_result(L, "the session was closed while the answer was read", 1);
    }
    if (status == LUA_ERRMEM) {
        char msg[120];
        lua_pop(L, 1);
        collect_now(L, s); /* the rows made so far were let go with the state */
        if (s->closed)
            return 1 + closed_result(L, "the session was closed while the answer was read", 1);
        snprintf(msg, sizeof msg, "not enough memory to build the answer's tables");
        lua_createtable(L, 0, 2);
        wv_push_error(L, "too_large", "memory", msg, 0, 1);
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
 *   (seconds, for this call only), `spool` (a directory: the answer goes to
 *   an unnamed file there, its rows only checked and counted; when no file
 *   can be made there the request is not sent and its result's error has
 *   reason `spool`, `sent` false)
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
/* do_wait as a protected worker: the session at 1, the slice at 2. */
static int wait_p(lua_State *L)
{
    wv_session *s = (wv_session *)lua_touserdata(L, 1);
    double slice = lua_tonumber(L, 2);
    lua_settop(L, 1);
    return do_wait(L, s, slice);
}

/*
 * do_wait with the collector held: what is made while the session waits is
 * the answers' rows, all of them live, so the cycles the collector would run
 * over them as they grow free nothing.  It is held only when it runs, and
 * given back here whatever happens inside (an error too); no Lua code runs
 * in between, so an interrupt (Ctrl-C's hook) cannot leave it held.  The
 * results stand above the session at 1; returns their count.  (Lua 5.1
 * cannot say whether its collector runs: there it is left alone.)
 */
#if LUA_VERSION_NUM == 504
/*
 * How Lua 5.4's collector is held: told that it owes nothing until this many
 * more KiB are made (its debt moved down by a constant), then the same
 * constant given back, so its debt is what it would have been had it run
 * (what was made in between included) and it takes up its own pacing
 * where it stands.  LUA_GCSTOP and LUA_GCRESTART would lose that pacing:
 * a restart sets the debt to zero, and in the generational mode (the
 * `lua` interpreter's) the first allocation after it ran a major
 * collection over everything that was live, after every wait: six windows
 * of 59,000 rows kept in memory took 1.26x as long as with no hold at all.
 * The shift is plain arithmetic on the debt in lapi.c (5.4.0 to 5.4.7).
 */
#define WV_GC_SHIFT (1 << 30)
#define HOLD_GC(L) lua_gc((L), LUA_GCSTEP, -WV_GC_SHIFT)
#define RELEASE_GC(L) lua_gc((L), LUA_GCSTEP, WV_GC_SHIFT)
#else
#define HOLD_GC(L) lua_gc((L), LUA_GCSTOP, 0)
#define RELEASE_GC(L) lua_gc((L), LUA_GCRESTART, 0)
#endif

static int wait_held(lua_State *L, wv_session *s, double slice)
{
    int status, held = 0;
    not_reentrant(L, s);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(5)); /* wait_p */
    lua_pushvalue(L, 1);
    lua_pushnumber(L, (lua_Number)slice);
#ifdef LUA_GCISRUNNING
    held = s->gc_hold && lua_gc(L, LUA_GCISRUNNING, 0);
    if (held)
        (void)HOLD_GC(L);
#endif
    status = lua_pcall(L, 2, LUA_MULTRET, 0);
    if (held)
        (void)RELEASE_GC(L);
    if (status != 0)
        return lua_error(L);
    return lua_gettop(L) - 1;
}

static int l_wait(lua_State *L)
{
    wv_session *s = check_session(L);
    double slice = luaL_optnumber(L, 2, -1);
    if (slice != slice)
        return luaL_argerror(L, 2, "seconds expected");
    lua_settop(L, 1);
    return wait_held(L, s, slice);
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
    if (wait_held(L, s, -1) == 1)
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
            wv_clear_conn_state(L, s, c);
            wv_release_request(c);
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
    char hex[33];
    if (wv_token(s) == NULL)
        return luaL_error(L, "session is closed");
    if (!wv_token_id(s, hex))
        return luaL_error(L, "not enough memory");
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
    wv_set_integer(L, "requests", s->requests);
    wv_set_integer(L, "connects", s->connects);
    wv_set_number(L, "bytes", s->bytes);
    wv_set_integer(L, "inflight", s->inflight);
    {
        /* Answer bytes held now: received and not decoded yet. */
        int i;
        size_t held = 0;
        for (i = 0; i < s->nconns && !s->freed; i++)
            held += s->conn[i].body.len;
        wv_set_integer(L, "buffered", (lua_Integer)held);
    }
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
        lua_pushcfunction(L, feed_p);
        lua_pushcfunction(L, gc_p);
        /* wait_p, with the same workers (do_wait reaches them). */
        lua_pushcfunction(L, start_p);
        lua_pushcfunction(L, result_p);
        lua_pushcfunction(L, feed_p);
        lua_pushcfunction(L, gc_p);
        lua_pushcclosure(L, wait_p, 4);
        lua_pushcclosure(L, r->func, 5);
        lua_setfield(L, -2, r->name);
    }
    lua_pop(L, 2);

    lua_pushcfunction(L, l_session);
    lua_setfield(L, -2, "session");
    lua_pushstring(L, curl_version());
    lua_setfield(L, -2, "curl_version");
}
