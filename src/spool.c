/*
 * spool.c: an answer kept on disk instead of in memory, for exports that
 * must not hold a window of rows.  The transfer writes the body into an
 * unnamed temporary file (O_TMPFILE: no name another user could plant a
 * link at, nothing left behind when the process dies) while it checks and
 * counts the rows; the result hands the file over as a `wolkvox.spool`,
 * read back in chunks and decoded with the session's token masked.
 *
 * Lua: spool:read(n) -> string, or nil at the end;  spool:rewind();
 * spool:size();  spool:decoder() -> a core.decoder that masks the token;
 * spool:write(s) (a transport without the C session fills one itself:
 * core.spool(dir, secret));  spool:close() (also __gc / __close).
 */
/* O_TMPFILE is a Linux extension. */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wolkvox.h"

#define WV_SPOOL_MT "wolkvox.spool"

typedef struct {
    int fd;
    off_t off;
    off_t size;
    char *secret;
    size_t secret_len;
    char *buf;               /* read()'s buffer, kept for the next read */
    size_t cap;
} wv_spool;

int wv_spool_create(const char *dir, int *err)
{
    int fd = -1;
#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
        *err = errno;
        return -1;
    }
#endif
    /* A file system without unnamed files: a fresh name (O_EXCL), unlinked at once. */
    {
        char path[4096];
        int n = snprintf(path, sizeof path, "%s/wolkvox-spool-XXXXXX", dir);
        if (n < 0 || (size_t)n >= sizeof path) {
            *err = ENAMETOOLONG;
            return -1;
        }
        fd = mkstemp(path);
        if (fd < 0) {
            *err = errno;
            return -1;
        }
        (void)unlink(path);
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    return fd;
}

int wv_spool_write(int fd, const char *p, size_t n, int *err)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            return 0;
        }
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

static wv_spool *check_spool(lua_State *L)
{
    wv_spool *sp = (wv_spool *)luaL_checkudata(L, 1, WV_SPOOL_MT);
    if (sp->fd < 0)
        luaL_error(L, "spool is closed");
    return sp;
}

/* Push a new, empty wv_spool (no file yet) holding a copy of the secret. */
static wv_spool *new_spool(lua_State *L, const char *secret, size_t secret_len)
{
    wv_spool *sp = (wv_spool *)lua_newuserdata(L, sizeof *sp);
    memset(sp, 0, sizeof *sp);
    sp->fd = -1;
    luaL_getmetatable(L, WV_SPOOL_MT);
    lua_setmetatable(L, -2);
    if (secret != NULL && secret_len > 0) {
        sp->secret = (char *)malloc(secret_len);
        if (sp->secret == NULL)
            luaL_error(L, "not enough memory");
        memcpy(sp->secret, secret, secret_len);
        sp->secret_len = secret_len;
    }
    return sp;
}

void wv_spool_push(lua_State *L, int *fd, const char *secret, size_t secret_len)
{
    struct stat st;
    wv_spool *sp = new_spool(L, secret, secret_len);
    /* Owned from here: __gc closes it. */
    sp->fd = *fd;
    *fd = -1;
    if (fstat(sp->fd, &st) == 0)
        sp->size = st.st_size;
}

/***
 * Read the next bytes of the answer.
 * @function spool:read
 * @tparam integer n at most this many bytes
 * @return a string, or nil at the end; or nil and what failed
 */
static int l_read(lua_State *L)
{
    wv_spool *sp = check_spool(L);
    lua_Integer n = luaL_checkinteger(L, 2);
    ssize_t got;
    luaL_argcheck(L, n > 0 && n <= (1 << 24), 2, "between 1 and 16 MiB expected");
    if (sp->off >= sp->size) {
        lua_pushnil(L);
        return 1;
    }
    if ((off_t)n > sp->size - sp->off)
        n = (lua_Integer)(sp->size - sp->off);
    if ((size_t)n > sp->cap) {
        char *p = (char *)realloc(sp->buf, (size_t)n);
        if (p == NULL)
            return luaL_error(L, "not enough memory");
        sp->buf = p;
        sp->cap = (size_t)n;
    }
    do
        got = pread(sp->fd, sp->buf, (size_t)n, sp->off);
    while (got < 0 && errno == EINTR);
    if (got <= 0) {
        const char *why = got < 0 ? strerror(errno) : "the spool file is shorter than written";
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read the spooled answer: %s", why);
        return 2;
    }
    sp->off += got;
    lua_pushlstring(L, sp->buf, (size_t)got);
    return 1;
}

/***
 * Append bytes to the answer (where the transport is not the C session's).
 * @function spool:write
 * @tparam string s
 * @return true, or nil and what failed (a full disk)
 */
static int l_write(lua_State *L)
{
    wv_spool *sp = check_spool(L);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    int err = 0;
    if (lseek(sp->fd, 0, SEEK_END) < 0 || !wv_spool_write(sp->fd, s, n, &err)) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot write the answer to the spool directory: %s", strerror(err ? err : errno));
        return 2;
    }
    sp->size += (off_t)n;
    lua_pushboolean(L, 1);
    return 1;
}

/***
 * Read from the start again.
 * @function spool:rewind
 */
static int l_rewind(lua_State *L)
{
    check_spool(L)->off = 0;
    return 0;
}

/***
 * The answer's size in bytes.
 * @function spool:size
 */
static int l_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_spool(L)->size);
    return 1;
}

/***
 * A decoder for the spooled answer: rows decoded with the session's token
 * masked, as the answer's own decode would have them.
 * @function spool:decoder
 * @tparam[opt] table opts `csv`, `ndjson` and `skip`, as for core.decoder
 */
static int l_decoder(lua_State *L)
{
    wv_spool *sp = check_spool(L);
    wv_decoder_push(L, sp->secret, sp->secret_len, 0);
    if (lua_istable(L, 2))
        wv_decoder_csv(L, lua_gettop(L), 2);
    return 1;
}

static int l_close(lua_State *L)
{
    wv_spool *sp = (wv_spool *)luaL_checkudata(L, 1, WV_SPOOL_MT);
    if (sp->fd >= 0) {
        close(sp->fd);
        sp->fd = -1;
    }
    if (sp->secret != NULL) {
        memset(sp->secret, 0, sp->secret_len);
        free(sp->secret);
        sp->secret = NULL;
    }
    free(sp->buf);
    sp->buf = NULL;
    sp->cap = 0;
    return 0;
}

static int l_tostring(lua_State *L)
{
    wv_spool *sp = (wv_spool *)luaL_checkudata(L, 1, WV_SPOOL_MT);
    if (sp->fd < 0)
        lua_pushliteral(L, "wolkvox.spool (closed)");
    else
        lua_pushfstring(L, "wolkvox.spool (%d bytes)", (int)sp->size);
    return 1;
}

/***
 * An empty spool in directory `dir` (whether answers can be spooled there,
 * or one to fill with `write`).
 * @function spool
 * @tparam string dir
 * @tparam[opt] string secret masked in what its decoder decodes
 * @return the spool (close it), or nil and what failed
 */
static int l_spool(lua_State *L)
{
    size_t slen = 0;
    const char *dir = luaL_checkstring(L, 1);
    const char *secret = luaL_optlstring(L, 2, NULL, &slen);
    int err = 0, fd;
    wv_spool *sp = new_spool(L, secret, slen);
    fd = wv_spool_create(dir, &err);
    if (fd < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot create a temporary file in %s: %s", dir, strerror(err));
        return 2;
    }
    sp->fd = fd;
    return 1;
}

static const luaL_Reg spool_methods[] = {
    { "read", l_read },
    { "rewind", l_rewind },
    { "write", l_write },
    { "size", l_size },
    { "decoder", l_decoder },
    { "close", l_close },
    { NULL, NULL }
};

void wv_spool_open(lua_State *L)
{
    wv_newclass(L, WV_SPOOL_MT, spool_methods, l_close, l_tostring);
    lua_pushcfunction(L, l_spool);
    lua_setfield(L, -2, "spool");
}
