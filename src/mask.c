/*
 * mask.c: keeping the token out of every string that leaves the library.
 *
 * A hostile or careless server may echo the request's headers: the token can
 * come back plain, JSON-escaped ("\u0061bc", "\/"), or cut by the end of the
 * text we keep.  Every string the core hands to Lua that came from the
 * network goes through here first: decoded JSON strings (wv_mask_plain, as
 * escapes are already undone), error snippets and header values
 * (wv_mask_text).  Masked bytes become '*'.
 */
#include "wolkvox.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t wv_mask_plain(char *buf, size_t n, const char *secret, size_t m)
{
    size_t i = 0, count = 0;
    if (m == 0 || n < m)
        return 0;
    while (i + m <= n) {
        const char *hit = (const char *)memchr(buf + i, (unsigned char)secret[0], n - m + 1 - i);
        if (hit == NULL)
            break;
        i = (size_t)(hit - buf);
        if (memcmp(buf + i, secret, m) == 0) {
            memset(buf + i, '*', m);
            count++;
            i += m;
        } else
            i++;
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
