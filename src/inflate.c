/*
 * inflate.c: a gzip answer inflated on a thread of its own, so the second
 * core inflates while this one makes the rows' lines (issue #26: inflating
 * was a third of an export's time, on the same core as the rest).
 *
 * The transfer hands the compressed bytes over as they arrive (put); the
 * thread inflates them a piece at a time into `out`; the transfer's owner
 * takes what is inflated (take) and decodes it as before.  Both buffers are
 * bounded: put refuses past IN_MAX (the transfer pauses), the thread waits
 * while `out` holds OUT_MAX.  The thread runs no Lua and touches nothing
 * but this struct, zlib and malloc; it wakes the owner's multi handle when
 * there is something to take.  wv_inflater_free stops and joins it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "wolkvox.h"

/* Compressed bytes waiting before the transfer pauses, and inflated ones
 * waiting before the thread does: a few pieces each, memory flat. */
#define IN_MAX (64u << 10)
#define OUT_MAX (256u << 10)
#define PIECE (64u << 10)

#define TRAILING "the answer has data after its gzip data ends"

struct wv_inflater {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;     /* either side: there is input, room, output or an end */
    wv_buf in;               /* compressed, not taken by the thread yet */
    wv_buf out;              /* inflated, not taken by the owner yet */
    wv_buf spare;            /* the owner's: `out` is swapped with it to take it */
    int input_done;          /* put will not be called again */
    int finished;            /* the thread is done: all inflated, or failed */
    int ended;               /* the gzip stream ended: nothing may come after it */
    int cancel;
    const char *error;       /* why it failed (static text) */
    void (*wake)(void *);
    void *wake_ud;
    z_stream z;
};

static void fail(wv_inflater *f, const char *why)
{
    if (f->error == NULL)
        f->error = why;
}

/* Inflate `n` bytes at `p` (the thread's own copy), handing the output over
 * a piece at a time.  0 when done with the stream (its end, or a failure),
 * 1 for more input. */
static int inflate_some(wv_inflater *f, unsigned char *p, size_t n, unsigned char *piece, int *ended)
{
    f->z.next_in = p;
    f->z.avail_in = (uInt)n;
    while (f->z.avail_in > 0 && !*ended) {
        size_t made;
        int r;
        f->z.next_out = piece;
        f->z.avail_out = PIECE;
        r = inflate(&f->z, Z_NO_FLUSH);
        made = PIECE - f->z.avail_out;
        if (r == Z_STREAM_END) {
            *ended = 1;
            if (f->z.avail_in > 0) {
                pthread_mutex_lock(&f->lock);
                fail(f, TRAILING);
                pthread_mutex_unlock(&f->lock);
            }
        }
        else if (r != Z_OK && !(r == Z_BUF_ERROR && made > 0)) {
            pthread_mutex_lock(&f->lock);
            fail(f, r == Z_MEM_ERROR ? "not enough memory to inflate the answer"
                                     : "the answer's gzip data is corrupt");
            pthread_mutex_unlock(&f->lock);
            return 0;
        }
        if (made > 0) {
            pthread_mutex_lock(&f->lock);
            while (f->out.len >= OUT_MAX && !f->cancel)
                pthread_cond_wait(&f->cond, &f->lock);
            if (f->cancel) {
                pthread_mutex_unlock(&f->lock);
                return 0;
            }
            if (!wv_buf_reserve(&f->out, made)) {
                fail(f, "not enough memory to inflate the answer");
                pthread_mutex_unlock(&f->lock);
                return 0;
            }
            memcpy(f->out.p + f->out.len, piece, made);
            f->out.len += made;
            pthread_cond_broadcast(&f->cond);
            pthread_mutex_unlock(&f->lock);
            f->wake(f->wake_ud);
        }
    }
    return !*ended;
}

static void *run(void *ud)
{
    wv_inflater *f = (wv_inflater *)ud;
    wv_buf mine = { NULL, 0, 0 };
    unsigned char *piece = (unsigned char *)malloc(PIECE);
    int ended = 0, more = piece != NULL;
    if (piece == NULL) {
        pthread_mutex_lock(&f->lock);
        fail(f, "not enough memory to inflate the answer");
        pthread_mutex_unlock(&f->lock);
    }
    while (more) {
        wv_buf t;
        pthread_mutex_lock(&f->lock);
        while (f->in.len == 0 && !f->input_done && !f->cancel)
            pthread_cond_wait(&f->cond, &f->lock);
        if (f->cancel || (f->in.len == 0 && f->input_done)) {
            pthread_mutex_unlock(&f->lock);
            break;
        }
        /* The waiting input is the thread's now: put fills an empty buffer. */
        t = f->in;
        f->in = mine;
        f->in.len = 0;
        mine = t;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
        f->wake(f->wake_ud); /* (room for more input: the transfer may go on) */
        more = inflate_some(f, (unsigned char *)mine.p, mine.len, piece, &ended);
    }
    pthread_mutex_lock(&f->lock);
    if (!ended && !f->cancel)
        fail(f, "the answer's gzip data ended early");
    if (ended && f->in.len > 0)
        fail(f, TRAILING);
    f->ended = ended;
    f->finished = 1;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    f->wake(f->wake_ud);
    free(piece);
    wv_buf_free(&mine);
    return NULL;
}

wv_inflater *wv_inflater_start(void (*wake)(void *), void *ud)
{
    sigset_t all, old;
    wv_inflater *f = (wv_inflater *)calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->wake = wake;
    f->wake_ud = ud;
    /* 15 + 16: a gzip stream, its header and trailer (CRC, length) checked. */
    if (inflateInit2(&f->z, 15 + 16) != Z_OK) {
        free(f);
        return NULL;
    }
    if (pthread_mutex_init(&f->lock, NULL) != 0) {
        inflateEnd(&f->z);
        free(f);
        return NULL;
    }
    if (pthread_cond_init(&f->cond, NULL) != 0) {
        pthread_mutex_destroy(&f->lock);
        inflateEnd(&f->z);
        free(f);
        return NULL;
    }
    /* Signals stay with the process's own thread (Ctrl-C reaches Lua). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&f->thread, NULL, run, f) != 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_cond_destroy(&f->cond);
        pthread_mutex_destroy(&f->lock);
        inflateEnd(&f->z);
        free(f);
        return NULL;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return f;
}

int wv_inflater_put(wv_inflater *f, const char *p, size_t n)
{
    int ok = 1;
    pthread_mutex_lock(&f->lock);
    if (f->ended && n > 0) {
        fail(f, TRAILING); /* (as libcurl says of them) */
        ok = 0;
    } else if (f->error != NULL || !wv_buf_reserve(&f->in, n)) {
        ok = 0;
    } else {
        memcpy(f->in.p + f->in.len, p, n);
        f->in.len += n;
        pthread_cond_broadcast(&f->cond);
    }
    pthread_mutex_unlock(&f->lock);
    return ok;
}

int wv_inflater_full(wv_inflater *f)
{
    int full;
    pthread_mutex_lock(&f->lock);
    full = f->in.len >= IN_MAX && !f->ended;
    pthread_mutex_unlock(&f->lock);
    return full;
}

void wv_inflater_end_input(wv_inflater *f)
{
    pthread_mutex_lock(&f->lock);
    f->input_done = 1;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

int wv_inflater_take(wv_inflater *f, int (*give)(void *, const char *, size_t), void *ud, int wait)
{
    int finished, failed;
    wv_buf t;
    pthread_mutex_lock(&f->lock);
    while (wait && f->out.len == 0 && !f->finished)
        pthread_cond_wait(&f->cond, &f->lock);
    /* What is inflated becomes the owner's (given outside the lock); the
     * thread goes on in the spare buffer, emptied by the last take. */
    t = f->out;
    f->out = f->spare;
    f->spare = t;
    finished = f->finished;
    failed = f->error != NULL;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    if (f->spare.len > 0) {
        int ok = give(ud, f->spare.p, f->spare.len);
        f->spare.len = 0;
        if (!ok)
            return -2;
    }
    if (!finished)
        return 0;
    return failed ? -1 : 1;
}

const char *wv_inflater_error(wv_inflater *f)
{
    const char *e;
    pthread_mutex_lock(&f->lock);
    e = f->error;
    pthread_mutex_unlock(&f->lock);
    return e;
}

void wv_inflater_free(wv_inflater *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->lock);
    f->cancel = 1;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    inflateEnd(&f->z);
    wv_buf_free(&f->in);
    wv_buf_free(&f->out);
    wv_buf_free(&f->spare);
    free(f);
}
