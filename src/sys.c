/*
 * sys.c: the few operating-system services the Lua layer needs and Lua lacks:
 * clocks, sleeping, state directories and files, advisory file locks, a
 * token fingerprint, and poll(2) for the fake server's event loop.
 *
 * Locks use flock(2): the kernel drops them when their holder dies, so a
 * crashed process never keeps a pacing slot (no stale-lock cleanup needed).
 */
#define _DEFAULT_SOURCE 1 /* flock(2) */
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <dirent.h>
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
 * Sleep `seconds` (fractions allowed; at most a day).  A signal cuts the
 * sleep short, so that Lua's own handlers (Ctrl-C in the standalone
 * interpreter) act at once; callers that need the whole time sleep again.
 * @function sleep
 * @treturn number the seconds left: 0, or more when a signal came
 */
static int l_sleep(lua_State *L)
{
    double s = (double)luaL_checknumber(L, 1);
    struct timespec ts, left = { 0, 0 };
    if (!(s >= 0 && s <= 86400))
        return luaL_argerror(L, 1, "seconds between 0 and 86400 expected");
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    if (nanosleep(&ts, &left) != 0 && errno == EINTR)
        lua_pushnumber(L, (lua_Number)left.tv_sec + (lua_Number)left.tv_nsec / 1e9);
    else
        lua_pushnumber(L, 0);
    return 1;
}

/* ---- state files and directories ---------------------------------------
 *
 * The pacer and the ledger keep small files under a state directory.  The
 * directory may sit in a place others can write to (a shared /tmp), so:
 * every file is opened with O_NOFOLLOW (a planted symbolic link is refused,
 * never followed), created 0600, written whole through a temporary file and
 * rename(2); and every directory on the way must be one that nobody else can
 * change (see dir_check).  No Lua call that can raise is made while a
 * descriptor is open, unless a userdata owns it: messages are formatted into
 * C buffers and pushed after close(2).
 */

#define WV_STATE_MAX 4096 /* the largest state file read_file reads */

/* Open flags of every state file. */
#define WV_OFLAGS (O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)

typedef char wv_msg[4096 + 256];

/* The message of a failed open(2) of `path` (errno e). */
static void open_message(wv_msg msg, const char *path, int e)
{
    if (e == ELOOP)
        snprintf(msg, sizeof(wv_msg), "%s is a symbolic link: refused (state files are never "
                 "followed through links; remove it)", path);
    else
        snprintf(msg, sizeof(wv_msg), "%s: %s", path, strerror(e));
}

/* nil, message, code ("missing", "link", or "error"). */
static int push_failure(lua_State *L, const char *msg, int e)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, e == ENOENT ? "missing" : e == ELOOP ? "link" : "error");
    return 3;
}

/* lua_pushlstring of a C buffer (light userdata, length), run protected by
 * callers that must free the buffer whatever happens. */
static int push_buffer(lua_State *L)
{
    const char *data = (const char *)lua_touserdata(L, 1);
    lua_pushlstring(L, data, (size_t)lua_tointeger(L, 2));
    return 1;
}

/* A state file must be a regular file; extra permission bits are dropped. */
static int file_check(int fd, const char *path, wv_msg msg)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        open_message(msg, path, errno);
        return 0;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(msg, sizeof(wv_msg), "%s is not a regular file: refused", path);
        return 0;
    }
    if (st.st_uid != geteuid()) {
        snprintf(msg, sizeof(wv_msg), "%s belongs to uid %ld, not to this user (uid %ld): refused",
                 path, (long)st.st_uid, (long)geteuid());
        return 0;
    }
    if ((st.st_mode & 077) != 0)
        (void)fchmod(fd, 0600);
    return 1;
}

/* Open state file `path` with `flags` (WV_OFLAGS added; created 0600 with
 * O_CREAT) and check it: the descriptor, or -1 with `msg` and *err (errno,
 * or 0 when the file itself was refused). */
static int open_state(const char *path, int flags, wv_msg msg, int *err)
{
    int fd = open(path, flags | WV_OFLAGS, 0600);
    if (fd < 0) {
        *err = errno;
        open_message(msg, path, *err);
        return -1;
    }
    if (!file_check(fd, path, msg)) {
        close(fd);
        *err = 0;
        return -1;
    }
    return fd;
}

/*
 * May the directory `st` (named `path`) be used?  Found on the way (`strict`
 * 0): it must belong to this user or root, and nobody else may write to it,
 * unless it is root's and sticky (/tmp: others cannot rename or remove what
 * is ours in it).  The state directory itself and every directory made here
 * (`strict` 1): this user's, and writable by nobody else.
 */
static int dir_check(const struct stat *st, const char *path, int strict, wv_msg msg)
{
    uid_t me = geteuid();
    if (!S_ISDIR(st->st_mode)) {
        snprintf(msg, sizeof(wv_msg), "%s is not a directory", path);
        return 0;
    }
    if (strict ? st->st_uid != me : (st->st_uid != me && st->st_uid != 0)) {
        snprintf(msg, sizeof(wv_msg), "%s belongs to uid %ld, not to this user (uid %ld): refused "
                 "as a state directory", path, (long)st->st_uid, (long)me);
        return 0;
    }
    if ((st->st_mode & 022) != 0 && (strict || st->st_uid != 0 || !(st->st_mode & S_ISVTX))) {
        snprintf(msg, sizeof(wv_msg), "%s has mode %04o: group or others may write to it, so it "
                 "is refused as a state directory (chmod go-w it, or choose another)", path,
                 (unsigned)(st->st_mode & 07777));
        return 0;
    }
    return 1;
}

/* Open the directory `name` in `dirfd` (`shown` names it in messages),
 * creating it (0700) when missing; a symbolic link is followed only when it
 * belongs to this user or root (the directory that holds it has passed
 * dir_check, so nobody else could have put it there).  Returns the
 * descriptor, or -1 with `msg` set. */
static int open_dir(int dirfd, const char *name, const char *shown, int last, wv_msg msg)
{
    struct stat st;
    int created = 0, fd;
    fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | WV_OFLAGS);
    if (fd < 0 && errno == ENOENT) {
        if (mkdirat(dirfd, name, 0700) == 0)
            created = 1;
        else if (errno != EEXIST) {
            open_message(msg, shown, errno);
            return -1;
        }
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | WV_OFLAGS);
    }
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR)) {
        int e = errno;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
            if (st.st_uid != geteuid() && st.st_uid != 0) {
                snprintf(msg, sizeof(wv_msg), "%s is a symbolic link of uid %ld: refused", shown,
                         (long)st.st_uid);
                return -1;
            }
            fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK);
        } else {
            errno = e;
        }
    }
    if (fd < 0) {
        open_message(msg, shown, errno);
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        open_message(msg, shown, errno);
        close(fd);
        return -1;
    }
    if (!dir_check(&st, shown, last || created, msg)) {
        close(fd);
        return -1;
    }
    return fd;
}

/***
 * Create a state directory and its parents (mode 0700 for the new ones),
 * checking every directory on the way: the directory itself and those made
 * here must belong to this user and be writable by nobody else; those found
 * above it must belong to this user or root and be writable by nobody else
 * (root's sticky directories, such as /tmp, excepted).  Symbolic links on the
 * way are followed only when they belong to this user or root.
 * @function mkdir
 * @treturn[1] true
 * @treturn[2] nil
 * @treturn[2] string message
 */
static int l_mkdir(lua_State *L)
{
    size_t len, i;
    const char *path = luaL_checklstring(L, 1, &len);
    char buf[4096];
    wv_msg msg;
    struct stat st;
    int dirfd, ok = 1;
    if (len == 0 || len >= sizeof buf || strlen(path) != len)
        return luaL_argerror(L, 1, "path of 1 to 4095 bytes expected");
    memcpy(buf, path, len + 1);
    dirfd = open(buf[0] == '/' ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        open_message(msg, buf[0] == '/' ? "/" : ".", errno);
        ok = 0;
    } else if (fstat(dirfd, &st) != 0 || !dir_check(&st, buf[0] == '/' ? "/" : ".", 0, msg)) {
        ok = 0;
    }
    i = 0;
    while (ok) {
        size_t start, end;
        int fd, last;
        char saved;
        while (buf[i] == '/')
            i++;
        if (buf[i] == '\0')
            break;
        start = i;
        while (buf[i] != '/' && buf[i] != '\0')
            i++;
        end = i;
        while (buf[i] == '/')
            i++;
        last = buf[i] == '\0';
        if (end - start == 1 && buf[start] == '.' && !last)
            continue;
        saved = buf[end];
        buf[end] = '\0';
        /* `shown` is the path up to here; `name` is its last component. */
        fd = open_dir(dirfd, buf + start, buf, last, msg);
        buf[end] = saved;
        close(dirfd);
        dirfd = fd;
        if (fd < 0)
            ok = 0;
    }
    if (dirfd >= 0)
        close(dirfd);
    if (!ok) {
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* write(2) all of data, through EINTR and short writes. */
static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        data += n;
        len -= (size_t)n;
    }
    return 1;
}

/***
 * Replace file `path` with `data`, atomically: readers see the old content or
 * the new, whole.  The data goes to a new temporary file beside it (O_EXCL,
 * O_NOFOLLOW, mode 0600), renamed over `path`; a symbolic link at `path` is
 * replaced, never followed.
 * @function write_file
 * @treturn[1] true
 * @treturn[2] nil
 * @treturn[2] string message
 */
static int l_write_file(lua_State *L)
{
    size_t plen, dlen;
    const char *path = luaL_checklstring(L, 1, &plen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    char tmp[4096 + 64];
    wv_msg msg;
    int fd = -1, attempt, e;
    if (plen == 0 || plen >= 4096 || strlen(path) != plen)
        return luaL_argerror(L, 1, "path of 1 to 4095 bytes expected");
    for (attempt = 0; attempt < 16 && fd < 0; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(tmp, sizeof tmp, "%s.tmp-%ld-%ld-%d", path, (long)getpid(), (long)ts.tv_nsec,
                 attempt);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | WV_OFLAGS, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        e = errno;
        open_message(msg, tmp, e);
        return push_failure(L, msg, e);
    }
    if (!write_all(fd, data, dlen)) {
        e = errno;
        close(fd);
        unlink(tmp);
        open_message(msg, tmp, e);
        return push_failure(L, msg, e);
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        open_message(msg, path, e);
        return push_failure(L, msg, e);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/***
 * The content of state file `path`, never through a symbolic link.  A file
 * larger than `max` bytes (default 4096; at most 1 GiB) is refused rather
 * than read: a state may grow (a sync's keys, a checkpoint's columns), and
 * its reader names the cap it can afford.
 * @function read_file
 * @tparam string path
 * @tparam[opt=4096] integer max
 * @treturn[1] string
 * @treturn[2] nil
 * @treturn[2] string message
 * @treturn[2] string "missing" (no such file), "link" (a symbolic link,
 *   refused) or "error"
 */
static int l_read_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, WV_STATE_MAX);
    char *data;
    wv_msg msg;
    size_t len = 0, cap;
    struct stat st;
    int e, fd;
    luaL_argcheck(L, max >= 1 && max <= ((lua_Integer)1 << 30), 2, "a cap of 1 byte to 1 GiB expected");
    fd = open_state(path, O_RDONLY, msg, &e);
    if (fd < 0)
        return push_failure(L, msg, e);
    if (fstat(fd, &st) != 0) {
        e = errno;
        close(fd);
        open_message(msg, path, e);
        return push_failure(L, msg, e);
    }
    if (st.st_size > (off_t)max) {
        close(fd);
        snprintf(msg, sizeof msg, "%s: larger than a state file may be (%lld bytes)", path,
                 (long long)max);
        return push_failure(L, msg, 0);
    }
    /* One byte more than the cap: a file that grew since fstat is seen. */
    cap = (size_t)st.st_size + 1;
    data = (char *)malloc(cap);
    if (data == NULL) {
        close(fd);
        snprintf(msg, sizeof msg, "%s: out of memory", path);
        return push_failure(L, msg, 0);
    }
    for (;;) {
        ssize_t n = read(fd, data + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            e = errno;
            close(fd);
            free(data);
            open_message(msg, path, e);
            return push_failure(L, msg, e);
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == cap) {
            close(fd);
            free(data);
            snprintf(msg, sizeof msg, "%s: changed while it was read", path);
            return push_failure(L, msg, 0);
        }
    }
    close(fd);
    /* lua_pushlstring may raise (memory): pushed protected, so `data` is
     * freed either way. */
    lua_pushlightuserdata(L, data);
    lua_pushinteger(L, (lua_Integer)len);
    {
        int rc;
        lua_pushcfunction(L, push_buffer);
        lua_insert(L, -3);
        rc = lua_pcall(L, 2, 1, 0);
        free(data);
        if (rc != 0)
            return lua_error(L);
    }
    return 1;
}

/***
 * Append `data` to state file `path` (created 0600 when missing; one
 * write(2) with O_APPEND, so writers never interleave inside it).
 * @function append_file
 * @treturn[1] integer the file's size after the write
 * @treturn[2] nil
 * @treturn[2] string message
 * @treturn[2] string "link" or "error"
 */
static int l_append_file(lua_State *L)
{
    size_t dlen;
    const char *path = luaL_checkstring(L, 1);
    const char *data = luaL_checklstring(L, 2, &dlen);
    wv_msg msg;
    struct stat st;
    int e, fd = open_state(path, O_WRONLY | O_APPEND | O_CREAT, msg, &e);
    if (fd < 0)
        return push_failure(L, msg, e);
    if (!write_all(fd, data, dlen) || fstat(fd, &st) != 0) {
        e = errno;
        close(fd);
        open_message(msg, path, e);
        return push_failure(L, msg, e);
    }
    close(fd);
    lua_pushinteger(L, (lua_Integer)st.st_size);
    return 1;
}

/***
 * The size of state file `path`, without following a symbolic link.
 * @function file_size
 * @treturn[1] integer bytes
 * @treturn[2] nil
 * @treturn[2] string message
 * @treturn[2] string "missing", "link" or "error"
 */
static int l_file_size(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    wv_msg msg;
    if (lstat(path, &st) != 0) {
        int e = errno;
        open_message(msg, path, e);
        return push_failure(L, msg, e);
    }
    if (S_ISLNK(st.st_mode)) {
        open_message(msg, path, ELOOP);
        return push_failure(L, msg, ELOOP);
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(msg, sizeof msg, "%s is not a regular file: refused", path);
        return push_failure(L, msg, 0);
    }
    lua_pushinteger(L, (lua_Integer)st.st_size);
    return 1;
}

/***
 * Cut regular file `path` back to `size` bytes (never through a symbolic
 * link; never longer): where a resumed export drops what its checkpoint
 * does not vouch for.
 * @function truncate
 * @tparam string path
 * @tparam integer size
 * @treturn[1] true
 * @treturn[2] nil
 * @treturn[2] string message
 */
static int l_truncate(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer size = luaL_checkinteger(L, 2);
    struct stat st;
    wv_msg msg;
    int fd, e;
    luaL_argcheck(L, size >= 0, 2, "a size of at least 0 expected");
    fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        e = errno;
        open_message(msg, path, e);
        return push_failure(L, msg, e);
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(msg, sizeof msg, "%s is not a regular file: refused", path);
        return push_failure(L, msg, 0);
    }
    if (st.st_uid != geteuid()) {
        close(fd);
        snprintf(msg, sizeof msg, "%s belongs to uid %ld, not to this user (uid %ld): refused", path,
                 (long)st.st_uid, (long)geteuid());
        return push_failure(L, msg, 0);
    }
    if ((lua_Integer)st.st_size < size) {
        close(fd);
        snprintf(msg, sizeof msg, "%s holds %lld bytes, fewer than %lld", path,
                 (long long)st.st_size, (long long)size);
        return push_failure(L, msg, 0);
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        e = errno;
        close(fd);
        snprintf(msg, sizeof msg, "cannot truncate %s: %s", path, strerror(e));
        return push_failure(L, msg, e);
    }
    close(fd);
    lua_pushboolean(L, 1);
    return 1;
}

/***
 * Take the exclusive lock of state file `path` (created 0600 when missing,
 * never through a symbolic link), without waiting.
 * @function lock
 * @treturn[1] lock an object with `release()`, `held()`, `read()` and
 *   `write(data)` (the file's content, read and replaced while it is held);
 *   also released by `__gc`, `__close` and the death of the process
 * @treturn[2] nil
 * @treturn[2] string "busy" when another holder has it, else the reason
 */
static int l_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    wv_msg msg;
    int e;
    wv_lock *lk = (wv_lock *)lua_newuserdata(L, sizeof *lk);
    lk->fd = -1;
    luaL_getmetatable(L, WV_LOCK_MT);
    lua_setmetatable(L, -2);
    /* From here the userdata owns the descriptor: a raise cannot leak it. */
    lk->fd = open_state(path, O_RDWR | O_CREAT, msg, &e);
    if (lk->fd < 0)
        return push_failure(L, msg, e);
    for (;;) {
        struct stat held, named;
        if (flock(lk->fd, LOCK_EX | LOCK_NB) != 0) {
            e = errno;
            close(lk->fd);
            lk->fd = -1;
            lua_pushnil(L);
            if (e == EWOULDBLOCK)
                lua_pushliteral(L, "busy");
            else
                lua_pushfstring(L, "%s: %s", path, strerror(e));
            return 2;
        }
        /* A holder that removes its lock file on release (lock:remove) may
         * have unlinked this one between our open and our flock: the lock
         * counts only while `path` still names the file we locked. */
        if (fstat(lk->fd, &held) == 0 && lstat(path, &named) == 0 && held.st_dev == named.st_dev
            && held.st_ino == named.st_ino)
            return 1;
        close(lk->fd);
        lk->fd = open_state(path, O_RDWR | O_CREAT, msg, &e);
        if (lk->fd < 0)
            return push_failure(L, msg, e);
    }
}

static wv_lock *held_lock(lua_State *L)
{
    wv_lock *lk = (wv_lock *)luaL_checkudata(L, 1, WV_LOCK_MT);
    if (lk->fd < 0)
        luaL_error(L, "the lock was released");
    return lk;
}

/* lock:read(): the locked file's content (at most 4096 bytes). */
static int lock_read(lua_State *L)
{
    wv_lock *lk = held_lock(L);
    char data[WV_STATE_MAX];
    ssize_t n;
    do {
        n = pread(lk->fd, data, sizeof data, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return luaL_error(L, "reading a lock file: %s", strerror(errno));
    lua_pushlstring(L, data, (size_t)n);
    return 1;
}

/* lock:write(data): replace the locked file's content. */
static int lock_write(lua_State *L)
{
    wv_lock *lk = held_lock(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    size_t off = 0;
    if (len > WV_STATE_MAX)
        return luaL_argerror(L, 2, "at most 4096 bytes expected");
    if (ftruncate(lk->fd, 0) != 0)
        return luaL_error(L, "writing a lock file: %s", strerror(errno));
    while (off < len) {
        ssize_t n = pwrite(lk->fd, data + off, len - off, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return luaL_error(L, "writing a lock file: %s", strerror(errno));
        off += (size_t)n;
    }
    lua_pushboolean(L, 1);
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

/* lock:remove(path): remove the lock file `path` (the one this lock holds:
 * checked by inode, so a file made since by another is left alone), then
 * release.  A run leaves no PATH.lock behind; a process that opened the
 * file before the unlink sees it is gone once it has the flock (l_lock). */
static int lock_remove(lua_State *L)
{
    wv_lock *lk = (wv_lock *)luaL_checkudata(L, 1, WV_LOCK_MT);
    const char *path = luaL_checkstring(L, 2);
    if (lk->fd >= 0) {
        struct stat held, named;
        if (fstat(lk->fd, &held) == 0 && lstat(path, &named) == 0 && held.st_dev == named.st_dev
            && held.st_ino == named.st_ino)
            (void)unlink(path);
        close(lk->fd);
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

/* ---- output files ---------------------------------------------------------
 *
 * Outputs (exports, sync files) are made under names nobody can guess, with
 * O_EXCL and O_NOFOLLOW: in a shared directory (a sticky /tmp) a file or a
 * link another user planted there is never opened, so it never receives
 * the rows nor leads the write to a file of ours.
 */

/***
 * Create the new file `path` for writing (O_EXCL, O_NOFOLLOW; mode 0666 less
 * the umask, as the shell's `>` makes it): fails when anything, a link
 * included, is there already.  The file's lock (flock(2)) is held from its
 * creation until the returned object is released: an output's temporary
 * file says so that its writer lives (see `sweep_tmp`).
 * @function create
 * @treturn[1] lock the held lock (`release()`; also released by `__gc`, and
 *   by the death of the process)
 * @treturn[2] nil
 * @treturn[2] string message
 * @treturn[2] string "exists", "missing" (no such directory) or "error"
 */
static int l_create(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    wv_msg msg;
    int e;
    wv_lock *lk = (wv_lock *)lua_newuserdata(L, sizeof *lk);
    lk->fd = -1;
    luaL_getmetatable(L, WV_LOCK_MT);
    lua_setmetatable(L, -2);
    /* From here the userdata owns the descriptor: a raise cannot leak it. */
    lk->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (lk->fd < 0) {
        e = errno;
        open_message(msg, path, e);
        lua_pushnil(L);
        lua_pushstring(L, msg);
        lua_pushstring(L, e == EEXIST ? "exists" : e == ENOENT ? "missing" : "error");
        return 3;
    }
    /* (A new file: nobody else holds it.  Where locks are not supported, a
     * sweep cannot take it either, and leaves it.) */
    (void)flock(lk->fd, LOCK_EX | LOCK_NB);
    return 1;
}

/* Whether `name` is `.BASE.tmp-` and 16 lowercase hex digits. */
static int tmp_name_of(const char *name, const char *base, size_t blen)
{
    size_t i;
    if (name[0] != '.' || strncmp(name + 1, base, blen) != 0 || strncmp(name + 1 + blen, ".tmp-", 5) != 0)
        return 0;
    name += 1 + blen + 5;
    for (i = 0; i < 16; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return 0;
    return name[16] == '\0';
}

/* Remove `name` under the open directory `dfd` when it is a stale temporary
 * output: a regular file of this user with one link, not written for
 * `age` seconds, whose lock nobody holds (its writer died: a live one
 * holds it from the file's creation to its rename, see create), and still
 * the file opened when it is unlinked.  1 when removed. */
static int sweep_one_tmp(int dfd, const char *name, double age)
{
    struct stat st, again;
    int removed = 0;
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && st.st_nlink == 1 &&
        (double)st.st_mtime <= (double)time(NULL) - age && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        fstatat(dfd, name, &again, AT_SYMLINK_NOFOLLOW) == 0 && again.st_dev == st.st_dev &&
        again.st_ino == st.st_ino)
        removed = unlinkat(dfd, name, 0) == 0;
    close(fd);
    return removed;
}

/***
 * Remove the temporary files that outputs named `base` in directory `dir`
 * left when their writers died (killed while writing: `.BASE.tmp-` and 16
 * hex digits, see `wolkvox.out.file`).  Only a regular file of this user,
 * with one link, untouched for `age` seconds and whose lock nobody holds;
 * nothing is followed.  Best effort: a directory that cannot be read is left.
 * @function sweep_tmp
 * @treturn integer how many were removed
 */
static int l_sweep_tmp(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    size_t blen;
    const char *base = luaL_checklstring(L, 2, &blen);
    double age = luaL_checknumber(L, 3);
    int n = 0, dfd;
    DIR *d;
    struct dirent *e;
    luaL_argcheck(L, blen > 0 && strchr(base, '/') == NULL && strlen(base) == blen, 2, "a file name expected");
    luaL_argcheck(L, age >= 1, 3, "at least a second expected");
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        lua_pushinteger(L, 0);
        return 1;
    }
    while ((e = readdir(d)) != NULL)
        if (tmp_name_of(e->d_name, base, blen))
            n += sweep_one_tmp(dirfd(d), e->d_name, age);
    closedir(d);
    lua_pushinteger(L, n);
    return 1;
}

/***
 * `n` random bytes from the kernel (getrandom(2)), in hex: for names
 * nobody can guess.
 * @function random_hex
 */
static int l_random_hex(lua_State *L)
{
    lua_Integer n = luaL_optinteger(L, 1, 8);
    unsigned char bytes[32];
    char hex[65];
    size_t got = 0;
    luaL_argcheck(L, n >= 1 && n <= 32, 1, "1 to 32 bytes expected");
    while (got < (size_t)n) {
        ssize_t r = getrandom(bytes + got, (size_t)n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return luaL_error(L, "getrandom: %s", strerror(errno));
        got += (size_t)r;
    }
    wv_hex(bytes, (size_t)n, hex);
    lua_pushstring(L, hex);
    return 1;
}

/***
 * What is at `path`, without following a symbolic link there (unless
 * `follow` is true).
 * @function stat
 * @tparam string path
 * @tparam[opt] boolean follow
 * @treturn[1] table `type` ("file", "directory", "link" or "other"),
 *   `size`, `uid`, `mode` (permission bits), `mine` (owned by this user)
 * @treturn[2] nil
 * @treturn[2] string message
 * @treturn[2] string "missing" or "error"
 */
static int l_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int follow = lua_toboolean(L, 2);
    struct stat st;
    wv_msg msg;
    if ((follow ? stat(path, &st) : lstat(path, &st)) != 0) {
        int e = errno;
        open_message(msg, path, e);
        lua_pushnil(L);
        lua_pushstring(L, msg);
        lua_pushstring(L, e == ENOENT || e == ENOTDIR ? "missing" : "error");
        return 3;
    }
    lua_createtable(L, 0, 5);
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory"
                   : S_ISLNK(st.st_mode) ? "link" : "other");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.st_uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    lua_setfield(L, -2, "mode");
    lua_pushboolean(L, st.st_uid == geteuid());
    lua_setfield(L, -2, "mine");
    return 1;
}

/***
 * May this process create files in directory `path` (write and search
 * permission, for its effective user)?
 * @function writable_dir
 * @treturn[1] true
 * @treturn[2] nil
 * @treturn[2] string message
 * @treturn[2] string "missing" or "error"
 */
static int l_writable_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    wv_msg msg;
    int e = 0;
    if (stat(path, &st) != 0)
        e = errno;
    else if (!S_ISDIR(st.st_mode))
        e = ENOTDIR;
    else if (faccessat(AT_FDCWD, path, W_OK | X_OK, AT_EACCESS) != 0)
        e = errno;
    if (e == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    open_message(msg, path, e);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, e == ENOENT ? "missing" : "error");
    return 3;
}

#define WV_DIGEST_HEAD 65536     /* bytes of a file's start a digest covers */
#define WV_DIGEST_TAIL 1048576   /* bytes of its end before `size` */

/* pread all of [off, off+len) into buf: 1, or 0 with errno (EIO: too short). */
static int pread_all(int fd, char *buf, size_t len, off_t off)
{
    while (len > 0) {
        ssize_t n = pread(fd, buf, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return 0;
        }
        buf += n;
        len -= (size_t)n;
        off += n;
    }
    return 1;
}

/***
 * A fingerprint of the first `size` bytes of regular file `path` (never
 * through a link): SHA-256 over the size, the first 64 KiB and the last
 * 1 MiB of them (all of them when fewer).  What a checkpoint or a sync
 * state keeps of the output it vouches for: a file replaced by another,
 * edited near where the next run writes, or shortened, no longer matches,
 * and it costs the same for a file of 1 GB as of 2 MB.
 * @function digest
 * @treturn[1] string 64 hex digits
 * @treturn[2] nil
 * @treturn[2] string message
 */
static int l_digest(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer size = luaL_checkinteger(L, 2);
    size_t head, tail, hdr;
    off_t tail_at;
    char *buf;
    wv_msg msg;
    struct stat st;
    unsigned char digest[32];
    char hex[65];
    int fd, e;
    luaL_argcheck(L, size >= 0, 2, "a size of at least 0 expected");
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        e = errno;
        open_message(msg, path, e);
        return push_failure(L, msg, e);
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (lua_Integer)st.st_size < size) {
        close(fd);
        snprintf(msg, sizeof msg, "%s is not a regular file of at least %lld bytes", path, (long long)size);
        return push_failure(L, msg, 0);
    }
    if (size <= WV_DIGEST_HEAD + WV_DIGEST_TAIL) {
        head = (size_t)size;
        tail = 0;
    } else {
        head = WV_DIGEST_HEAD;
        tail = WV_DIGEST_TAIL;
    }
    tail_at = (off_t)size - (off_t)tail;
    buf = (char *)malloc(32 + head + tail);
    if (buf == NULL) {
        close(fd);
        snprintf(msg, sizeof msg, "%s: out of memory", path);
        return push_failure(L, msg, 0);
    }
    hdr = (size_t)snprintf(buf, 32, "%lld\n", (long long)size);
    if (!pread_all(fd, buf + hdr, head, 0) || !pread_all(fd, buf + hdr + head, tail, tail_at)) {
        e = errno;
        close(fd);
        free(buf);
        open_message(msg, path, e);
        return push_failure(L, msg, e);
    }
    close(fd);
    wv_sha256(buf, hdr + head + tail, digest);
    free(buf);
    wv_hex(digest, 32, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* ---- SIGTERM, for the command line ------------------------------------------
 *
 * The standalone interpreters (lua5.4, luajit) answer SIGINT by raising
 * "interrupted!" at the next Lua instruction, so a command cleans up (its
 * temporary file removed, its sync state consistent) before it exits; SIGTERM,
 * the signal cron, systemd and kill send, ends the process at once.  The
 * command line asks for SIGTERM to take SIGINT's way.  The flag is the only
 * mutable global of the module: a signal belongs to the whole process, and it
 * is set by the handler alone (a sig_atomic_t, async-signal-safe).
 */

static volatile sig_atomic_t wv_terminated = 0;

static void on_terminate(int sig)
{
    (void)sig;
    wv_terminated = 1;
    (void)kill(getpid(), SIGINT);
}

/***
 * From now on SIGTERM interrupts as SIGINT (Ctrl-C) does in the standalone
 * interpreter, and `terminated()` says it came.  For the command line only:
 * a library never touches signals.
 * @function catch_terminate
 */
static int l_catch_terminate(lua_State *L)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_terminate;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0)
        return luaL_error(L, "sigaction: %s", strerror(errno));
    lua_pushboolean(L, 1);
    return 1;
}

/***
 * Whether SIGTERM came since `catch_terminate()`.
 * @function terminated
 */
static int l_terminated(lua_State *L)
{
    lua_pushboolean(L, wv_terminated != 0);
    return 1;
}

/* ---- poll ----------------------------------------------------------------- */

#define WV_POLL_MAX 65536 /* descriptors in one poll() call */

/* Append the descriptors of list `idx` (integers) to `fds` with `events`. */
static size_t poll_fill(lua_State *L, int idx, struct pollfd *fds, size_t n, short events)
{
    lua_Integer i, len = (lua_Integer)lua_rawlen(L, idx);
    for (i = 1; i <= len; i++) {
        int isnum;
        lua_Number fd;
        lua_rawgeti(L, idx, i);
        isnum = lua_type(L, -1) == LUA_TNUMBER;
        fd = lua_tonumber(L, -1);
        lua_pop(L, 1);
        /* Checked as a number: LuaJIT's integers are doubles too. */
        if (!isnum || !(fd >= 0 && fd <= 2147483647.0) || (lua_Number)(int)fd != fd)
            luaL_error(L, "bad descriptor at index %d (a non-negative integer expected)", (int)i);
        fds[n].fd = (int)fd;
        fds[n].events = events;
        fds[n].revents = 0;
        n++;
    }
    return n;
}

/***
 * Wait until one of the descriptors is ready, like LuaSocket's select but
 * with poll(2): no limit on descriptor numbers (select stops at 1024).
 * @function poll
 * @tparam table reads descriptors (integers) to wait to read from
 * @tparam table writes descriptors to wait to write to
 * @tparam number timeout seconds (0 to 86400)
 * @treturn table the descriptors of `reads` that are readable (or closed,
 *   or in error: a read then says what happened)
 * @treturn table the descriptors of `writes` that are writable (or in error)
 * A signal ends the wait early with two empty lists.
 */
static int l_poll(lua_State *L)
{
    size_t nr, nw, n, k;
    struct pollfd *fds;
    double s;
    int rc, ms;
    lua_Integer ri = 0, wi = 0;

    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    s = (double)luaL_checknumber(L, 3);
    if (!(s >= 0 && s <= 86400))
        return luaL_argerror(L, 3, "seconds between 0 and 86400 expected");
    nr = lua_rawlen(L, 1);
    nw = lua_rawlen(L, 2);
    if (nr > WV_POLL_MAX || nw > WV_POLL_MAX - nr)
        return luaL_error(L, "too many descriptors (at most %d)", WV_POLL_MAX);
    /* A userdata holds the array: a raise below frees it with the rest. */
    fds = (struct pollfd *)lua_newuserdata(L, (nr + nw + 1) * sizeof *fds);
    n = poll_fill(L, 1, fds, 0, POLLIN);
    n = poll_fill(L, 2, fds, n, POLLOUT);
    ms = (int)(s * 1000.0 + 0.999);
    rc = poll(fds, (nfds_t)n, ms);
    if (rc < 0 && errno != EINTR)
        return luaL_error(L, "poll: %s", strerror(errno));
    lua_createtable(L, rc > 0 ? rc : 0, 0);
    lua_createtable(L, 0, 0);
    for (k = 0; rc > 0 && k < n; k++) {
        if (fds[k].revents == 0)
            continue;
        if (k < nr) {
            lua_pushinteger(L, fds[k].fd);
            lua_rawseti(L, -3, ++ri);
        } else {
            lua_pushinteger(L, fds[k].fd);
            lua_rawseti(L, -2, ++wi);
        }
    }
    return 2;
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
    { "remove", lock_remove },
    { "held", lock_held },
    { "read", lock_read },
    { "write", lock_write },
    { NULL, NULL }
};

static const luaL_Reg sys_functions[] = {
    { "now", l_now },
    { "time", l_time },
    { "sleep", l_sleep },
    { "mkdir", l_mkdir },
    { "lock", l_lock },
    { "write_file", l_write_file },
    { "read_file", l_read_file },
    { "append_file", l_append_file },
    { "file_size", l_file_size },
    { "truncate", l_truncate },
    { "create", l_create },
    { "sweep_tmp", l_sweep_tmp },
    { "random_hex", l_random_hex },
    { "stat", l_stat },
    { "writable_dir", l_writable_dir },
    { "digest", l_digest },
    { "catch_terminate", l_catch_terminate },
    { "terminated", l_terminated },
    { "sha256", l_sha256 },
    { "poll", l_poll },
    { NULL, NULL }
};

void wv_sys_open(lua_State *L)
{
    wv_newclass(L, WV_LOCK_MT, lock_methods, lock_release, lock_tostring);
    luaL_setfuncs(L, sys_functions, 0);
}
