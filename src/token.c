/*
 * token.c: everything the core does with the token, in one place to review.
 *
 * The token lives only in the session, as the request header line
 * "wolkvox-token: <token>" (one malloc'd copy, wiped and freed on close);
 * its id (a hash) names the pacing files.  Nothing here puts it in a Lua
 * string: the masking functions below keep it out of every string that
 * leaves the library.
 *
 *
 * A hostile or careless server may echo the request's headers: the token can
 * come back plain, JSON-escaped ("\u0061bc", "\/"), or cut by the end of the
 * text we keep.  Every string the core hands to Lua that came from the
 * network goes through here first: decoded JSON strings (wv_mask_plain, as
 * escapes are already undone), error snippets and header values
 * (wv_mask_text).  Masked bytes become '*'.
 */
#include "session.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Where secret[0..m) next stands in buf[from..n), or n when nowhere
 * (m > 0, n >= m). */
static size_t find_plain(const char *buf, size_t n, size_t from, const char *secret, size_t m)
{
    size_t i = from;
    while (i + m <= n) {
        const char *hit = (const char *)memchr(buf + i, (unsigned char)secret[0], n - m + 1 - i);
        if (hit == NULL)
            break;
        i = (size_t)(hit - buf);
        if (memcmp(buf + i, secret, m) == 0)
            return i;
        i++;
    }
    return n;
}

int wv_holds_plain(const char *buf, size_t n, const char *secret, size_t m)
{
    return m > 0 && n >= m && find_plain(buf, n, 0, secret, m) < n;
}

size_t wv_mask_plain(char *buf, size_t n, const char *secret, size_t m)
{
    size_t i = 0, count = 0;
    if (m == 0 || n < m)
        return 0;
    while ((i = find_plain(buf, n, i, secret, m)) < n) {
        memset(buf + i, '*', m);
        count++;
        i += m;
    }
    return count;
}

/* How many bytes of p[0..n) spell secret[0..k) for the largest k, reading
 * each character either as itself, as "\uXXXX" or, for '/', as "\/".
 * *chars receives k. */
static size_t match_escaped(const char *p, size_t n, const char *secret, size_t m, size_t *chars)
{
    size_t i = 0, k = 0;
    while (k < m && i < n) {
        unsigned char want = (unsigned char)secret[k];
        if ((unsigned char)p[i] == want && !(want == '\\')) {
            i++;
        } else if (p[i] == '\\' && i + 1 < n && p[i + 1] == '/' && want == '/') {
            i += 2;
        } else if (p[i] == '\\' && i + 1 < n && p[i + 1] == 'u') {
            int h[4], j;
            if (i + 6 > n) {
                /* An escape cut by the end: count it as matching. */
                i = n;
                k++;
                break;
            }
            for (j = 0; j < 4; j++)
                h[j] = hexval((unsigned char)p[i + 2 + j]);
            if (h[0] < 0 || h[1] < 0 || h[2] < 0 || h[3] < 0)
                break;
            if ((unsigned)((h[0] << 12) | (h[1] << 8) | (h[2] << 4) | h[3]) != want)
                break;
            i += 6;
        } else if (want == '\\' && p[i] == '\\' && i + 1 < n && p[i + 1] == '\\') {
            i += 2;
        } else {
            break;
        }
        k++;
    }
    *chars = k;
    return i;
}

size_t wv_mask_text(char *buf, size_t n, const char *secret, size_t m)
{
    size_t i = 0, count = 0;
    if (m == 0)
        return 0;
    while (i < n) {
        size_t k, used;
        if ((unsigned char)buf[i] != (unsigned char)secret[0] && buf[i] != '\\') {
            i++;
            continue;
        }
        used = match_escaped(buf + i, n - i, secret, m, &k);
        /* The whole token, or its beginning cut by the end of the text. */
        if (k == m || (k > 0 && i + used == n)) {
            memset(buf + i, '*', used);
            count++;
            i += used;
        } else
            i++;
    }
    return count;
}

/* ---- the token's one copy ------------------------------------------------- */

int wv_token_set(wv_session *s, const char *token, size_t len)
{
    size_t head = sizeof WV_TOKEN_HEADER - 1;
    s->token_line = (char *)malloc(head + len + 1);
    if (s->token_line == NULL)
        return 0;
    memcpy(s->token_line, WV_TOKEN_HEADER, head);
    memcpy(s->token_line + head, token, len);
    s->token_line[head + len] = '\0';
    s->token_len = len;
    return 1;
}

void wv_token_wipe(wv_session *s)
{
    if (s->token_line != NULL) {
        wv_wipe(s->token_line, strlen(s->token_line));
        free(s->token_line);
        s->token_line = NULL;
    }
}

const char *wv_token(const wv_session *s)
{
    return s->token_line != NULL ? s->token_line + sizeof WV_TOKEN_HEADER - 1 : NULL;
}

int wv_token_id(const wv_session *s, char hex[33])
{
    static const char prefix[] = "wolkvox-token:";
    size_t n = sizeof prefix - 1 + s->token_len;
    unsigned char digest[32];
    char *copy = (char *)malloc(n);
    if (copy == NULL)
        return 0;
    memcpy(copy, prefix, sizeof prefix - 1);
    memcpy(copy + sizeof prefix - 1, wv_token(s), s->token_len);
    wv_sha256(copy, n, digest);
    wv_wipe(copy, n);
    free(copy);
    wv_hex(digest, 16, hex);
    return 1;
}

/* ---- strings that leave the library ---------------------------------------- */

/* The masked copies are made in a Lua-owned scratch buffer, so a memory
 * error raised by lua_pushlstring leaks nothing. */
static char *masked_copy(lua_State *L, const wv_session *s, const char *str, size_t n)
{
    wv_buf *b = wv_scratch_new(L);
    if (!wv_buf_reserve(b, n > 0 ? n : 1))
        luaL_error(L, "not enough memory");
    memcpy(b->p, str, n);
    if (wv_token(s) != NULL)
        wv_mask_text(b->p, n, wv_token(s), s->token_len);
    return b->p;
}

void wv_push_masked(lua_State *L, const wv_session *s, const char *str, size_t n)
{
    char *p = masked_copy(L, s, str, n);
    lua_pushlstring(L, p, n);
    lua_remove(L, -2); /* the scratch buffer: the collector frees it */
}

void wv_push_snippet(lua_State *L, const wv_session *s, const wv_buf *b)
{
    size_t i, keep = b->len < WV_SNIPPET_BYTES ? b->len : WV_SNIPPET_BYTES;
    /* Mask on more of the body than is kept: a token cut by the end of the
     * snippet is found whole (an escaped character takes 6 bytes). */
    size_t look = s->token_len > ((size_t)-1 - WV_SNIPPET_BYTES) / 6 ? b->len
                  : WV_SNIPPET_BYTES + 6 * s->token_len;
    char *out;
    if (look > b->len)
        look = b->len;
    out = masked_copy(L, s, b->p, look);
    for (i = 0; i < keep; i++) {
        unsigned char ch = (unsigned char)out[i];
        if (ch < 0x20 || ch >= 0x7f)
            out[i] = ' ';
    }
    lua_pushlstring(L, out, keep);
    lua_remove(L, -2);
}
