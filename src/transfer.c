/*
 * transfer.c: what happens while a request is on the wire and when it ends.
 * The libcurl callbacks fill the connection's buffers (no Lua in them); the
 * multi loop waits in slices; the result table says what came back, with
 * the failure's kind and reason in the project's vocabulary.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "session.h"

/* The first bytes stay apart, for the snippet of an answer that is not JSON. */
static size_t head_bytes(const wv_conn *c)
{
    return WV_SNIPPET_BYTES + 6 * (c->owner->token_len < 4096 ? c->owner->token_len : 4096);
}

/* Bytes of the answer as sent (inflated): to the spool, the head and the
 * decoder's buffer.  0 to stop the transfer (too large, a spool or memory
 * failure: the flags say which). */
static int accept_bytes(wv_conn *c, const char *ptr, size_t n)
{
    size_t keep = head_bytes(c);
    if (n > c->owner->max_bytes || c->received > c->owner->max_bytes - n) {
        c->too_large = 1;
        return 0;
    }
    if (c->spool_fd >= 0 && !wv_spool_write(c->spool_fd, ptr, n, &c->spool_errno))
        return 0;
    if (c->head.len < keep) {
        size_t m = keep - c->head.len < n ? keep - c->head.len : n;
        if (!wv_buf_reserve(&c->head, m)) {
            c->out_of_memory = 1;
            return 0;
        }
        memcpy(c->head.p + c->head.len, ptr, m);
        c->head.len += m;
    }
    if (!wv_buf_reserve(&c->body, n)) {
        c->out_of_memory = 1;
        return 0;
    }
    memcpy(c->body.p + c->body.len, ptr, n);
    c->body.len += n;
    c->received += n;
    return 1;
}

static int give_inflated(void *ud, const char *p, size_t n)
{
    return accept_bytes((wv_conn *)ud, p, n);
}

static void wake_multi(void *ud)
{
#if WV_OWN_INFLATE
    (void)curl_multi_wakeup((CURLM *)ud);
#else
    (void)ud; /* (never started: own_inflate is 0) */
#endif
}

/* A gzip answer's bytes, for its inflater's thread (started by the first). */
static size_t to_inflater(wv_conn *c, char *ptr, size_t n)
{
    if (c->bad_encoding) {
        c->inflate_failed = 1;
        return 0;
    }
    if (c->inflater == NULL && (c->inflater = wv_inflater_start(wake_multi, c->owner->multi)) == NULL) {
        c->out_of_memory = 1;
        return 0;
    }
    if (wv_inflater_full(c->inflater)) {
        c->paused = 1; /* resumed once the thread took it (pump) */
        return CURL_WRITEFUNC_PAUSE;
    }
    if (!wv_inflater_put(c->inflater, ptr, n)) {
        c->inflate_failed = 1;
        return 0;
    }
    return n;
}

/* Whether the transfer must stop at its next bytes: its tables did not
 * fit (the rest would not either), its lines could not be written
 * (flush_lines), or what was inflated failed or did not fit. */
static int stopping(const wv_conn *c)
{
    return c->lua_oom || c->spool_errno != 0 || c->inflate_failed || c->too_large || c->out_of_memory;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    wv_conn *c = (wv_conn *)ud;
    size_t n = size * nmemb, keep = head_bytes(c);
    if (stopping(c))
        return 0;
    if (c->streaming && wv_stream_failed(&c->stream)) {
        /* Not JSON: nothing more can make it an answer.  The head is
         * completed (the snippet), then the transfer stops: a body that
         * never ends, or ends only at the size cap, is not read on. */
        size_t m = c->head.len < keep ? (keep - c->head.len < n ? keep - c->head.len : n) : 0;
        if (m > 0 && c->inflater == NULL && wv_buf_reserve(&c->head, m)) {
            memcpy(c->head.p + c->head.len, ptr, m);
            c->head.len += m;
            c->received += m;
            if (c->head.len < keep)
                return n; /* m == n: all of it went to the head */
        }
        c->stopped = 1;
        return 0;
    }
    if (c->streaming && wv_stream_pending(&c->stream) >= WV_PAUSE_BYTES) {
        /* libcurl keeps this chunk and gives it again once resumed
         * (wv_resume), after the decoder caught up.  Only bytes the decoder
         * has not looked at count: a value it is still reading (a string,
         * a key or a row larger than this) grows the buffer instead, up to
         * the size cap, since the decoder cannot consume half a value. */
        c->paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (c->own_inflate && c->gzip)
        return to_inflater(c, ptr, n);
    if (c->own_inflate && c->bad_encoding) {
        c->inflate_failed = 1;
        return 0;
    }
    return accept_bytes(c, ptr, n) ? n : 0;
}

/* The value of a header line past its name's `skip` bytes, trimmed. */
static const char *header_value(const char *ptr, size_t n, size_t skip, size_t *len)
{
    const char *v = ptr + skip, *e = ptr + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *len = (size_t)(e - v);
    return v;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    wv_conn *c = (wv_conn *)ud;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    static const char encoding[] = "content-encoding:";
    if (c->own_inflate) {
        /* Each answer's own headers (a status line starts them). */
        if (wv_ieq_prefix(ptr, n, "http/")) {
            c->gzip = 0;
            c->bad_encoding = 0;
        } else if (wv_ieq_prefix(ptr, n, encoding)) {
            size_t len;
            const char *v = header_value(ptr, n, sizeof encoding - 1, &len);
            if ((len == 4 && wv_ieq_prefix(v, len, "gzip")) || (len == 6 && wv_ieq_prefix(v, len, "x-gzip")))
                c->gzip = 1;
            else if (!(len == 8 && wv_ieq_prefix(v, len, "identity")) && len > 0)
                c->bad_encoding = 1; /* (only gzip was asked for) */
        }
    }
    if (wv_ieq_prefix(ptr, n, name)) {
        size_t len;
        const char *v = header_value(ptr, n, sizeof name - 1, &len);
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

/* libcurl 7.x says "out of memory" for a header line past its own limit
 * (100 KiB), "receive error" for a malformed chunked body and "unsupported
 * protocol" for bytes that are not HTTP: all are protocol errors of the
 * server.  Our own buffers failing is `memory`. */
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
    /* Once the request went out, an "unsupported protocol" is about the
     * answer (bytes that are not HTTP read as HTTP/0.9, an HTTP version that
     * does not exist): the URL is not at fault. */
    if (rc == CURLE_UNSUPPORTED_PROTOCOL && c->sends > 0) {
        *msg = c->errbuf[0] ? c->errbuf : "the answer is not HTTP";
        return "protocol";
    }
    return reason;
}

/* The error part of a result: kind, reason, message, curl_code, sent. */
void wv_push_error(lua_State *L, const char *kind, const char *reason, const char *msg,
                       lua_Integer curl_code, int sent)
{
    lua_createtable(L, 0, 5);
    wv_set_string(L, "kind", kind);
    wv_set_string(L, "reason", reason);
    wv_set_integer(L, "curl_code", curl_code);
    wv_set_string(L, "message", msg);
    lua_pushboolean(L, sent);
    lua_setfield(L, -2, "sent");
}

/* Write the CSV lines the decoder made to the connection's file (a
 * connection in CSV mode); 0 and c->spool_errno when that fails. */
static int flush_lines(wv_conn *c)
{
    wv_buf *out;
    int ok = 1;
    if (c->csv == NULL)
        return 1;
    out = wv_csv_out(c->csv);
    if (out->len > 0 && c->spool_errno == 0)
        ok = wv_spool_write(c->csv_fd, out->p, out->len, &c->spool_errno);
    out->len = 0;
    return ok && c->spool_errno == 0;
}

static void push_spool_error(lua_State *L, wv_conn *c, CURLcode rc)
{
    char why[200];
    snprintf(why, sizeof why, "cannot write the answer to the spool directory: %s", strerror(c->spool_errno));
    wv_push_error(L, "transport", "spool", why, (lua_Integer)rc, c->sends > 0);
    lua_setfield(L, -2, "error");
}

/* The error of a gzip answer this process inflates (inflate.c) that could
 * not be: libcurl's own code and words for it, as when it inflates. */
static void push_inflate_error(lua_State *L, wv_conn *c)
{
    const char *why = c->inflater != NULL ? wv_inflater_error(c->inflater) : NULL;
    if (c->bad_encoding)
        why = "the answer's content encoding is not the gzip asked for";
    else if (why == NULL)
        why = "the answer could not be inflated";
    wv_push_error(L, "transport", "protocol", why, (lua_Integer)CURLE_BAD_CONTENT_ENCODING, c->sends > 0);
    lua_setfield(L, -2, "error");
}

/* A gzip answer's transfer ended: the rest of it inflated, given to the
 * decoder a buffer at a time (a step each, so the buffer stays bounded),
 * the state table at the top of the stack.  0 when inflating or taking it
 * failed (the flags say why). */
static int drain_inflater(lua_State *L, wv_conn *c)
{
    int r;
    wv_inflater_end_input(c->inflater);
    do {
        r = wv_inflater_take(c->inflater, give_inflated, c, 1);
        if (r == -1)
            c->inflate_failed = 1;
        if (r < 0)
            return 0;
        if (wv_stream_pending(&c->stream) >= WV_FEED_BYTES) {
            if (wv_stream_step(L, &c->stream, -1, 0) < 0)
                return 1; /* (the last step says why) */
            if (!flush_lines(c))
                return 0;
        }
    } while (r == 0);
    return 1;
}

/* Build the result table of a finished transfer on the stack.  Runs in
 * protected mode (result_p), with the session busy. */
void wv_push_result(lua_State *L, wv_session *s, wv_conn *c, CURLcode rc)
{
    long status = 0, connects = 0;
    double total = 0;
    curl_off_t wire = 0;
    char *ctype = NULL;
    CURL *e = c->easy;

    if (c->start_errno != 0) {
        /* Never sent (wv_start_request): its spool file could not be made. */
        char why[200];
        snprintf(why, sizeof why, "cannot create a temporary file in the spool directory: %s",
                 strerror(c->start_errno));
        lua_createtable(L, 0, 4);
        wv_set_integer(L, "status", 0);
        wv_set_integer(L, "bytes", 0);
        wv_set_integer(L, "sends", 0);
        wv_push_error(L, "transport", "spool", why, 0, 0);
        lua_setfield(L, -2, "error");
        return;
    }

    if (c->inflater != NULL && rc == CURLE_OK && !c->lua_oom) {
        /* The rest of a gzip answer this process inflates, before its
         * size is said; what fails is said as libcurl's failures are. */
        wv_push_conn_state(L, s, c);
        if (!drain_inflater(L, c))
            rc = CURLE_WRITE_ERROR;
        lua_pop(L, 1);
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &total);
    curl_easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &wire);
    curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ctype);
    s->connects += connects;
    s->bytes += (double)c->received;

    lua_createtable(L, 0, 12);
    wv_set_integer(L, "status", (lua_Integer)status);
    wv_set_integer(L, "bytes", (lua_Integer)c->received);
    wv_set_number(L, "wire_bytes", (double)wire);
    wv_set_number(L, "time", total);
    wv_set_integer(L, "connects", (lua_Integer)connects);
    wv_set_integer(L, "sends", (lua_Integer)c->sends);
    if (ctype != NULL) {
        wv_push_masked(L, s, ctype, strlen(ctype));
        lua_setfield(L, -2, "content_type");
    }
    if (c->retry_after[0] != '\0') {
        wv_push_masked(L, s, c->retry_after, strlen(c->retry_after));
        lua_setfield(L, -2, "retry_after");
    }

    if (c->lua_oom) {
        wv_push_error(L, "too_large", "memory", "not enough memory to build the answer's tables", 0, 1);
        lua_setfield(L, -2, "error");
        return;
    }
    if (rc == CURLE_WRITE_ERROR && c->stopped)
        rc = CURLE_OK; /* stopped on purpose: the answer is not JSON (below) */
    if (rc == CURLE_OK && c->spool_errno != 0)
        rc = CURLE_WRITE_ERROR; /* the last bytes came, but the lines were not all written */
    if (rc != CURLE_OK) {
        const char *kind = "transport", *msg = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
        const char *reason = honest_reason(rc, c, reason_of(rc), &msg);
        if (c->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
            char big[80];
            snprintf(big, sizeof big, "answer larger than the %lu-byte limit",
                     (unsigned long)s->max_bytes);
            wv_push_error(L, "too_large", "size", big, (lua_Integer)rc, c->sends > 0);
        } else if (c->spool_errno != 0) {
            push_spool_error(L, c, rc);
            return;
        } else if (c->inflate_failed) {
            push_inflate_error(L, c);
            return;
        } else {
            if (c->out_of_memory)
                reason = "memory";
            wv_push_error(L, kind, reason, "", (lua_Integer)rc, c->sends > 0);
            wv_push_masked(L, s, msg, strlen(msg));
            lua_setfield(L, -2, "message");
        }
        lua_setfield(L, -2, "error");
        return;
    }
    if (c->received == 0)
        return;
    if (!c->decode) {
        lua_pushlstring(L, c->body.p, c->body.len);
        lua_setfield(L, -2, "body");
        return;
    }
    /* What has not been decoded yet, then the answer as core.decode gives it. */
    wv_push_conn_state(L, s, c);
    if (wv_stream_step(L, &c->stream, -1, 1) == 1) {
        if (!flush_lines(c)) {
            lua_pop(L, 1);
            push_spool_error(L, c, CURLE_WRITE_ERROR);
            return;
        }
        wv_stream_push_value(L, &c->stream, -1);
        lua_remove(L, -2);
        lua_setfield(L, -2, "value");
        if (c->csv != NULL) {
            /* The rows' lines are on disk: their count, the file, whether
             * the first row had a member no column takes, and the rows'
             * times when there are as many as the cap (for sizing). */
            wv_set_integer(L, "rows", (lua_Integer)c->stream.rows);
            lua_pushboolean(L, c->stream.top_array || c->stream.streamed);
            lua_setfield(L, -2, "streamed");
            wv_spool_push(L, &c->csv_fd, wv_token(s), s->token_len);
            lua_setfield(L, -2, "lines");
            lua_pushboolean(L, wv_csv_extra(c->csv));
            lua_setfield(L, -2, "lines_extra");
            if (c->csv_cap > 0 && (lua_Integer)c->stream.rows >= c->csv_cap) {
                wv_csv_push_times(L, c->csv);
                lua_setfield(L, -2, "times");
            }
        }
        if (c->spool_fd >= 0) {
            /* The rows are on disk: their count, and the file. */
            wv_set_integer(L, "rows", (lua_Integer)c->stream.rows);
            lua_pushboolean(L, c->stream.top_array || c->stream.streamed);
            lua_setfield(L, -2, "streamed");
            wv_spool_push(L, &c->spool_fd, wv_token(s), s->token_len);
            lua_setfield(L, -2, "spool");
        }
    } else {
        lua_pop(L, 1);
        lua_pushstring(L, wv_stream_error(&c->stream));
        /* (A row the NDJSON encoder could not write is the output's
         * problem: the answer itself was fine.) */
        lua_setfield(L, -2, c->stream.encode_failed ? "lines_error" : "decode_error");
        wv_push_snippet(L, s, &c->head);
        lua_setfield(L, -2, "snippet");
    }
}

void wv_feed_partial(lua_State *L, wv_session *s, wv_conn *c)
{
    (void)s;
    wv_push_conn_state(L, s, c);
    (void)wv_stream_step(L, &c->stream, -1, 0);
    lua_pop(L, 1);
    /* (A failed write stops the transfer at its next bytes: on_body.) */
    (void)flush_lines(c);
}

/* Between waits (no Lua): what the inflaters made goes to the decoders'
 * buffers, and transfers they had paused go on. */
static void pump(wv_session *s)
{
    int i;
    for (i = 0; i < s->nconns; i++) {
        wv_conn *c = &s->conn[i];
        int r;
        if (c->id == 0 || c->inflater == NULL || c->inflate_failed)
            continue;
        r = wv_inflater_take(c->inflater, give_inflated, c, 0);
        if (r == -1)
            c->inflate_failed = 1;
        wv_resume(c);
    }
}

void wv_resume(wv_conn *c)
{
    if (c->paused && (stopping(c) || (wv_stream_pending(&c->stream) < WV_PAUSE_BYTES
                                      && (c->inflater == NULL || !wv_inflater_full(c->inflater))))) {
        c->paused = 0;
        /* May write at once (on_body, no Lua), and pause again. */
        (void)curl_easy_pause(c->easy, CURLPAUSE_CONT);
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

double wv_now_ms(void)
{
    return now_ms();
}

/* Whether a connection holds enough bytes the decoder has not looked at
 * to decode them now.  A step looks at every byte it is given (or fails),
 * so once fed a connection is not due again until more bytes arrive: the
 * loop never spins on a value still arriving, nor on an answer that
 * failed to decode. */
static int feed_due(const wv_session *s)
{
    int i;
    for (i = 0; i < s->nconns; i++) {
        const wv_conn *c = &s->conn[i];
        if (c->id != 0 && c->streaming && !c->lua_oom && wv_stream_pending(&c->stream) >= WV_FEED_BYTES)
            return 1;
    }
    return 0;
}

int wv_drive(wv_session *s, double until, wv_conn **done, CURLcode *rc, const char **why)
{
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
        pump(s);
        if (feed_due(s))
            return 2;
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

/* Every socket libcurl opens is closed on exec: a program this process
 * starts (os.execute, io.popen, a fake server) must not inherit a
 * connection to wolkvox, nor hold a server's socket open after we close it. */
static int on_socket(void *ud, curl_socket_t fd, curlsocktype purpose)
{
    int flags = fcntl(fd, F_GETFD);
    (void)ud;
    (void)purpose;
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
        return CURL_SOCKOPT_ERROR;
    return CURL_SOCKOPT_OK;
}

CURLcode wv_set_callbacks(wv_conn *c)
{
    CURL *e = c->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)c);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)c);
    SET(CURLOPT_DEBUGFUNCTION, on_debug);
    SET(CURLOPT_DEBUGDATA, (void *)c);
    SET(CURLOPT_VERBOSE, 1L); /* feeds on_debug only: nothing is printed */
    SET(CURLOPT_SOCKOPTFUNCTION, on_socket);
#undef SET
    return rc;
}
