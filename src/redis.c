/*
 * wolkvox.redis: a small binding of hiredis, the Redis project's own C
 * client, for fleet mode outside nginx (wolkvox.state.redis).  Optional: the
 * Makefile builds it only when pkg-config finds hiredis; the core never
 * needs it.
 *
 *   redis.connect(host, port, timeout [, tls]) -> connection | nil, message
 *   conn:command(arg, ...)             -> reply | nil, message, "reply" | "io"
 *   conn:close(), conn:broken()
 *   redis.version, redis.tls
 *
 * TLS (rediss://): hiredis 0.14, Debian 12's, has none, so when built with
 * OpenSSL (WV_REDIS_TLS) this module makes the TLS connection itself and
 * uses hiredis only for the protocol: redisFormatCommandArgv writes the
 * command, a redisReader parses the reply.  The server's certificate is
 * always verified (the system's CAs, or `tls.cafile`), and its name or IP
 * address checked against the host asked for; TLS 1.2 at least.  A server
 * that asks for a client certificate gets `tls.cert` (a PEM chain) signed
 * with `tls.key`.
 *
 * Replies: a status or a bulk string as a string, an integer as a number, a
 * nil reply as false, an array as a table.  An error reply gives nil, the
 * server's message, "reply"; a broken connection nil, hiredis' message,
 * "io" (the connection is then unusable: close it and connect again).  No
 * argument is ever copied into a message: AUTH passwords pass through here.
 */
#define _POSIX_C_SOURCE 200809L /* sigtimedwait, getaddrinfo */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/time.h>
#ifdef WV_REDIS_TLS
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

#include <lua.h>
#include <lauxlib.h>
#include <hiredis/hiredis.h>

#include "compat.h"

#define CONN_MT "wolkvox.redis.conn"
#define MAX_ARGS 64
#define MAX_DEPTH 8

typedef struct {
    redisContext *ctx;    /* a plain connection (hiredis' own I/O) */
    int broken;
    redisReply *pending;  /* a reply being pushed: freed even if the push raises */
#ifdef WV_REDIS_TLS
    SSL_CTX *sslctx;      /* a TLS connection: our I/O, hiredis' protocol */
    SSL *ssl;
    int fd;
    redisReader *reader;
#endif
} conn_t;

/* ---- SIGPIPE ---------------------------------------------------------------
 * A write to a connection the server has reset raises SIGPIPE, whose default
 * is to end the process, and neither hiredis nor OpenSSL's socket BIO asks
 * the kernel not to (MSG_NOSIGNAL).  A program that did not load LuaSocket
 * (which ignores the signal) would die on a Redis restart.  So every command
 * runs with SIGPIPE blocked in this thread; one it raised is taken back
 * before the mask is restored, and the write fails with EPIPE instead. */
typedef struct {
    sigset_t pipe, old;
    int was_pending;
} pipe_guard;

static int pipe_pending(void)
{
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    return sigismember(&pending, SIGPIPE) == 1;
}

static void guard_pipe(pipe_guard *g)
{
    sigemptyset(&g->pipe);
    sigaddset(&g->pipe, SIGPIPE);
    g->was_pending = pipe_pending();
    pthread_sigmask(SIG_BLOCK, &g->pipe, &g->old);
}

static void unguard_pipe(pipe_guard *g)
{
    if (!g->was_pending && pipe_pending()) {
        struct timespec zero = { 0, 0 };
        int saved = errno;
        while (sigtimedwait(&g->pipe, NULL, &zero) < 0 && errno == EINTR)
            ;
        errno = saved;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static int conn_open(const conn_t *c)
{
#ifdef WV_REDIS_TLS
    if (c->ssl != NULL)
        return 1;
#endif
    return c->ctx != NULL;
}

/* Free whatever the connection holds; it is then closed. */
static void conn_free(conn_t *c)
{
    if (c->pending != NULL) {
        freeReplyObject(c->pending);
        c->pending = NULL;
    }
    if (c->ctx != NULL) {
        redisFree(c->ctx);
        c->ctx = NULL;
    }
#ifdef WV_REDIS_TLS
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->sslctx != NULL) {
        SSL_CTX_free(c->sslctx);
        c->sslctx = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->reader != NULL) {
        redisReaderFree(c->reader);
        c->reader = NULL;
    }
#endif
}

static struct timeval to_timeval(double s)
{
    struct timeval tv;
    if (s < 0.001)
        s = 0.001;
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

/* Fail a connect: the userdata at the top lets go of its context first, so
 * no message is pushed (a possible raise) while a descriptor is unowned. */
static int connect_failed(lua_State *L, conn_t *c, const char *why)
{
    char msg[320];
    snprintf(msg, sizeof msg, "%s", why);
    conn_free(c);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

#ifdef WV_REDIS_TLS
/* ---- TLS ------------------------------------------------------------------ */

/* A TCP connection to host:port within `ms`, close-on-exec and blocking,
 * reads and writes bounded by `tv`; -1 and `err` filled on failure. */
static int tcp_connect(const char *host, int port, int ms, struct timeval tv, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL, *ai;
    char service[16];
    int fd = -1, rc;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof service, "%d", port);
    rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve the Redis host: %s", gai_strerror(rc));
        return -1;
    }
    snprintf(err, errlen, "cannot connect to Redis");
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        struct pollfd p;
        int soerr = 0;
        socklen_t slen = sizeof soerr;
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS) {
                snprintf(err, errlen, "cannot connect to Redis: %s", strerror(errno));
                close(fd);
                fd = -1;
                continue;
            }
            p.fd = fd;
            p.events = POLLOUT;
            do {
                rc = poll(&p, 1, ms);
            } while (rc < 0 && errno == EINTR);
            if (rc == 0)
                soerr = ETIMEDOUT;
            else if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) != 0)
                soerr = errno;
            if (soerr != 0) {
                snprintf(err, errlen, "cannot connect to Redis: %s", strerror(soerr));
                close(fd);
                fd = -1;
                continue;
            }
        }
        break;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    rc = fcntl(fd, F_GETFL);
    if (rc < 0 || fcntl(fd, F_SETFL, rc & ~O_NONBLOCK) != 0
        || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0
        || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
        snprintf(err, errlen, "cannot set up the Redis connection: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The reason of the last OpenSSL failure, the verification's first. */
static void tls_reason(const conn_t *c, const char *what, char *err, size_t errlen)
{
    unsigned long e = ERR_get_error();
    long v = c->ssl != NULL ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    if (v != X509_V_OK)
        snprintf(err, errlen, "%s: the server's certificate: %s", what, X509_verify_cert_error_string(v));
    else if (e != 0) {
        char buf[200];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(err, errlen, "%s: %s", what, buf);
    } else
        snprintf(err, errlen, "%s: %s", what, errno != 0 ? strerror(errno) : "the connection ended");
    ERR_clear_error();
}

typedef struct {
    const char *cafile; /* the CAs to trust (NULL: the system's) */
    const char *cert;   /* this client's certificate chain (NULL: none) */
    const char *key;    /* its private key */
} tls_files;

/* The TLS handshake over a connected c->fd, the server checked. */
static int tls_start(conn_t *c, const char *host, const tls_files *f, char *err, size_t errlen)
{
    const char *cafile = f->cafile;
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;

    ERR_clear_error();
    c->sslctx = SSL_CTX_new(TLS_client_method());
    if (c->sslctx == NULL) {
        tls_reason(c, "TLS", err, errlen);
        return 0;
    }
    SSL_CTX_set_min_proto_version(c->sslctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->sslctx, SSL_VERIFY_PEER, NULL);
    if ((cafile != NULL ? SSL_CTX_load_verify_locations(c->sslctx, cafile, NULL)
                        : SSL_CTX_set_default_verify_paths(c->sslctx)) != 1) {
        tls_reason(c, cafile != NULL ? "cannot read the Redis CA file" : "cannot load this system's CAs",
            err, errlen);
        return 0;
    }
    if (f->cert != NULL) {
        if (SSL_CTX_use_certificate_chain_file(c->sslctx, f->cert) != 1) {
            tls_reason(c, "cannot read the Redis client certificate", err, errlen);
            return 0;
        }
        if (SSL_CTX_use_PrivateKey_file(c->sslctx, f->key, SSL_FILETYPE_PEM) != 1) {
            tls_reason(c, "cannot read the Redis client key", err, errlen);
            return 0;
        }
        if (SSL_CTX_check_private_key(c->sslctx) != 1) {
            tls_reason(c, "the Redis client key does not match its certificate", err, errlen);
            return 0;
        }
    }
    c->ssl = SSL_new(c->sslctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        tls_reason(c, "TLS", err, errlen);
        return 0;
    }
    if (is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1) {
            tls_reason(c, "TLS", err, errlen);
            return 0;
        }
    } else if (SSL_set_tlsext_host_name(c->ssl, host) != 1 || SSL_set1_host(c->ssl, host) != 1) {
        tls_reason(c, "TLS", err, errlen);
        return 0;
    }
    errno = 0;
    if (SSL_connect(c->ssl) != 1) {
        tls_reason(c, "the TLS handshake with Redis failed", err, errlen);
        return 0;
    }
    c->reader = redisReaderCreate();
    if (c->reader == NULL) {
        snprintf(err, errlen, "cannot allocate a Redis reader");
        return 0;
    }
    return 1;
}

/* One command over TLS: the reply (to free), or NULL and `err` filled. */
static redisReply *tls_command(conn_t *c, int n, const char **argv, const size_t *lens, char *err, size_t errlen)
{
    char *cmd = NULL, buf[16384];
    int len = redisFormatCommandArgv(&cmd, n, argv, lens), off = 0;
    void *reply = NULL;

    if (len < 0 || cmd == NULL) {
        snprintf(err, errlen, "cannot format a Redis command");
        return NULL;
    }
    ERR_clear_error();
    while (off < len) {
        int w;
        errno = 0;
        w = SSL_write(c->ssl, cmd + off, len - off);
        if (w <= 0) {
            redisFreeCommand(cmd);
            tls_reason(c, "writing to Redis", err, errlen);
            return NULL;
        }
        off += w;
    }
    redisFreeCommand(cmd);
    for (;;) {
        int r;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            snprintf(err, errlen, "Redis protocol error: %s", c->reader->errstr);
            return NULL;
        }
        if (reply != NULL)
            return (redisReply *)reply;
        errno = 0;
        r = SSL_read(c->ssl, buf, (int)sizeof buf);
        if (r <= 0) {
            tls_reason(c, "reading from Redis", err, errlen);
            return NULL;
        }
        if (redisReaderFeed(c->reader, buf, (size_t)r) != REDIS_OK) {
            snprintf(err, errlen, "Redis protocol error: %s", c->reader->errstr);
            return NULL;
        }
    }
}
#endif

static int l_connect(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    int port = (int)luaL_checkinteger(L, 2);
    double timeout = luaL_optnumber(L, 3, 5.0);
    struct timeval tv = to_timeval(timeout);
    conn_t *c;
    int flags, tls = 0;
    const char *files[3] = { NULL, NULL, NULL }; /* cafile, cert, key */

    if (port < 1 || port > 65535)
        return luaL_argerror(L, 2, "port out of range");
    if (!(timeout > 0 && timeout <= 86400))
        return luaL_argerror(L, 3, "seconds between 0 and 86400 expected");
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        tls = 1;
        {
            static const char *const names[3] = { "cafile", "cert", "key" };
            int i;
            for (i = 0; i < 3; i++) {
                lua_getfield(L, 4, names[i]);
                if (!lua_isnil(L, -1)) {
                    if (lua_type(L, -1) != LUA_TSTRING)
                        return luaL_argerror(L, 4, "tls: cafile, cert and key must be file names");
                    files[i] = lua_tostring(L, -1); /* stays on the stack: alive */
                }
            }
            if ((files[1] == NULL) != (files[2] == NULL))
                return luaL_argerror(L, 4, "tls: cert and key go together");
        }
#ifndef WV_REDIS_TLS
        return luaL_error(L, "this wolkvox.redis was built without TLS (OpenSSL)");
#endif
    }
    /* The userdata first: from the connect on, its __gc owns the context. */
    c = (conn_t *)lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
#ifdef WV_REDIS_TLS
    c->fd = -1;
#endif
    luaL_getmetatable(L, CONN_MT);
    lua_setmetatable(L, -2);
#ifdef WV_REDIS_TLS
    if (tls) {
        char err[320];
        int ms = (int)(timeout * 1000.0 + 0.5), ok;
        pipe_guard g;
        c->fd = tcp_connect(host, port, ms > 0 ? ms : 1, tv, err, sizeof err);
        if (c->fd < 0)
            return connect_failed(L, c, err);
        guard_pipe(&g);
        tls_files f;
        f.cafile = files[0];
        f.cert = files[1];
        f.key = files[2];
        ok = tls_start(c, host, &f, err, sizeof err);
        unguard_pipe(&g);
        if (!ok)
            return connect_failed(L, c, err);
        return 1;
    }
#else
    (void)tls;
    (void)files;
#endif
    c->ctx = redisConnectWithTimeout(host, port, tv);
    if (c->ctx == NULL)
        return connect_failed(L, c, "cannot allocate a Redis connection");
    if (c->ctx->err)
        return connect_failed(L, c, c->ctx->errstr);
    /* Replies must come within the same time as the connection. */
    if (redisSetTimeout(c->ctx, tv) != REDIS_OK)
        return connect_failed(L, c, "cannot set the Redis timeout");
    /* Programs this process starts do not inherit the connection. */
    flags = fcntl(c->ctx->fd, F_GETFD);
    if (flags < 0 || fcntl(c->ctx->fd, F_SETFD, flags | FD_CLOEXEC) < 0)
        return connect_failed(L, c, "cannot mark the Redis connection close-on-exec");
    return 1;
}

static conn_t *check_conn(lua_State *L)
{
    return (conn_t *)luaL_checkudata(L, 1, CONN_MT);
}

/* Push a reply; false for an error reply (its message at the top, too). */
static int push_reply(lua_State *L, const redisReply *r, int depth)
{
    size_t i;
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        return 1;
    case REDIS_REPLY_INTEGER:
#if WV_HAVE_INTEGERS
        lua_pushinteger(L, (lua_Integer)r->integer);
#else
        lua_pushnumber(L, (lua_Number)r->integer);
#endif
        return 1;
    case REDIS_REPLY_NIL:
        lua_pushboolean(L, 0);
        return 1;
    case REDIS_REPLY_ARRAY:
        if (depth >= MAX_DEPTH) {
            lua_pushboolean(L, 0);
            return 1;
        }
        luaL_checkstack(L, 4, "Redis reply");
        lua_createtable(L, (int)r->elements, 0);
        for (i = 0; i < r->elements; i++) {
            if (!push_reply(L, r->element[i], depth + 1)) {
                lua_pop(L, 1);
                lua_pushboolean(L, 0);
            }
            lua_rawseti(L, -2, (int)i + 1);
        }
        return 1;
    case REDIS_REPLY_ERROR:
        return 0;
    default:
        lua_pushboolean(L, 0);
        return 1;
    }
}

static int l_command(lua_State *L)
{
    conn_t *c = check_conn(L);
    int n = lua_gettop(L) - 1, i;
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    redisReply *r;
    char err[320];
    pipe_guard g;

    if (n < 1)
        return luaL_error(L, "redis: command expects at least one argument");
    if (n > MAX_ARGS)
        return luaL_error(L, "redis: at most %d arguments", MAX_ARGS);
    for (i = 0; i < n; i++) {
        int t = lua_type(L, i + 2);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            return luaL_argerror(L, i + 2, "string or number expected");
        argv[i] = lua_tolstring(L, i + 2, &lens[i]);
    }
    if (!conn_open(c) || c->broken) {
        lua_pushnil(L);
        lua_pushstring(L, !conn_open(c) ? "the Redis connection is closed" : "the Redis connection is broken");
        lua_pushliteral(L, "io");
        return 3;
    }
    if (c->pending != NULL) { /* left by a push that raised */
        freeReplyObject(c->pending);
        c->pending = NULL;
    }
    guard_pipe(&g);
#ifdef WV_REDIS_TLS
    if (c->ssl != NULL)
        r = tls_command(c, n, argv, lens, err, sizeof err);
    else
#endif
    {
        r = (redisReply *)redisCommandArgv(c->ctx, n, argv, lens);
        if (r == NULL)
            snprintf(err, sizeof err, "%s", c->ctx->errstr[0] ? c->ctx->errstr : "no reply from Redis");
    }
    unguard_pipe(&g);
    if (r == NULL) {
        c->broken = 1;
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushliteral(L, "io");
        return 3;
    }
    /* The connection owns the reply while it is pushed (a push can raise). */
    c->pending = r;
    if (r->type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        lua_pushlstring(L, r->str, r->len);
        lua_pushliteral(L, "reply");
        c->pending = NULL;
        freeReplyObject(r);
        return 3;
    }
    push_reply(L, r, 0);
    c->pending = NULL;
    freeReplyObject(r);
    return 1;
}

static int l_close(lua_State *L)
{
    conn_t *c = check_conn(L);
    conn_free(c);
    return 0;
}

static int l_broken(lua_State *L)
{
    conn_t *c = check_conn(L);
    lua_pushboolean(L, !conn_open(c) || c->broken);
    return 1;
}

static int l_tostring(lua_State *L)
{
    conn_t *c = check_conn(L);
    lua_pushstring(L, conn_open(c) ? "wolkvox.redis connection" : "wolkvox.redis connection (closed)");
    return 1;
}

static const luaL_Reg conn_methods[] = {
    { "command", l_command },
    { "close", l_close },
    { "broken", l_broken },
    { NULL, NULL },
};

static const luaL_Reg funcs[] = {
    { "connect", l_connect },
    { NULL, NULL },
};

__attribute__((visibility("default"))) int luaopen_wolkvox_redis(lua_State *L);

int luaopen_wolkvox_redis(lua_State *L)
{
    if (luaL_newmetatable(L, CONN_MT)) {
        luaL_newlib(L, conn_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    lua_pushfstring(L, "%d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    lua_setfield(L, -2, "version");
    /* TLS through OpenSSL when built with it (see the top of this file). */
#ifdef WV_REDIS_TLS
    lua_pushboolean(L, 1);
#else
    lua_pushboolean(L, 0);
#endif
    lua_setfield(L, -2, "tls");
    return 1;
}
