/*
 * wolkvox.redis: a small binding of hiredis, the Redis project's own C
 * client, for fleet mode outside nginx (wolkvox.state.redis).  Optional: the
 * Makefile builds it only when pkg-config finds hiredis; the core never
 * needs it.
 *
 *   redis.connect(host, port, timeout [, tls]) -> connection | nil, message
 *   conn:command(arg, ...)             -> reply | nil, message, kind
 *   conn:deadline([at]), conn:close(), conn:broken()
 *   redis.clock(), redis.version, redis.tls, redis.max_reply_bytes,
 *   redis.max_reply_elements
 *
 * hiredis formats the commands (redisFormatCommandArgv) and parses the
 * replies (a redisReader); the sockets are this module's own, non-blocking,
 * so that `timeout` bounds the connection (and the TLS handshake) and then
 * each command as a whole: writing it and reading its whole reply, however
 * slowly the server drips it.  conn:deadline(at) bounds every command until
 * further notice by a time of redis.clock() (a monotonic clock): a caller's
 * budget for several commands.
 *
 * TLS (rediss://): hiredis 0.14, Debian 12's, has none, so when built with
 * OpenSSL (WV_REDIS_TLS) the connection is made with OpenSSL.  The server's
 * certificate is always verified (the system's CAs, or `tls.cafile`), and
 * its name or IP address checked against the host asked for; TLS 1.2 at
 * least.  A server that asks for a client certificate gets `tls.cert` (a PEM
 * chain) signed with `tls.key`.
 *
 * Replies: a status or a bulk string as a string, an integer as a number, a
 * nil reply as false, an array as a table.  A reply may hold at most
 * MAX_REPLY_BYTES of strings and MAX_REPLY_ELEMENTS array elements (checked
 * as it arrives, before hiredis allocates anything for a declared size).
 * Failures give nil, a message and a kind:
 *   "reply"    an error reply: the server's message (the connection is fine);
 *   "io"       the connection failed or was closed by the server;
 *   "timeout"  no whole reply within `timeout` seconds of the command's start;
 *   "protocol" a reply that is not RESP, too large, or followed by more bytes.
 * After "io", "timeout" or "protocol" the connection is closed (never read
 * again mid-reply): every later command fails at once; connect again.  No
 * argument is ever copied into a message: AUTH passwords pass through here.
 */
#define _POSIX_C_SOURCE 200809L /* sigtimedwait, getaddrinfo, clock_gettime */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef WV_REDIS_TLS
#include <arpa/inet.h>
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

/* What one reply may hold.  Fleet mode's replies are a script's id (40
 * bytes), an integer, a pair of integers, a counter or a measurement (a few
 * digits), OK, or an error message; a spec's KEYS lists a few keys.  1 MiB of
 * strings and 4096 elements leave room for all of them many times over, and
 * bound what a hostile or broken server can make this process hold: about
 * 1 MiB of unparsed input, 1 MiB of strings and 4096 reply objects. */
#define MAX_REPLY_BYTES (1024 * 1024)
#define MAX_REPLY_ELEMENTS 4096
#define READ_CHUNK 16384

#if HIREDIS_MAJOR >= 1
typedef size_t array_len;
#else
typedef int array_len;
#endif

typedef struct {
    int fd;               /* the connection (-1: closed) */
    int broken;           /* closed because a command failed on it */
    double timeout;       /* seconds for a connection, then for each command */
    double until;         /* no command past this (redis.clock()); 0: none */
    int capped;           /* the command under way ends at `until`, not at its timeout */
    redisReader *reader;  /* hiredis' parser, with the object functions below */
    const redisReplyObjectFunctions *base; /* hiredis' own */
    redisReplyObjectFunctions fns;         /* base, with the reply's caps */
    size_t bytes, elements;                /* what the reply being read holds so far */
    const char *over;     /* why the reply was refused (a cap), or NULL */
    redisReply *pending;  /* a reply being pushed: freed even if the push raises */
#ifdef WV_REDIS_TLS
    SSL_CTX *sslctx;      /* a TLS connection */
    SSL *ssl;
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
    return c->fd >= 0;
}

/* Free whatever the connection holds; it is then closed. */
static void conn_free(conn_t *c)
{
    if (c->pending != NULL) {
        freeReplyObject(c->pending);
        c->pending = NULL;
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
#endif
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->reader != NULL) {
        redisReaderFree(c->reader);
        c->reader = NULL;
    }
}

/* Fail a connect: the userdata at the top lets go of what it holds first,
 * so no message is pushed (a possible raise) while a descriptor is unowned. */
static int connect_failed(lua_State *L, conn_t *c, const char *why)
{
    char msg[320];
    snprintf(msg, sizeof msg, "%s", why);
    conn_free(c);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* ---- time and waiting ----------------------------------------------------- */

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait until `fd` is ready for `events` or `deadline` (now_mono) passes:
 * 1 ready (or in error: the next read or write says which), 0 the deadline
 * passed, -1 poll failed. */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        struct pollfd p;
        double left = deadline - now_mono();
        int rc;
        if (left <= 0)
            return 0;
        p.fd = fd;
        p.events = events;
        p.revents = 0;
        rc = poll(&p, 1, left > 86400.0 ? 86400000 : (int)(left * 1000.0) + 1);
        if (rc > 0)
            return 1;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

/* The message of a command (or handshake) that ran out of time: `what`
 * "within N s", or "by its deadline" when conn:deadline cut it shorter. */
static void late(const conn_t *c, const char *what, char *err, size_t errlen)
{
    if (c->capped)
        snprintf(err, errlen, "%s by its deadline", what);
    else
        snprintf(err, errlen, "%s within %g s", what, c->timeout);
}

/* ---- the reply's caps ------------------------------------------------------
 * hiredis calls these as it parses: an array when its header has arrived
 * (before it allocates the array's elements), a string when the whole of it
 * has.  Refusing (NULL) makes the reader fail ("Out of memory"); c->over says
 * why really.  The reader's privdata, given to every task, is the conn_t. */

static void *capped_string(const redisReadTask *task, char *str, size_t len)
{
    conn_t *c = (conn_t *)task->privdata;
    if (c == NULL || len > MAX_REPLY_BYTES - c->bytes) {
        if (c != NULL)
            c->over = "bytes";
        return NULL;
    }
    c->bytes += len;
    return c->base->createString(task, str, len);
}

static void *capped_array(const redisReadTask *task, array_len elements)
{
    conn_t *c = (conn_t *)task->privdata;
#if HIREDIS_MAJOR < 1
    if (c != NULL && elements < 0) { /* hiredis 0.14 would calloc(-n) */
        c->over = "a negative array length";
        return NULL;
    }
#endif
    if (c == NULL || (size_t)elements > MAX_REPLY_ELEMENTS - c->elements) {
        if (c != NULL)
            c->over = "elements";
        return NULL;
    }
    c->elements += (size_t)elements;
    return c->base->createArray(task, elements);
}

/* A reader whose object functions are hiredis' own, capped. */
static int make_reader(conn_t *c)
{
    c->reader = redisReaderCreate();
    if (c->reader == NULL)
        return 0;
    c->base = c->reader->fn;
    c->fns = *c->base;
    c->fns.createString = capped_string;
    c->fns.createArray = capped_array;
    c->reader->fn = &c->fns;
    c->reader->privdata = c;
    return 1;
}

/* ---- connecting ------------------------------------------------------------ */

/* A TCP connection to host:port within `deadline`, close-on-exec and
 * non-blocking; -1 and `err` filled on failure. */
static int tcp_connect(const char *host, int port, double deadline, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL, *ai;
    char service[16];
    int fd = -1, rc, one = 1;

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
            rc = wait_fd(fd, POLLOUT, deadline);
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
        /* (one write per command, then a wait for its reply) */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        break;
    }
    freeaddrinfo(res);
    return fd;
}

#ifdef WV_REDIS_TLS
/* ---- TLS ------------------------------------------------------------------ */

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

/* After an OpenSSL call on c->ssl returned `rc`: wait for what it wants
 * (1: call it again), or 0 with `*timed_out` set when the deadline passed,
 * or 0 when it failed. */
static int tls_again(conn_t *c, int rc, double deadline, int *timed_out)
{
    int w;
    switch (SSL_get_error(c->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        w = wait_fd(c->fd, POLLIN, deadline);
        break;
    case SSL_ERROR_WANT_WRITE:
        w = wait_fd(c->fd, POLLOUT, deadline);
        break;
    default:
        return 0;
    }
    if (w == 0)
        *timed_out = 1;
    return w > 0;
}

typedef struct {
    const char *cafile; /* the CAs to trust (NULL: the system's) */
    const char *cert;   /* this client's certificate chain (NULL: none) */
    const char *key;    /* its private key */
} tls_files;

/* The passphrase of an encrypted key: none.  OpenSSL's default asks for
 * one on the terminal, which a library must not do (a cron job has none;
 * a prompt would outlast every deadline): such a key is refused. */
static int no_passphrase(char *buf, int size, int rwflag, void *ud)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)ud;
    return 0;
}

/* The TLS handshake over a connected c->fd, the server checked, by `deadline`. */
static int tls_start(conn_t *c, const char *host, const tls_files *f, double deadline, char *err, size_t errlen)
{
    const char *cafile = f->cafile;
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    int rc, timed_out = 0;

    ERR_clear_error();
    c->sslctx = SSL_CTX_new(TLS_client_method());
    if (c->sslctx == NULL) {
        tls_reason(c, "TLS", err, errlen);
        return 0;
    }
    SSL_CTX_set_min_proto_version(c->sslctx, TLS1_2_VERSION);
    SSL_CTX_set_default_passwd_cb(c->sslctx, no_passphrase);
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
            tls_reason(c, "cannot read the Redis client key (a key with a passphrase is not read: "
                          "give one without)", err, errlen);
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
    for (;;) {
        errno = 0;
        rc = SSL_connect(c->ssl);
        if (rc == 1)
            return 1;
        if (!tls_again(c, rc, deadline, &timed_out))
            break;
    }
    if (timed_out) {
        ERR_clear_error();
        late(c, "the TLS handshake with Redis failed: no answer", err, errlen);
    } else
        tls_reason(c, "the TLS handshake with Redis failed", err, errlen);
    return 0;
}
#endif

/* ---- one command ------------------------------------------------------------ */

typedef enum { CMD_OK, CMD_IO, CMD_TIMEOUT, CMD_PROTOCOL } cmd_status;

/* Write `len` bytes of `p` by `deadline`. */
static cmd_status send_all(conn_t *c, const char *p, size_t len, double deadline, char *err, size_t errlen)
{
    size_t off = 0;
    while (off < len) {
        int w;
#ifdef WV_REDIS_TLS
        if (c->ssl != NULL) {
            int rc, timed_out = 0;
            size_t n = len - off > 1u << 30 ? 1u << 30 : len - off;
            ERR_clear_error();
            errno = 0;
            rc = SSL_write(c->ssl, p + off, (int)n);
            if (rc > 0) {
                off += (size_t)rc;
                continue;
            }
            if (tls_again(c, rc, deadline, &timed_out))
                continue;
            if (timed_out) {
                ERR_clear_error();
                late(c, "writing to Redis: not done", err, errlen);
                return CMD_TIMEOUT;
            }
            tls_reason(c, "writing to Redis", err, errlen);
            return CMD_IO;
        }
#endif
        {
            ssize_t n = send(c->fd, p + off, len - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno != EAGAIN && errno != EWOULDBLOCK)) {
                snprintf(err, errlen, "writing to Redis: %s", strerror(errno));
                return CMD_IO;
            }
        }
        w = wait_fd(c->fd, POLLOUT, deadline);
        if (w == 0) {
            late(c, "writing to Redis: not done", err, errlen);
            return CMD_TIMEOUT;
        }
        if (w < 0) {
            snprintf(err, errlen, "writing to Redis: %s", strerror(errno));
            return CMD_IO;
        }
    }
    return CMD_OK;
}

/* Read some bytes into `buf` by `deadline`: their count in `*got`. */
static cmd_status read_some(conn_t *c, char *buf, size_t size, size_t *got, double deadline, char *err,
    size_t errlen)
{
    for (;;) {
        int w;
#ifdef WV_REDIS_TLS
        if (c->ssl != NULL) {
            int rc, timed_out = 0;
            ERR_clear_error();
            errno = 0;
            rc = SSL_read(c->ssl, buf, (int)size);
            if (rc > 0) {
                *got = (size_t)rc;
                return CMD_OK;
            }
            if (tls_again(c, rc, deadline, &timed_out))
                continue;
            if (timed_out) {
                ERR_clear_error();
                late(c, "no whole reply from Redis", err, errlen);
                return CMD_TIMEOUT;
            }
            tls_reason(c, "reading from Redis", err, errlen);
            return CMD_IO;
        }
#endif
        {
            ssize_t n = recv(c->fd, buf, size, 0);
            if (n > 0) {
                *got = (size_t)n;
                return CMD_OK;
            }
            if (n == 0) {
                snprintf(err, errlen, "reading from Redis: the server closed the connection");
                return CMD_IO;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                snprintf(err, errlen, "reading from Redis: %s", strerror(errno));
                return CMD_IO;
            }
        }
        w = wait_fd(c->fd, POLLIN, deadline);
        if (w == 0) {
            late(c, "no whole reply from Redis", err, errlen);
            return CMD_TIMEOUT;
        }
        if (w < 0) {
            snprintf(err, errlen, "reading from Redis: %s", strerror(errno));
            return CMD_IO;
        }
    }
}

/* The reader's failure as a message. */
static cmd_status reader_failed(const conn_t *c, char *err, size_t errlen)
{
    if (c->over != NULL && strcmp(c->over, "bytes") == 0)
        snprintf(err, errlen, "the Redis reply is too large (over %d bytes)", MAX_REPLY_BYTES);
    else if (c->over != NULL && strcmp(c->over, "elements") == 0)
        snprintf(err, errlen, "the Redis reply is too large (over %d elements)", MAX_REPLY_ELEMENTS);
    else if (c->over != NULL)
        snprintf(err, errlen, "Redis protocol error: %s", c->over);
    else
        snprintf(err, errlen, "Redis protocol error: %s", c->reader->errstr);
    return CMD_PROTOCOL;
}

/* Before a command: 1 when nothing waits on the connection.  Bytes there
 * would be a reply to nothing, read as this command's; or the server closed
 * it (a restart).  Either way nothing was sent: 0, and `err` says which.
 * (TLS records that carry no data, such as TLS 1.3 session tickets, are
 * read and do not count.) */
static int idle(conn_t *c, char *err, size_t errlen)
{
    struct pollfd p;
    char b[64];

    p.fd = c->fd;
    p.events = POLLIN;
    p.revents = 0;
#ifdef WV_REDIS_TLS
    if (c->ssl != NULL) {
        int rc;
        if (SSL_pending(c->ssl) > 0) {
            snprintf(err, errlen, "Redis sent what nobody asked for");
            return 0;
        }
        if (poll(&p, 1, 0) <= 0)
            return 1;
        ERR_clear_error();
        errno = 0;
        rc = SSL_read(c->ssl, b, (int)sizeof b);
        if (rc > 0) {
            snprintf(err, errlen, "Redis sent what nobody asked for");
            return 0;
        }
        switch (SSL_get_error(c->ssl, rc)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            return 1;
        default:
            tls_reason(c, "the Redis connection was closed", err, errlen);
            return 0;
        }
    }
#endif
    if (poll(&p, 1, 0) > 0) {
        ssize_t n = recv(c->fd, b, sizeof b, MSG_PEEK);
        if (n > 0) {
            snprintf(err, errlen, "Redis sent what nobody asked for");
            return 0;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            snprintf(err, errlen, "the Redis connection was closed%s%s", n == 0 ? "" : ": ",
                n == 0 ? "" : strerror(errno));
            return 0;
        }
    }
    return 1;
}

/* One command: its whole reply in `*out` (to free), within the
 * connection's timeout from now (and by its deadline, if any), or a failure
 * and `err` filled. */
static cmd_status run_command(conn_t *c, int n, const char **argv, const size_t *lens, redisReply **out,
    char *err, size_t errlen)
{
    double deadline = now_mono() + c->timeout;
    char *cmd = NULL, buf[READ_CHUNK];
    int len = redisFormatCommandArgv(&cmd, n, argv, lens);
    cmd_status st;

    *out = NULL;
    c->capped = c->until > 0 && c->until < deadline;
    if (c->capped)
        deadline = c->until;
    if (len < 0 || cmd == NULL) {
        snprintf(err, errlen, "cannot format a Redis command");
        return CMD_IO;
    }
    if (!idle(c, err, errlen)) {
        redisFreeCommand(cmd);
        return CMD_IO;
    }
    st = send_all(c, cmd, (size_t)len, deadline, err, errlen);
    redisFreeCommand(cmd);
    if (st != CMD_OK)
        return st;
    c->bytes = c->elements = 0;
    c->over = NULL;
    for (;;) {
        void *reply = NULL;
        size_t got = 0;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK)
            return reader_failed(c, err, errlen);
        if (reply != NULL) {
            *out = (redisReply *)reply;
            if (c->reader->pos < c->reader->len) {
                snprintf(err, errlen, "Redis sent more than one reply to one command");
                return CMD_PROTOCOL;
            }
            return CMD_OK;
        }
        st = read_some(c, buf, sizeof buf, &got, deadline, err, errlen);
        if (st != CMD_OK)
            return st;
        /* What waits unparsed is bounded too: a string is parsed only when
         * all of it is there. */
        if (c->reader->len - c->reader->pos > (size_t)MAX_REPLY_BYTES + 64) {
            snprintf(err, errlen, "the Redis reply is too large (over %d bytes)", MAX_REPLY_BYTES);
            return CMD_PROTOCOL;
        }
        if (redisReaderFeed(c->reader, buf, got) != REDIS_OK)
            return reader_failed(c, err, errlen);
    }
}

static int l_connect(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    int port = (int)luaL_checkinteger(L, 2);
    double timeout = luaL_optnumber(L, 3, 5.0), deadline;
    conn_t *c;
    int tls = 0;
    char err[320];
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
    /* The userdata first: from the connect on, its __gc owns the descriptor. */
    c = (conn_t *)lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->timeout = timeout < 0.001 ? 0.001 : timeout;
    luaL_getmetatable(L, CONN_MT);
    lua_setmetatable(L, -2);
    deadline = now_mono() + c->timeout;
    if (!make_reader(c))
        return connect_failed(L, c, "cannot allocate a Redis reader");
    c->fd = tcp_connect(host, port, deadline, err, sizeof err);
    if (c->fd < 0)
        return connect_failed(L, c, err);
#ifdef WV_REDIS_TLS
    if (tls) {
        int ok;
        pipe_guard g;
        tls_files f;
        f.cafile = files[0];
        f.cert = files[1];
        f.key = files[2];
        guard_pipe(&g);
        ok = tls_start(c, host, &f, deadline, err, sizeof err);
        unguard_pipe(&g);
        if (!ok)
            return connect_failed(L, c, err);
    }
#else
    (void)tls;
    (void)files;
#endif
    return 1;
}

static conn_t *check_conn(lua_State *L)
{
    return (conn_t *)luaL_checkudata(L, 1, CONN_MT);
}

/* Push a reply: false for a nil, and for an error reply inside an array. */
static void push_reply(lua_State *L, const redisReply *r, int depth)
{
    size_t i;
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        return;
    case REDIS_REPLY_INTEGER:
#if WV_HAVE_INTEGERS
        lua_pushinteger(L, (lua_Integer)r->integer);
#else
        lua_pushnumber(L, (lua_Number)r->integer);
#endif
        return;
    case REDIS_REPLY_ARRAY:
        if (depth >= MAX_DEPTH)
            break;
        luaL_checkstack(L, 4, "Redis reply");
        lua_createtable(L, (int)r->elements, 0);
        for (i = 0; i < r->elements; i++) {
            if (r->element[i] != NULL)
                push_reply(L, r->element[i], depth + 1);
            else
                lua_pushboolean(L, 0);
            lua_rawseti(L, -2, (int)i + 1);
        }
        return;
    default: /* nil; an error inside an array (l_command takes a whole one) */
        break;
    }
    lua_pushboolean(L, 0);
}

static int l_command(lua_State *L)
{
    static const char *const kinds[] = { "ok", "io", "timeout", "protocol" };
    conn_t *c = check_conn(L);
    int n = lua_gettop(L) - 1, i;
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    redisReply *r = NULL;
    char err[320];
    pipe_guard g;
    cmd_status st;

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
    if (!conn_open(c)) {
        lua_pushnil(L);
        lua_pushstring(L, c->broken ? "the Redis connection is broken" : "the Redis connection is closed");
        lua_pushliteral(L, "io");
        return 3;
    }
    if (c->pending != NULL) { /* left by a push that raised */
        freeReplyObject(c->pending);
        c->pending = NULL;
    }
    guard_pipe(&g);
    st = run_command(c, n, argv, lens, &r, err, sizeof err);
    unguard_pipe(&g);
    if (st != CMD_OK) {
        /* Never read again: what is left of the reply may still come. */
        if (r != NULL)
            freeReplyObject(r);
        conn_free(c);
        c->broken = 1;
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushstring(L, kinds[st]);
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

/* conn:deadline(at): no command of this connection runs past `at` (a time
 * of redis.clock()), whatever its timeout leaves; conn:deadline() forgets it. */
static int l_deadline(lua_State *L)
{
    conn_t *c = check_conn(L);
    if (lua_isnoneornil(L, 2))
        c->until = 0;
    else {
        double at = luaL_checknumber(L, 2);
        if (!(at > 0 && at < 1e15))
            return luaL_argerror(L, 2, "a time of redis.clock() expected");
        c->until = at;
    }
    return 0;
}

/* redis.clock(): seconds of a monotonic clock, for conn:deadline. */
static int l_clock(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)now_mono());
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
    { "deadline", l_deadline },
    { "close", l_close },
    { "broken", l_broken },
    { NULL, NULL },
};

static const luaL_Reg funcs[] = {
    { "connect", l_connect },
    { "clock", l_clock },
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
    lua_pushinteger(L, MAX_REPLY_BYTES);
    lua_setfield(L, -2, "max_reply_bytes");
    lua_pushinteger(L, MAX_REPLY_ELEMENTS);
    lua_setfield(L, -2, "max_reply_elements");
    return 1;
}
