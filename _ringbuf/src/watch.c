/*
 * watch.c - FD watches: a file descriptor an event loop polls, made readable
 * by the senders to the watched queues.
 *
 * A watch is a waiter row of kind RB_WAITER_FD plus a FIFO named after the
 * row's owner and registration token:
 *
 *     /dev/shm/rbuf.<prefix>~w~<pid>~<token>
 *
 * so any process can find it from the row alone.  The owner holds the read
 * end (non-blocking; what the loop polls) and a write end it never writes
 * (so the read end never sees EOF once a sender has come and gone).
 *
 * Protocol, like a futex wake:
 *   owner:  rb_watch_arm - under the lock: a live record in a watched queue
 *           -> return 1 (receive now, not armed); else armed = 1, return 0;
 *           then poll the fd.
 *   sender: after linking a record, under the lock: for every armed FD row
 *           watching that queue, armed = 0 and remember (pid, token); after
 *           unlocking, write one byte to the FIFO (through a write end the
 *           sender's process keeps open: poke.c).  At most one poke per arm.
 * The owner arms and checks under the same lock hold, and the sender
 * disarms under the lock after linking, so a record sent after the check
 * always finds the row armed: no wake-up is lost between check and sleep.
 *
 * The same scan serves BELL rows (a blocking receive on more than
 * RB_WAIT_MAX queues, queue.c): armed at registration, disarmed by the
 * sender, whose ring is a bump of the row's bell word under the lock and a
 * futex wake of it after unlocking instead of a FIFO byte.  A watch may
 * name any number of queues too: past RB_WAIT_MAX its list lives in cells
 * (waitlist.c) and rb_row_watches binary-searches it.
 *
 * Crash points:
 *   - owner killed after the row's pid store but before the FIFO exists (or
 *     before rb_watch_open returns): the row is a dead pid's row; the sweep
 *     (rb_sweep_waiters, rb_repair) retires it and unlinks the path (ENOENT
 *     ignored).  The row is registered BEFORE the FIFO is made, so no FIFO
 *     ever exists without a row naming it (none can be orphaned); the row
 *     is not armed until rb_watch_arm, so nobody pokes a missing FIFO.
 *   - owner killed holding a live row: same sweep; the FIFO is unlinked by
 *     whoever sweeps the row, so no file is left in /dev/shm.
 *   - sender killed between disarming (under the lock) and poking: that
 *     poke is lost; the row stays disarmed.  Owners therefore bound every
 *     sleep (RB_MAX_SLEEP_NS-like) and re-arm, as futex sleepers do.
 *   - a poke to a FIFO whose reader is gone: open fails with ENXIO (no
 *     reader) or ENOENT (unlinked): ignored.  A reader gone after the open
 *     (or while the sender kept its write end): EPIPE, the end is closed,
 *     and SIGPIPE is ignored or blocked and consumed (never kills the
 *     sender; poke.c).  A full pipe (EAGAIN) already holds an unread
 *     byte: ignored.
 *   - armed is not primary data: the repair leaves it as it is (a stale 1
 *     costs one spurious poke; a stale 0 is the lost poke above).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

void rb_watch_path(const rb_seg *s, uint32_t pid, uint64_t token, char *buf, size_t cap)
{
    snprintf(buf, cap, "/dev/shm/rbuf.%s~w~%u~%llu", s->prefix, pid, (unsigned long long)token);
}

/* ---- the owner's keep-alive write ends (process-local) ------------------- */

typedef struct keepalive {
    const rb_seg *seg;
    uint64_t token;
    int rfd, wfd;
    uint32_t pid;
    struct keepalive *next;
} keepalive;

static pthread_mutex_t ka_lock = PTHREAD_MUTEX_INITIALIZER;
static keepalive *ka_head;

static int ka_add(const rb_seg *s, uint64_t token, int rfd, int wfd)
{
    keepalive *k = malloc(sizeof *k);
    if (!k)
        return -1;
    k->seg = s;
    k->token = token;
    k->rfd = rfd;
    k->wfd = wfd;
    k->pid = rb_self_pid();
    pthread_mutex_lock(&ka_lock);
    k->next = ka_head;
    ka_head = k;
    pthread_mutex_unlock(&ka_lock);
    return 0;
}

/* Remove and return the entry of (s, token), or NULL. */
static keepalive *ka_take(const rb_seg *s, uint64_t token)
{
    pthread_mutex_lock(&ka_lock);
    keepalive **pp = &ka_head, *k;
    while ((k = *pp) != NULL && !(k->seg == s && k->token == token))
        pp = &k->next;
    if (k)
        *pp = k->next;
    pthread_mutex_unlock(&ka_lock);
    return k;
}

/* ---- senders --------------------------------------------------------------- */

void rb_watch_collect(rb_seg *s, uint32_t qid, rb_pokes *p)
{
    rb_header *h = s->hdr;
    uint32_t hi = h->waiter_hi < s->waiter_count ? h->waiter_hi : s->waiter_count;
    for (uint32_t w = 0; w < hi; w++) {
        rb_waiter *wt = &s->waiters[w];
        /* FD and BELL rows; armed first, the cheap test: a disarmed row is
         * owed a ring already, so its (maybe long) list is not looked at. */
        if (wt->pid == 0 || wt->kind == RB_WAITER_FUTEX || !wt->armed)
            continue;
        if (!rb_row_watches(s, wt, qid))
            continue;
        if (p->n == p->cap) {
            uint32_t cap = p->cap * 2;
            rb_poke *v = malloc(cap * sizeof *v);
            if (!v)
                return; /* leave the rest armed: their bounded sleep covers it */
            memcpy(v, p->v, p->n * sizeof *v);
            if (p->v != p->stack)
                free(p->v);
            p->v = v;
            p->cap = cap;
        }
        /* Disarm first: from here the poke is owed; a crash before the poke
         * loses it (see the header comment). */
        wt->armed = 0;
        p->v[p->n].pid = wt->pid;
        p->v[p->n].row = w;
        p->v[p->n].token = wt->token;
        p->v[p->n].bell = wt->kind == RB_WAITER_BELL;
        if (p->v[p->n].bell) {
            /* Rung under the lock, after the record was linked: the owner
             * snapshotted the word under the lock hold that armed the row,
             * so its sleep sees a changed word even if the futex wake
             * (after unlocking, poke.c) never comes. */
            __atomic_fetch_add(&wt->bell, 1, __ATOMIC_RELEASE);
        }
        p->n++;
    }
}

/* rb_watch_poke_all: see poke.c (the senders' cached write ends). */

/* Under the lock: a swept FD row's FIFO goes with it. */
void rb_watch_forget_row(rb_seg *s, rb_waiter *wt)
{
    if (wt->kind != RB_WAITER_FD)
        return;
    char path[RB_NAME_MAX + 96];
    rb_watch_path(s, wt->pid, wt->token, path, sizeof path);
    /* ENOENT: killed before mkfifo, or already gone.  Another user's file
     * under that name is left alone (never ours to remove). */
    rb_unlink_trusted(&s->trust, path, (uint32_t)-1);
}

/* ---- the owner ------------------------------------------------------------- */

int rb_watch_open(rb_seg *s, const char *names, size_t names_len, uint32_t count, int *out_fd,
                  uint32_t *out_row, uint64_t *out_token)
{
    if (out_fd == NULL || out_row == NULL || out_token == NULL)
        return rb_fail(RB_E_INVAL, "watch_open needs out_fd, out_row and out_token");
    /* Any number of queues (a long list goes into cells: waitlist.c). */
    int r = rb_check_count(names_len, count);
    if (r != RB_OK)
        return r;
    rb_name_ref refs_st[RB_WAIT_MAX], *refs = refs_st;
    uint32_t ids_st[RB_WAIT_MAX], *ids = ids_st;
    uint32_t row = 0;
    uint64_t token = 0;
    if (count > RB_WAIT_MAX) {
        refs = malloc((size_t)count * sizeof *refs);
        ids = malloc((size_t)count * sizeof *ids);
        if (!refs || !ids) {
            free(refs);
            free(ids);
            return rb_fail(RB_E_SYS, "out of memory for a watch on %u queues", count);
        }
    }
    r = rb_parse_names(names, names_len, count, refs);
    if (r != RB_OK)
        goto out;
    /* 1. The row first (disarmed: no sender pokes it yet).  From its pid
     * store on, a sweep of this process's death unlinks the FIFO path, so
     * the FIFO made below can never be orphaned by a SIGKILL. */
    if ((r = rb_lock(s)) != RB_OK)
        goto out;
    r = rb_resolve_queues(s, refs, count, ids);
    if (r == RB_OK)
        r = rb_waiter_register(s, ids, count, RB_WAITER_FD, 0, &row, &token);
    rb_unlock(s);
out:
    if (refs != refs_st) {
        free(refs);
        free(ids);
    }
    if (r != RB_OK)
        return r;

    /* 2. The FIFO, named after the row's (pid, token). */
    char path[RB_NAME_MAX + 96];
    rb_watch_path(s, rb_self_pid(), token, path, sizeof path);
    int rfd = -1, wfd = -1;
    /* A leftover of an earlier process with this pid and token is never
     * ours to reuse; ours (or a trusted uid's) is removed, another user's
     * stays and makes mkfifo fail with EEXIST, reported below. */
    rb_unlink_trusted(&s->trust, path, (uint32_t)-1);
    if (mkfifo(path, 0600) != 0) {
        int e = errno;
        struct stat st;
        if (e == EEXIST && lstat(path, &st) == 0)
            r = rb_fail(RB_E_TRUST, "watch FIFO %s already exists, owned by uid %u, mode %04o "
                        "(another user's file, not removed): refusing to use it. Remove it "
                        "(rm %s)", path, (unsigned)st.st_uid, (unsigned)st.st_mode & 07777, path);
        else
            r = rb_fail(RB_E_SYS, "mkfifo %s: %s", path, strerror(e));
        goto fail;
    }
    /* Read end first: a non-blocking O_WRONLY open fails with ENXIO until a
     * reader exists.  O_NOFOLLOW and the checks on the open descriptors:
     * what we poll is the FIFO we just made, ours, of the segment's mode
     * (so that the segment's other trusted users can poke it: a segment
     * shared by a group gets group-writable FIFOs), never a file someone
     * swapped in under the name. */
    rfd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (rfd >= 0)
        wfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (rfd < 0 || wfd < 0) {
        r = rb_fail(RB_E_SYS, "open %s: %s", path, strerror(errno));
        goto fail;
    }
    (void)fchmod(rfd, s->file_mode & 0666); /* the umask narrowed mkfifo's mode; failing
                                             * (not ours) is caught by the check below */
    char fix[RB_NAME_MAX + 120];
    snprintf(fix, sizeof fix, "Remove it (rm %s)", path);
    struct stat rst, wst;
    if ((r = rb_check_trust(&s->trust, rfd, path, "watch FIFO", S_IFIFO, fix)) != RB_OK)
        goto fail;
    if (fstat(rfd, &rst) != 0 || fstat(wfd, &wst) != 0 || rst.st_dev != wst.st_dev ||
        rst.st_ino != wst.st_ino) {
        r = rb_fail(RB_E_TRUST, "watch FIFO %s changed between opening its read and write "
                    "ends: refusing to use it", path);
        goto fail;
    }
    if (ka_add(s, token, rfd, wfd) != 0) {
        r = rb_fail(RB_E_SYS, "out of memory");
        goto fail;
    }
    *out_fd = rfd;
    *out_row = row;
    *out_token = token;
    return RB_OK;
fail:
    if (rfd >= 0)
        close(rfd);
    if (wfd >= 0)
        close(wfd);
    rb_unlink_trusted(&s->trust, path, (uint32_t)-1);
    if (rb_lock(s) == RB_OK) {
        rb_waiter_unregister(s, row, token);
        rb_unlock(s);
    }
    return r;
}

/* Row ids are bounded here too: a row scribbled on must not index past the
 * slot table.  Both stop at such an id (-1): the arm reports it (its repair
 * drops the row), the lock-free seq says "not a valid watch". */
static int live_fn(rb_seg *s, uint32_t id, void *now)
{
    if (RB_UNLIKELY(!rb_slot_ok(s, id)))
        return -1;
    return rb_queue_live(s, id, *(uint64_t *)now);
}

static int seq_fn(rb_seg *s, uint32_t id, void *sum)
{
    if (RB_UNLIKELY(!rb_slot_ok(s, id)))
        return -1;
    *(uint64_t *)sum += RB_LOAD_ACQUIRE(&s->slots[id].seq);
    return 0;
}

static int check_row(rb_seg *s, uint32_t row, uint64_t token)
{
    if (row >= s->waiter_count)
        return rb_fail(RB_E_INVAL, "watch row %u out of range", row);
    rb_waiter *wt = &s->waiters[row];
    if (wt->pid != rb_self_pid() || wt->token != token || wt->kind != RB_WAITER_FD)
        return rb_fail(RB_E_INVAL, "watch (row %u, token %llu) is not registered any more "
                       "(closed, swept by a repair, or opened by another process)",
                       row, (unsigned long long)token);
    return RB_OK;
}

int rb_watch_arm(rb_seg *s, uint32_t row, uint64_t token)
{
    int r = rb_lock(s);
    if (r != RB_OK)
        return r;
    if ((r = check_row(s, row, token)) != RB_OK) {
        rb_unlock(s);
        return r;
    }
    rb_waiter *wt = &s->waiters[row];
    uint64_t now = rb_now_ns();
    int ready = rb_row_each(s, wt, live_fn, &now);
    if (RB_UNLIKELY(ready < 0)) {
        /* The repair drops the row (a queue id past the table, a broken
         * list): this watch is gone, and the next arm or seq says so. */
        r = rb_corrupt(s, "watch row %u has a broken queue list (an id past the table, or a "
                          "list chain that ends early)", row);
        rb_unlock(s);
        return r;
    }
    /* Checked and armed under one lock hold: a send after this sees armed. */
    wt->armed = ready ? 0 : 1;
    rb_unlock(s);
    return ready;
}

uint64_t rb_watch_seq(rb_seg *s, uint32_t row, uint64_t token)
{
    /* No lock: this is what an event loop polls while it spins, and taking
     * the lock there would stall the very senders it waits for.  Safe
     * because the row is ours (only we, or a repair after our death,
     * change it: a racy pid/token check can only fail, never misread), and
     * its slots cannot be reclaimed while the row counts as their waiter
     * (table_gc skips queues with waiters).  The acquire loads pair with
     * the release bump of `seq` in rb_enqueue_locked: a changed sum means a
     * record was linked since the last read; the caller then takes it under
     * the lock, so a stale read costs at most one more loop iteration. */
    if (s == NULL || row >= s->waiter_count)
        return RB_SEQ_INVALID;
    rb_waiter *wt = &s->waiters[row];
    if (RB_LOAD_ACQUIRE(&wt->pid) != rb_self_pid() || wt->token != token)
        return RB_SEQ_INVALID;
    /* A long list's cells are as stable as the row: written before its
     * pid store, freed only after the pid store of 0 (by us, or by a sweep
     * after our death), so walking them here without the lock is safe. */
    uint64_t sum = 0;
    if (RB_UNLIKELY(rb_row_each(s, wt, seq_fn, &sum) < 0))
        return RB_SEQ_INVALID; /* a corrupt row: the arm (under the lock) repairs it */
    return sum & ~RB_SEQ_INVALID_BIT;
}

int rb_watch_close(rb_seg *s, uint32_t row, uint64_t token)
{
    keepalive *k = ka_take(s, token);
    /* Unlink the FIFO BEFORE retiring the row.  CRASH POINT: killed between
     * the two, the row (a dead pid's) is still there and its sweep unlinks
     * the path again (ENOENT, fine); the other order would leave a FIFO no
     * row names, which nothing would ever remove.  A sender poking in
     * between gets ENOENT, ignored.  Only the opening process unlinks: a
     * forked child closing its copy must not remove the parent's FIFO. */
    if (k != NULL && k->pid == rb_self_pid()) {
        char path[RB_NAME_MAX + 96];
        rb_watch_path(s, k->pid, token, path, sizeof path);
        rb_unlink_trusted(&s->trust, path, (uint32_t)-1);
    }
    int r = rb_lock(s);
    if (r == RB_OK) {
        /* A no-op if the row was swept (and maybe reused) meanwhile. */
        if (row < s->waiter_count && s->waiters[row].pid == rb_self_pid())
            rb_waiter_unregister(s, row, token);
        rb_unlock(s);
    }
    if (k == NULL)
        return r != RB_OK ? r : rb_fail(RB_E_INVAL, "no open watch with token %llu",
                                        (unsigned long long)token);
    close(k->rfd);
    close(k->wfd);
    free(k);
    return r;
}
