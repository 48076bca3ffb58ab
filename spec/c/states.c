/*
 * states.c: a host program for spec/states_spec.lua.  It embeds Lua the way
 * an application (or an nginx thread pool) does and checks that wolkvox.core
 * keeps no state between lua_States:
 *   1. two threads, each with its own lua_State and token, at the same time
 *      (they race for the module's once-only curl_global_init);
 *   2. two lua_States in one thread, requests interleaved, one state closed
 *      while the other goes on.
 * Usage: states CPATH URL TOKEN1 TOKEN2; prints "ok"/"not ok" lines and exits
 * non-zero on any failure.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

static const char *cpath, *url;

static const char *chunk =
    "local cpath, url, token, n = ...\n"
    "package.cpath = cpath\n"
    "local core = require 'wolkvox.core'\n"
    "local s = core.session { token = token, timeout = 10 }\n"
    "for i = 1, n do\n"
    "  local r = s:request { url = url }\n"
    "  if r.status ~= 200 or r.value.data[1].licenses ~= '25' then\n"
    "    error('request ' .. i .. ' got ' .. tostring(r.status))\n"
    "  end\n"
    "end\n"
    "return s\n";

/* Run the chunk in L with `n` requests; leaves the session on the stack. */
static int run(lua_State *L, const char *token, int n, char *err, size_t errlen)
{
    if (luaL_loadstring(L, chunk) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        return 0;
    }
    lua_pushstring(L, cpath);
    lua_pushstring(L, url);
    lua_pushstring(L, token);
    lua_pushinteger(L, n);
    if (lua_pcall(L, 4, 1, 0) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        return 0;
    }
    return 1;
}

/* One more request on the session at the top of L's stack. */
static int again(lua_State *L, char *err, size_t errlen)
{
    const char *code =
        "local s, url = ...\n"
        "local r = s:request { url = url }\n"
        "assert(r.status == 200, 'status ' .. tostring(r.status))\n";
    lua_pushvalue(L, -1);
    if (luaL_loadstring(L, code) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        return 0;
    }
    lua_insert(L, -2);
    lua_pushstring(L, url);
    if (lua_pcall(L, 2, 0, 0) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        return 0;
    }
    return 1;
}

typedef struct {
    const char *token;
    int ok;
    char err[256];
} job;

static void *worker(void *arg)
{
    job *j = (job *)arg;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    j->ok = run(L, j->token, 20, j->err, sizeof j->err);
    lua_close(L);
    return NULL;
}

int main(int argc, char **argv)
{
    lua_State *a, *b;
    char err[256];
    int failures = 0, i;
    pthread_t th[2];
    job jobs[2];

    if (argc != 5) {
        fprintf(stderr, "usage: states CPATH URL TOKEN1 TOKEN2\n");
        return 2;
    }
    cpath = argv[1];
    url = argv[2];

    /* 1. Two threads, one state each. */
    jobs[0].token = argv[3];
    jobs[1].token = argv[4];
    for (i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, worker, &jobs[i]);
    for (i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (i = 0; i < 2; i++) {
        if (jobs[i].ok) {
            printf("ok - thread %d: 20 requests in its own lua_State\n", i + 1);
        } else {
            printf("not ok - thread %d: %s\n", i + 1, jobs[i].err);
            failures++;
        }
    }

    /* 2. Two states in one thread. */
    a = luaL_newstate();
    b = luaL_newstate();
    luaL_openlibs(a);
    luaL_openlibs(b);
    if (run(a, argv[3], 2, err, sizeof err) && run(b, argv[4], 2, err, sizeof err)
        && again(a, err, sizeof err) && again(b, err, sizeof err)) {
        lua_close(a); /* collects a's session: b must not notice */
        if (again(b, err, sizeof err))
            printf("ok - two lua_States in one thread\n");
        else
            printf("not ok - second state after the first closed: %s\n", err), failures++;
    } else {
        printf("not ok - two lua_States in one thread: %s\n", err);
        failures++;
        lua_close(a);
    }
    lua_close(b);

    return failures == 0 ? 0 : 1;
}
