/*
 * request.c: a Lua request table -> a libcurl easy handle ready to go.
 * Every field is read raw and checked before anything is allocated; every
 * allocation is stored in the connection before the next may raise.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "session.h"

void wv_free_headers(wv_conn *c)
{
    struct curl_slist *h;
    for (h = c->headers; h != NULL; h = h->next)
        if (h->data != NULL)
            wv_wipe(h->data, strlen(h->data));
    curl_slist_free_all(c->headers);
    c->headers = NULL;
}

void wv_release_request(wv_conn *c)
{
    c->streaming = 0;
    if (c->spool_fd >= 0) {
        close(c->spool_fd);
        c->spool_fd = -1;
    }
    if (c->csv_fd >= 0) {
        close(c->csv_fd);
        c->csv_fd = -1;
    }
    c->stream.csv = NULL;
    wv_csv_free(c->csv);
    c->csv = NULL;
    wv_inflater_free(c->inflater); /* (joins its thread) */
    c->inflater = NULL;
    c->head.len = 0;
    wv_free_headers(c);
    if (c->mime != NULL) {
        curl_easy_setopt(c->easy, CURLOPT_MIMEPOST, (curl_mime *)NULL);
        curl_mime_free(c->mime);
        c->mime = NULL;
    }
    c->body.len = 0;
    if (c->body.cap > WV_KEEP_BUFFER_BYTES)
        wv_buf_free(&c->body);
    if (c->scratch.cap > WV_KEEP_BUFFER_BYTES)
        wv_buf_free(&c->scratch);
}

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
/* A part's name, filename or content type becomes a header line of the
 * part: no control characters (NUL included: libcurl would cut the value
 * there) and no quotes. */
static int part_field_ok(lua_State *L, int idx, const char *key)
{
    size_t len = 0;
    const char *v = wv_opt_string(L, idx, key, &len);
    return v == NULL || (!wv_has_ctl(v, len) && memchr(v, '"', len) == NULL);
}

/* Check the multipart list at the top of the stack; raises on bad types. */
static void check_parts(lua_State *L, int idx)
{
    size_t i, n = lua_rawlen(L, idx);
    if (n == 0)
        luaL_error(L, "bad field 'parts' (non-empty list expected)");
    for (i = 1; i <= n; i++) {
        const char *name, *data, *path;
        size_t plen = 0;
        int t;
        lua_rawgeti(L, idx, (int)i);
        if (!lua_istable(L, -1))
            luaL_error(L, "bad part #%d (table expected)", (int)i);
        t = lua_gettop(L);
        name = wv_opt_string(L, t, "name", NULL);
        data = wv_opt_string(L, t, "data", NULL);
        path = wv_opt_string(L, t, "path", &plen);
        if (!part_field_ok(L, t, "name") || !part_field_ok(L, t, "filename")
            || !part_field_ok(L, t, "content_type"))
            luaL_error(L, "bad part #%d (control characters or quotes in name, filename or content_type)",
                       (int)i);
        if (path != NULL && memchr(path, '\0', plen) != NULL)
            luaL_error(L, "bad part #%d (a NUL byte in 'path')", (int)i);
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
        name = wv_opt_string(L, t, "name", NULL);
        data = wv_opt_string(L, t, "data", &dlen);
        path = wv_opt_string(L, t, "path", NULL);
        filename = wv_opt_string(L, t, "filename", NULL);
        ctype = wv_opt_string(L, t, "content_type", NULL);
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

/* Check the request's `csv` (the table at the top of the stack): `columns`
 * a list of strings, `time` a string, `cap` a positive integer; raises on
 * bad types.  Gives the cap (0: none). */
static lua_Integer check_csv(lua_State *L, int t)
{
    size_t i, n;
    lua_Integer cap = 0;
    int nd;
    if (!lua_istable(L, t))
        luaL_error(L, "bad field 'csv' (table expected)");
    wv_rawfield(L, t, "ndjson");
    nd = !lua_isnil(L, -1);
    if (nd && !lua_isfunction(L, -1))
        luaL_error(L, "bad field 'csv.ndjson' (function expected)");
    lua_pop(L, 1);
    wv_rawfield(L, t, "columns");
    if (nd && !lua_isnil(L, -1))
        luaL_error(L, "bad field 'csv' (columns or ndjson, not both)");
    if (!nd && !lua_istable(L, -1))
        luaL_error(L, "bad field 'csv.columns' (list of strings expected)");
    n = nd ? 0 : lua_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "bad field 'csv.columns' (list of strings expected)");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    wv_rawfield(L, t, "time");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "bad field 'csv.time' (string expected)");
    lua_pop(L, 1);
    wv_rawfield(L, t, "cap");
    if (!lua_isnil(L, -1)) {
        /* (LuaJIT's lua_tointegerx takes 1.5 for 1: the number is looked at.) */
        lua_Number v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
        if (!(v >= 1 && v <= 1e15 && v == (lua_Number)(lua_Integer)v))
            luaL_error(L, "bad field 'csv.cap' (positive integer expected)");
        cap = (lua_Integer)v;
    }
    lua_pop(L, 1);
    return cap;
}

/* Put connection `c` in CSV mode (or NDJSON: `ndjson`, the Lua encoder of
 * the rows it leaves, kept in the connection's state table) for the
 * request's `csv` at `t` (checked). */
static void start_csv(lua_State *L, wv_session *s, wv_conn *c, int t)
{
    size_t tlen = 0;
    const char *time = wv_opt_string(L, t, "time", &tlen);
    wv_rawfield(L, t, "ndjson");
    if (!lua_isnil(L, -1)) {
        c->csv = wv_ndjson_new(0, time, tlen);
        if (c->csv != NULL) {
            wv_push_conn_state(L, s, c);
            wv_stream_set_encoder(L, lua_gettop(L), lua_gettop(L) - 1);
            lua_pop(L, 1);
        }
    } else {
        lua_pop(L, 1);
        wv_rawfield(L, t, "columns");
        c->csv = wv_csv_new(L, lua_gettop(L), 0, time, tlen);
    }
    lua_pop(L, 1);
    if (c->csv == NULL)
        luaL_error(L, "not enough memory");
    wv_csv_strict(c->csv);
    c->stream.csv = c->csv;
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
lua_Integer wv_start_request(lua_State *L, wv_session *s, int idx)
{
    const char *method, *url, *body, *ctype, *spool;
    size_t ulen = 0, blen = 0, clen = 0;
    int has_parts, decode, fresh, nheaders, i, has_csv, keep_answer = 1;
    lua_Integer cap = 0;
    double timeout;
    wv_conn *c;
    CURL *e;
    CURLcode rc = CURLE_OK;
    CURLMcode mrc;

    luaL_checktype(L, idx, LUA_TTABLE);
    if (s->closed)
        luaL_error(L, "session is closed");
    method = wv_opt_string(L, idx, "method", NULL);
    if (method == NULL)
        method = "GET";
    if (!method_ok(method))
        luaL_error(L, "bad field 'method' (GET, POST, PUT, DELETE or PATCH expected)");
    url = wv_opt_string(L, idx, "url", &ulen);
    if (url == NULL || !(wv_ieq_prefix(url, ulen, "http://") || wv_ieq_prefix(url, ulen, "https://")))
        luaL_error(L, "bad field 'url' (http:// or https:// URL expected)");
    if (wv_has_ctl(url, ulen) || memchr(url, ' ', ulen) != NULL)
        luaL_error(L, "bad field 'url' (spaces and control characters are not allowed)");
    body = wv_opt_string(L, idx, "body", &blen);
    ctype = wv_opt_string(L, idx, "content_type", &clen);
    if (ctype != NULL && (wv_has_ctl(ctype, clen) || clen > 200))
        luaL_error(L, "bad field 'content_type' (control characters are not allowed)");
    wv_rawfield(L, idx, "decode");
    decode = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    timeout = wv_opt_number(L, idx, "timeout", 0);
    if (timeout < 0 || timeout > 86400)
        luaL_error(L, "bad field 'timeout' (seconds between 0 and 86400 expected)");
    spool = wv_opt_string(L, idx, "spool", NULL);
    if (spool != NULL && !decode)
        luaL_error(L, "bad request ('spool' needs the answer decoded)");
    wv_rawfield(L, idx, "csv");
    has_csv = !lua_isnil(L, -1);
    if (has_csv) {
        if (spool == NULL)
            luaL_error(L, "bad request ('csv' needs 'spool')");
        cap = check_csv(L, lua_gettop(L));
        wv_rawfield(L, lua_gettop(L), "keep_answer");
        keep_answer = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    wv_rawfield(L, idx, "fresh");
    fresh = lua_toboolean(L, -1);
    lua_pop(L, 1);
    wv_rawfield(L, idx, "parts");
    has_parts = !lua_isnil(L, -1);
    if (has_parts) {
        if (!lua_istable(L, -1))
            luaL_error(L, "bad field 'parts' (table expected)");
        if (body != NULL)
            luaL_error(L, "bad request ('body' and 'parts' are exclusive)");
        check_parts(L, lua_gettop(L));
    }
    lua_pop(L, 1);
    wv_rawfield(L, idx, "headers");
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
            if (wv_has_ctl(h, hlen) || memchr(h, ':', hlen) == NULL)
                luaL_error(L, "bad header #%d ('Name: value' without control characters expected)", i);
            if (wv_ieq_prefix(h, hlen, "wolkvox-token"))
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
    wv_release_request(c);
    c->too_large = 0;
    c->out_of_memory = 0;
    c->retry_after[0] = '\0';
    c->errbuf[0] = '\0';
    c->decode = decode;
    c->streaming = 0;
    c->lua_oom = 0;
    c->received = 0;
    c->head.len = 0;
    if (decode) {
        /* Decoded as it arrives: the state table in the connection's slot. */
        if (c->json == NULL && (c->json = wv_json_ctx_new()) == NULL)
            luaL_error(L, "not enough memory");
        wv_stream_init(&c->stream, &c->body, &c->scratch, c->json, wv_token(s), s->token_len);
        wv_stream_state(L);
        wv_set_conn_state(L, s, c);
        c->streaming = 1;
    }
    c->spool_errno = 0;
    c->own_inflate = WV_OWN_INFLATE && decode;
    c->gzip = 0;
    c->bad_encoding = 0;
    c->inflate_failed = 0;
    c->paused = 0;
    c->stopped = 0;
    c->start_errno = 0;
    if (spool != NULL) {
        /* The rows go to disk and are only checked and counted here (or
         * made into CSV lines, checked the same way: `csv`).  A
         * directory that cannot hold them now (a full disk: no inode left)
         * is this request's result, not a raise: it is never sent, and
         * wait() reports it (kind transport, reason spool, not sent). */
        int err = 0;
        if (has_csv) {
            /* The rows' CSV lines go to a file of their own, and the
             * answer itself too only when asked (`keep_answer`). */
            wv_rawfield(L, idx, "csv");
            start_csv(L, s, c, lua_gettop(L));
            lua_pop(L, 1);
            c->csv_cap = cap;
            c->csv_fd = wv_spool_create(spool, &err);
        }
        if (err == 0 && keep_answer)
            c->spool_fd = wv_spool_create(spool, &err);
        if (err != 0 || (has_csv && c->csv_fd < 0) || (keep_answer && c->spool_fd < 0)) {
            c->start_errno = err != 0 ? err : EIO;
            c->sends = 0;
            c->id = ++s->next_id;
            s->inflight++;
            return c->id;
        }
        c->stream.count_only = 1;
    }
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
        wv_rawfield(L, idx, "headers");
        for (i = 1; i <= nheaders; i++) {
            lua_rawgeti(L, -1, i);
            add_header(L, c, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (has_parts) {
        wv_rawfield(L, idx, "parts");
        rc = build_mime(L, c, lua_gettop(L));
        lua_pop(L, 1);
    }

#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
    SET(CURLOPT_URL, url);
    SET(CURLOPT_HTTPHEADER, c->headers);
    /* A gzip answer that is decoded as it arrives is inflated on a thread
     * of its own (inflate.c), while this one decodes: only gzip is asked
     * for then, and libcurl passes it on as it comes.  A body wanted as
     * sent (decode = false): libcurl's own decoding. */
    SET(CURLOPT_ACCEPT_ENCODING, c->own_inflate ? "gzip" : "");
    SET(CURLOPT_HTTP_CONTENT_DECODING, c->own_inflate ? 0L : 1L);
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
        wv_release_request(c);
        luaL_error(L, "libcurl rejected the request: %s", curl_easy_strerror(rc));
    }
    mrc = curl_multi_add_handle(s->multi, e);
    if (mrc != CURLM_OK) {
        wv_release_request(c);
        luaL_error(L, "curl_multi_add_handle failed: %s", curl_multi_strerror(mrc));
    }
    c->id = ++s->next_id;
    s->inflight++;
    s->requests++;
    return c->id;
}
