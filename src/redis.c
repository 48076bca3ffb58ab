/*
 * wolkvox.redis: a small binding of hiredis, the Redis project's own C
 * client, for fleet mode outside nginx (wolkvox.state.redis).  Optional: the
 * Makefile builds it only when pkg-config finds hiredis; the core never
 * needs it.
 *
 *   redis.connect(host, port, timeout) -> connection | nil, message
 *   conn:command(arg, ...)             -> reply | nil, message, "reply" | "io"
 *   conn:close(), conn:broken()
 *   redis.version, redis.tls
 *
 * Replies: a status or a bulk string as a string, an integer as a number, a
 * nil reply as false, an array as a table.  An error reply gives nil, the
 * server's message, "reply"; a broken connection nil, hiredis' message,
 * "io" (the connection is then unusable: close it and connect again).  No
 * argument is ever copied into a message: AUTH passwords pass through here.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/time.h>

#include <lua.h>
#include <lauxlib.h>
#include <hiredis/hiredis.h>

#include "compat.h"

#define CONN_MT "wolkvox.redis.conn"
#define MAX_ARGS 64
#define MAX_DEPTH 8

typedef struct {
    redisContext *ctx;
    int broken;
} conn_t;

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
    char msg[256];
    snprintf(msg, sizeof msg, "%s", why);
    if (c->ctx != NULL) {
        redisFree(c->ctx);
        c->ctx = NULL;
    }
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static int l_connect(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    int port = (int)luaL_checkinteger(L, 2);
    double timeout = luaL_optnumber(L, 3, 5.0);
    struct timeval tv = to_timeval(timeout);
    conn_t *c;
    int flags;

    if (port < 1 || port > 65535)
        return luaL_argerror(L, 2, "port out of range");
    /* The userdata first: from the connect on, its __gc owns the context. */
    c = (conn_t *)lua_newuserdata(L, sizeof *c);
    c->ctx = NULL;
    c->broken = 0;
    luaL_getmetatable(L, CONN_MT);
    lua_setmetatable(L, -2);
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
    if (c->ctx == NULL || c->broken) {
        lua_pushnil(L);
        lua_pushstring(L, c->ctx == NULL ? "the Redis connection is closed" : "the Redis connection is broken");
        lua_pushliteral(L, "io");
        return 3;
    }
    r = (redisReply *)redisCommandArgv(c->ctx, n, argv, lens);
    if (r == NULL) {
        c->broken = 1;
        lua_pushnil(L);
        lua_pushstring(L, c->ctx->errstr[0] ? c->ctx->errstr : "no reply from Redis");
        lua_pushliteral(L, "io");
        return 3;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        lua_pushlstring(L, r->str, r->len);
        lua_pushliteral(L, "reply");
        freeReplyObject(r);
        return 3;
    }
    push_reply(L, r, 0);
    freeReplyObject(r);
    return 1;
}

static int l_close(lua_State *L)
{
    conn_t *c = check_conn(L);
    if (c->ctx) {
        redisFree(c->ctx);
        c->ctx = NULL;
    }
    return 0;
}

static int l_broken(lua_State *L)
{
    conn_t *c = check_conn(L);
    lua_pushboolean(L, c->ctx == NULL || c->broken);
    return 1;
}

static int l_tostring(lua_State *L)
{
    conn_t *c = check_conn(L);
    lua_pushstring(L, c->ctx ? "wolkvox.redis connection" : "wolkvox.redis connection (closed)");
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
    /* TLS needs hiredis >= 1.0 and its hiredis_ssl library: not bound here. */
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "tls");
    return 1;
}
