/*
 * poke.c - the senders' side of FD watches: one byte written to a
 * watcher's FIFO, through write ends kept open per process.
 *
 * Why a cache: opening the FIFO by path and closing it again costs a path
 * walk and two syscalls per poke (~3 us on a VM), and a busy sender pokes the
 * same few watchers over and over (the event loops of the worker processes it
 * talks to).  So each process keeps the write ends of the last RB_POKE_FDS
 * FIFOs it poked, keyed by path AND the segment's creation time.  Within one
 * segment a path names one registration only (its (pid, token) pair; see
 * watch.c); a segment removed and made again under the same prefix starts
 * its tokens afresh, so the same path can come back for a new FIFO: the
 * creation time tells the two apart, so a cached end is never pointed at
 * another watch - it is either the right FIFO or a dead one.
 *
 * When a cached end goes stale:
 *   - the watch closed, or its owner died: the read end is gone, the write
 *     fails with EPIPE -> close the end, forget it.  (The path was unlinked
 *     already; nothing is recreated under it.)
 *   - evicted (cache full): closed, round robin.
 *   - fork: the child inherits the ends.  A child that closes all of its
 *     descriptors (daemons do) may get one of those numbers back for a file
 *     of its own, and a blind write would put a byte into it.  Two guards:
 *     the cache is cleared in the child at fork (pthread_atfork; the ends
 *     are closed there, while the numbers are certainly still ours), and
 *     every cached end is checked with fstat (device, inode, FIFO type)
 *     before each write, which also covers a descriptor closed behind our
 *     back in this process.  A mismatch is forgotten WITHOUT close: the
 *     number belongs to someone else now.
 *
 * SIGPIPE: a write to a FIFO without a reader raises it.  CPython ignores
 * SIGPIPE, so the usual case needs no masking; otherwise the batch blocks it,
 * and consumes a SIGPIPE it caused itself before unblocking (one already
 * pending from elsewhere is left alone), so a poke never kills a sender.
 *
 * Locking: a process-wide mutex guards the cache (pokes are short and after
 * the segment lock is released); it is held across fork by the prepare
 * handler, so the child never inherits it locked.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define RB_POKE_FDS 16
#define RB_POKE_PATH (RB_NAME_MAX + 96)

typedef struct poke_end {
    int fd; /* -1 = unused */
    dev_t dev;
    ino_t ino;
    uint64_t seg_created; /* rb_header.created_ns of the segment it was opened for */
    char path[RB_POKE_PATH];
} poke_end;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static poke_end cache[RB_POKE_FDS];
static unsigned cache_next; /* round-robin eviction */

static void cache_prepare(void) { pthread_mutex_lock(&cache_lock); }
static void cache_parent(void) { pthread_mutex_unlock(&cache_lock); }

static void cache_child(void)
{
    /* The numbers are still ours here: nothing in the child ran yet. */
    for (unsigned i = 0; i < RB_POKE_FDS; i++) {
        if (cache[i].fd >= 0)
            close(cache[i].fd);
        cache[i].fd = -1;
    }
    cache_next = 0;
    pthread_mutex_init(&cache_lock, NULL);
}

static void cache_init(void)
{
    for (unsigned i = 0; i < RB_POKE_FDS; i++)
        cache[i].fd = -1;
    pthread_atfork(cache_prepare, cache_parent, cache_child);
}

/* Forget slot i; close its end only if the number is still the FIFO we opened. */
static void drop(unsigned i, int ours)
{
    if (ours)
        close(cache[i].fd);
    cache[i].fd = -1;
}

/* Is cached end i still the FIFO we opened?  (cache_lock held) */
static int still_ours(unsigned i)
{
    struct stat st;
    return fstat(cache[i].fd, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_dev == cache[i].dev &&
           st.st_ino == cache[i].ino;
}

/* Open `path` for poking and cache it; -1 if it has no reader (ENXIO), is
 * gone (ENOENT), or is not a FIFO the segment's trust rule accepts (owner
 * and mode, as rb_open checks the segment: a FIFO another user planted
 * under a watch's name gets no byte from us).  (cache_lock held) */
static int open_end(const char *path, uint64_t seg_created, const rb_trust *t)
{
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode) || !rb_trusts_uid(t, (uint32_t)st.st_uid) ||
        ((unsigned)st.st_mode & 07777 & ~t->mode) != 0) {
        close(fd); /* not a FIFO of ours: never ours to write (someone else's file) */
        return -1;
    }
    unsigned i = RB_POKE_FDS;
    for (unsigned k = 0; k < RB_POKE_FDS && i == RB_POKE_FDS; k++)
        if (cache[k].fd < 0)
            i = k; /* a free slot first */
    if (i == RB_POKE_FDS) {
        i = cache_next++ % RB_POKE_FDS; /* else round robin */
        drop(i, still_ours(i));
    }
    cache[i].fd = fd;
    cache[i].seg_created = seg_created;
    cache[i].dev = st.st_dev;
    cache[i].ino = st.st_ino;
    snprintf(cache[i].path, sizeof cache[i].path, "%s", path);
    return (int)i;
}

/* Write one byte to the FIFO at `path` of the segment made at `seg_created`;
 * returns 1 if a write hit EPIPE. */
static int poke_one(const char *path, uint64_t seg_created, const rb_trust *t)
{
    int slot = -1, epipe = 0;
    for (unsigned i = 0; i < RB_POKE_FDS && slot < 0; i++)
        if (cache[i].fd >= 0 && cache[i].seg_created == seg_created &&
            strcmp(cache[i].path, path) == 0)
            slot = (int)i;
    if (slot >= 0 && !still_ours((unsigned)slot)) {
        drop((unsigned)slot, 0);
        slot = -1;
    }
    /* A cached end that fails is dropped and the path opened afresh, once:
     * the end may be the only thing that went stale. */
    for (int attempt = 0; attempt < 2; attempt++) {
        int cached = slot >= 0;
        if (slot < 0 && (slot = open_end(path, seg_created, t)) < 0)
            return epipe; /* ENXIO: no reader; ENOENT: watch closed or swept */
        char byte = 1;
        ssize_t n = write(cache[slot].fd, &byte, 1);
        if (n >= 0 || errno == EAGAIN) /* EAGAIN: a byte is already pending */
            return epipe;
        epipe |= errno == EPIPE;
        drop((unsigned)slot, 1); /* this end is dead (its reader is gone) */
        slot = -1;
        if (!cached)
            return epipe; /* a fresh open failed too: the watch is gone */
    }
    return epipe;
}

void rb_watch_poke_all(rb_seg *s, rb_pokes *p)
{
    if (p->n == 0)
        return;
    /* BELL rows (queue.c) first: a futex wake of the row's bell word, which
     * the collector already bumped under the lock.  The row may have been
     * unregistered (even reused) since: the wake is then spurious, and
     * every bell sleeper re-checks under the lock when it wakes. */
    uint32_t fifo = 0;
    for (uint32_t i = 0; i < p->n; i++) {
        if (p->v[i].bell) {
            if (p->v[i].row < s->waiter_count)
                rb_futex_wake(&s->waiters[p->v[i].row].bell, 1);
        } else {
            fifo++;
        }
    }
    if (fifo == 0) {
        if (p->v != p->stack)
            free(p->v);
        p->v = p->stack;
        p->n = 0;
        p->cap = 8;
        return;
    }
    pthread_once(&cache_once, cache_init);
    struct sigaction old_action;
    int guard = sigaction(SIGPIPE, NULL, &old_action) != 0 || old_action.sa_handler != SIG_IGN;
    sigset_t pipe_set, old_set, pending;
    int was_pending = 0, epipe = 0;
    if (guard) {
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
        sigpending(&pending);
        was_pending = sigismember(&pending, SIGPIPE);
    }
    char path[RB_POKE_PATH];
    pthread_mutex_lock(&cache_lock);
    for (uint32_t i = 0; i < p->n; i++) {
        if (p->v[i].bell)
            continue;
        rb_watch_path(s, p->v[i].pid, p->v[i].token, path, sizeof path);
        epipe |= poke_one(path, s->hdr->created_ns, &s->trust);
    }
    pthread_mutex_unlock(&cache_lock);
    if (guard) {
        if (epipe && !was_pending) {
            struct timespec zero = {0, 0};
            while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
            }
        }
        pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    }
    if (p->v != p->stack)
        free(p->v);
    p->v = p->stack;
    p->n = 0;
    p->cap = 8;
}

int rb_poke_cached(void)
{
    pthread_once(&cache_once, cache_init);
    int n = 0;
    pthread_mutex_lock(&cache_lock);
    for (unsigned i = 0; i < RB_POKE_FDS; i++)
        n += cache[i].fd >= 0;
    pthread_mutex_unlock(&cache_lock);
    return n;
}
