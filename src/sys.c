/*
 * sys.c: the few operating-system services the Lua layer needs and Lua lacks:
 * clocks, sleeping, directories, advisory file locks and a token fingerprint.
 *
 * Locks use flock(2): the kernel drops them when their holder dies, so a
 * crashed process never keeps a pacing slot (no stale-lock cleanup needed).
 */
#define _DEFAULT_SOURCE 1 /* flock(2) */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wolkvox.h"

#define WV_LOCK_MT "wolkvox.lock"

typedef struct {
    int fd; /* -1 once released */
} wv_lock;

static double clock_seconds(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/***
 * Seconds on a clock that never goes back (for waits and deadlines).
 * @function now
 */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)clock_seconds(CLOCK_MONOTONIC));
    return 1;
}

/***
 * Seconds since the epoch, with fractions (shared between processes).
 * @function time
 */
static int l_time(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)clock_seconds(CLOCK_REALTIME));
    return 1;
}

/***
 * Sleep `seconds` (fractions allowed; at most a day).
 * @function sleep
 */
static int l_sleep(lua_State *L)
{
    double s = (double)luaL_checknumber(L, 1);
    struct timespec ts;
    if (!(s >= 0 && s <= 86400))
        return luaL_argerror(L, 1, "seconds between 0 and 86400 expected");
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return 0;
}

/***
 * Create a directory and its parents (mode 0700 for the new ones).
 * @function mkdir
 * @treturn[1] true
 * @treturn[2] nil
 * @treturn[2] string message
 */
static int l_mkdir(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    char buf[4096];
    size_t i;
    if (len == 0 || len >= sizeof buf)
        return luaL_argerror(L, 1, "path of 1 to 4095 bytes expected");
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char saved = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
                lua_pushnil(L);
                lua_pushfstring(L, "%s: %s", buf, strerror(errno));
                return 2;
            }
            buf[i] = saved;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/***
 * Take the exclusive lock of file `path` (created when missing), without
 * waiting.
 * @function lock
 * @treturn[1] lock an object with `release()`; also released by `__gc`,
 *   `__close` and the death of the process
 * @treturn[2] nil
 * @treturn[2] string "busy" when another holder has it, else the reason
 */
static int l_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    wv_lock *lk = (wv_lock *)lua_newuserdata(L, sizeof *lk);
    lk->fd = -1;
    luaL_getmetatable(L, WV_LOCK_MT);
    lua_setmetatable(L, -2);
    lk->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lk->fd < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    if (flock(lk->fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(lk->fd);
        lk->fd = -1;
        lua_pushnil(L);
        if (e == EWOULDBLOCK)
            lua_pushliteral(L, "busy");
        else
            lua_pushfstring(L, "%s: %s", path, strerror(e));
        return 2;
    }
    return 1;
}

static int lock_release(lua_State *L)
{
    wv_lock *lk = (wv_lock *)luaL_checkudata(L, 1, WV_LOCK_MT);
    if (lk->fd >= 0) {
        close(lk->fd); /* closing the descriptor drops the flock */
        lk->fd = -1;
    }
    return 0;
}

static int lock_held(lua_State *L)
{
    wv_lock *lk = (wv_lock *)luaL_checkudata(L, 1, WV_LOCK_MT);
    lua_pushboolean(L, lk->fd >= 0);
    return 1;
}

static int lock_tostring(lua_State *L)
{
    wv_lock *lk = (wv_lock *)luaL_checkudata(L, 1, WV_LOCK_MT);
    lua_pushfstring(L, "wolkvox.lock (%s): %p", lk->fd >= 0 ? "held" : "released", (void *)lk);
    return 1;
}

/***
 * SHA-256 of a string, in hex.
 * @function sha256
 */
static int l_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char digest[32];
    char hex[65];
    wv_sha256(s, len, digest);
    wv_hex(digest, 32, hex);
    lua_pushstring(L, hex);
    return 1;
}

static const luaL_Reg lock_methods[] = {
    { "release", lock_release },
    { "held", lock_held },
    { NULL, NULL }
};

static const luaL_Reg sys_functions[] = {
    { "now", l_now },
    { "time", l_time },
    { "sleep", l_sleep },
    { "mkdir", l_mkdir },
    { "lock", l_lock },
    { "sha256", l_sha256 },
    { NULL, NULL }
};

void wv_sys_open(lua_State *L)
{
    wv_newclass(L, WV_LOCK_MT, lock_methods, lock_release, lock_tostring);
    luaL_setfuncs(L, sys_functions, 0);
}
