/*
 * recover.c - crash repair, invariant checking, dead-waiter sweeps, flush.
 *
 * rb_repair() runs when a locker gets EOWNERDEAD: some process died inside a
 * critical section, at any instruction.  It keeps the PRIMARY data (see
 * internal.h) and rebuilds everything DERIVED from it:
 *
 *   1. used slots are validated (name length, hash, member -> set);
 *   2. every queue's record chain is walked from head, each cell marked;
 *      a record that is not well formed (out of range, cell seen twice,
 *      wrong number of cells for its length, impossible length) is dropped
 *      and counted, and the walk goes on with its successor if that link
 *      can be trusted (else the chain is cut there) - which only real
 *      memory corruption can cause, since every link is a release store
 *      made after the record was complete;
 *   3. count and tail come from the walk; the cell free list is every
 *      unmarked cell below the (lowered) bump mark;
 *   4. member lists and counts come from the member rows' set_id; a set
 *      with no member is retired;
 *   5. the slot free list and the hash index are rebuilt;
 *   6. queue.waiters is recounted from live waiter rows (dead pids swept);
 *      the long queue lists of kept rows are validated and their cells
 *      marked BEFORE the free list is rebuilt (so done between 2 and 3).
 *
 * The repair is idempotent: if the repairer dies too, the mutex stays
 * inconsistent and the next locker simply runs it again.
 *
 * rb_check() walks the same structures read-only and reports the first
 * broken invariant; the kill-loop tests call it after every kill.
 * rb_recover() repairs whatever rb_check would report.
 *
 * The same rebuild serves corruption found outside a crash (rb_corrupt: an
 * index, link or count read from the segment that is out of range, see
 * internal.h): the finder runs it under the lock, then retries or fails
 * with RB_E_CORRUPT, and rb_unlock logs the finding once.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* ---- process identity ----------------------------------------------------- */

/* Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or 0. */
static uint64_t read_start_time(uint32_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The command name (field 2) may hold spaces and parentheses: count
     * fields from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p + 1, ' ');
    }
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

static uint32_t cached_pid;
static uint64_t cached_start;

uint32_t rb_self_pid(void) { return (uint32_t)getpid(); }

uint64_t rb_self_start_time(void)
{
    /* Re-read after a fork: the child has another pid and start time. */
    uint32_t pid = rb_self_pid();
    if (__atomic_load_n(&cached_pid, __ATOMIC_ACQUIRE) != pid) {
        cached_start = read_start_time(pid);
        __atomic_store_n(&cached_pid, pid, __ATOMIC_RELEASE);
    }
    return cached_start;
}

bool rb_pid_alive(uint32_t pid, uint64_t start_time)
{
    if (pid == 0)
        return false;
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        return false;
    /* The pid exists; is it still the same process (pid reuse)? */
    if (start_time != 0) {
        uint64_t now_start = read_start_time(pid);
        if (now_start != 0 && now_start != start_time)
            return false;
    }
    return true;
}

static int uncount(rb_seg *s, uint32_t id, void *scanned)
{
    if (id < s->slot_count && s->slots[id].waiters)
        s->slots[id].waiters--;
    if (*(const int *)scanned && id < s->slot_count && s->slots[id].fd_watchers)
        s->slots[id].fd_watchers--;
    return 0;
}

static void drop_waiter_row(rb_seg *s, rb_waiter *wt)
{
    int scanned = wt->kind != RB_WAITER_FUTEX;
    rb_row_each(s, wt, uncount, &scanned);
    /* A dead FD watcher's FIFO goes before its row: killed in between, the
     * next sweep finds the row again and the unlink is repeated (ENOENT). */
    rb_watch_forget_row(s, wt);
    /* COMMIT: the row is free.  A long list's cells are unreachable from
     * here; killed before they are pushed back below, the repair frees them. */
    RB_STORE_RELEASE(&wt->pid, 0u);
    s->hdr->waiters_used--;
    if (wt->n > RB_WAIT_MAX)
        rb_list_free(s, wt->list, wt->n);
}

/* Under the lock: retire waiter rows of dead processes. */
uint32_t rb_sweep_waiters(rb_seg *s)
{
    uint32_t swept = 0;
    for (uint32_t w = 0; w < s->waiter_count; w++) {
        rb_waiter *wt = &s->waiters[w];
        if (wt->pid != 0 && !rb_pid_alive(wt->pid, wt->start_time)) {
            drop_waiter_row(s, wt);
            swept++;
        }
    }
    return swept;
}

/* ---- corruption found outside a crash repair ------------------------------- */

static rb_log_fn log_hook;

void rb_set_log_hook(rb_log_fn fn) { __atomic_store_n(&log_hook, fn, __ATOMIC_RELEASE); }

void rb_log_note(const char *msg)
{
    rb_log_fn fn = __atomic_load_n(&log_hook, __ATOMIC_ACQUIRE);
    if (fn)
        fn(msg);
    else
        fprintf(stderr, "ringbuf: %s\n", msg);
}

int rb_corrupt(rb_seg *s, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    /* The first finding of a lock hold is the one logged (a repair fixes
     * what the others would say). */
    if (!s->damage) {
        if (s->checking) /* rb_check reports it as its own finding */
            snprintf(s->note, sizeof s->note, "%s", what);
        else
            snprintf(s->note, sizeof s->note, "segment %s is corrupt: %s; repaired", s->prefix,
                     what);
        s->damage = 1;
    }
    if (!s->repairing && !s->checking) {
        /* The rebuild an EOWNERDEAD locker runs: primary data kept, derived
         * data rebuilt, broken records dropped.  Never nested: a finding
         * inside the repair itself (its index rebuild) is only noted. */
        s->repairing = 1;
        rb_repair(s);
        s->repairing = 0;
        s->hdr->corruptions++;
    }
    return rb_fail(RB_E_CORRUPT, "segment %s is corrupt: %s", s->prefix, what);
}

/* ---- walking queues (shared by repair and check) -------------------------- */

#define BIT_GET(b, i) ((b)[(i) >> 3] & (1u << ((i)&7)))
#define BIT_SET(b, i) ((b)[(i) >> 3] |= (unsigned char)(1u << ((i)&7)))

/* Validate one record starting at cell `c`: returns its cell count, or 0 if
 * it is malformed.  Marks its cells in `mark` only when it is well formed. */
static uint32_t walk_record(rb_seg *s, uint32_t c, unsigned char *mark, char *why, size_t cap)
{
    rb_header *h = s->hdr;
    if (c >= h->cell_bump) {
        snprintf(why, cap, "record cell %u beyond bump %u", c, h->cell_bump);
        return 0;
    }
    uint32_t len = rb_rec_at(s, c)->len;
    if (len > s->max_record) {
        snprintf(why, cap, "record at cell %u has length %u > max_record", c, len);
        return 0;
    }
    uint32_t need = rb_cells_needed(len), n = 0;
    for (uint32_t k = c; k != RB_NIL; k = s->cells[k].next) {
        if (k >= h->cell_bump || BIT_GET(mark, k) || n >= need) {
            snprintf(why, cap, "record at cell %u: bad chain at cell %u (cell %u of %u)", c, k, n,
                     need);
            return 0;
        }
        n++;
    }
    if (n != need) {
        snprintf(why, cap, "record at cell %u has %u cells, its length needs %u", c, n, need);
        return 0;
    }
    for (uint32_t k = c; k != RB_NIL; k = s->cells[k].next)
        BIT_SET(mark, k);
    return n;
}

/* Walk queue q.  repair: drop malformed records and fix count/tail.
 * check: report the first mismatch.  Returns cells used, or -1 (check failed).
 *
 * A malformed record (out of range, a cell seen twice, the wrong number of
 * cells for its length, an impossible length) can only come from memory
 * corruption, since every link is a release store made after the record was
 * complete.  The repair drops it and goes on with its successor when that
 * link can be trusted (in range, not seen before): one poisoned record does
 * not take the queue's other records with it.  Otherwise the chain is cut
 * before it.  Each dropped record is counted (header.dropped); its cells are
 * free unless another record owns them.  The walk is bounded by the cells
 * (every record has a first cell of its own), so a cycle cannot loop. */
static int64_t walk_queue(rb_seg *s, uint32_t qid, unsigned char *mark, unsigned char *seen,
                          int repair, char *why, size_t cap)
{
    rb_header *h = s->hdr;
    rb_slot *q = &s->slots[qid];
    uint32_t prev = RB_NIL, count = 0, steps = 0;
    int64_t cells = 0;
    for (uint32_t r = q->head; r != RB_NIL;) {
        uint32_t n = steps++ <= h->cell_bump ? walk_record(s, r, mark, why, cap) : 0;
        if (n == 0) {
            if (!repair)
                return -1;
            if (r < h->cell_bump && !BIT_GET(mark, r) && (!seen || !BIT_GET(seen, r)))
                h->dropped++;
            /* The successor of a dropped record is trusted only if it is in
             * range and was not visited yet (`seen`: every first cell this
             * repair walked, dropped ones included, so a cycle through
             * dropped records ends at once). */
            uint32_t next = r < h->cell_bump && !BIT_GET(mark, r) && steps <= h->cell_bump &&
                                    (!seen || !BIT_GET(seen, r))
                                ? rb_rec_at(s, r)->next
                                : RB_NIL;
            if (seen && r < h->cell_bump)
                BIT_SET(seen, r);
            if (next != RB_NIL &&
                (next >= h->cell_bump || BIT_GET(mark, next) || (seen && BIT_GET(seen, next))))
                next = RB_NIL;
            /* A first cell is never another record's: keep it out of the
             * free list only if some record owns it (marked). */
            if (prev == RB_NIL)
                q->head = next;
            else
                rb_rec_at(s, prev)->next = next;
            r = next;
            continue;
        }
        cells += n;
        count++;
        prev = r;
        if (seen)
            BIT_SET(seen, r);
        r = rb_rec_at(s, r)->next;
    }
    if (repair) {
        q->count = count;
        q->tail = prev;
        q->expiry_hint = count ? 1 : 0;
    } else if (q->count != count || q->tail != prev) {
        snprintf(why, cap, "queue %.*s: count %u tail %u, walk found %u records tail %u",
                 (int)(q->name_len > 60 ? 60 : q->name_len), q->name, q->count, q->tail, count,
                 prev);
        return -1;
    }
    return cells;
}

static bool slot_valid(rb_seg *s, uint32_t id)
{
    rb_slot *sl = &s->slots[id];
    if (sl->state > RB_SLOT_MEMBER || sl->name_len == 0 || sl->name_len > RB_NAME_MAX)
        return false;
    uint32_t set_id = sl->state == RB_SLOT_MEMBER ? sl->set_id : 0;
    if (sl->hash != rb_hash(sl->state, set_id, sl->name, sl->name_len))
        return false;
    if (sl->state == RB_SLOT_MEMBER &&
        (sl->set_id >= s->hdr->slot_bump || s->slots[sl->set_id].state != RB_SLOT_SET))
        return false;
    return true;
}

static int count_again(rb_seg *s, uint32_t id, void *scanned)
{
    s->slots[id].waiters++;
    if (*(const int *)scanned)
        s->slots[id].fd_watchers++;
    return 0;
}

void rb_repair(rb_seg *s)
{
    rb_header *h = s->hdr;
    char why[256];
    if (h->slot_bump > s->slot_count)
        h->slot_bump = s->slot_count;
    if (h->cell_bump > s->cell_count)
        h->cell_bump = s->cell_count;

    /* 1. slots: sets before members (members check their set). */
    for (uint32_t i = 0; i < h->slot_bump; i++)
        if (s->slots[i].state == RB_SLOT_SET || s->slots[i].state == RB_SLOT_QUEUE ||
            s->slots[i].state > RB_SLOT_MEMBER)
            if (!slot_valid(s, i))
                s->slots[i].state = RB_SLOT_FREE;
    for (uint32_t i = 0; i < h->slot_bump; i++)
        if (s->slots[i].state == RB_SLOT_MEMBER && !slot_valid(s, i))
            s->slots[i].state = RB_SLOT_FREE;

    /* 2-3. records and cells. */
    unsigned char *mark = calloc((h->cell_bump + 7) / 8 + 1, 1);
    unsigned char *seen = calloc((h->cell_bump + 7) / 8 + 1, 1); /* optional */
    uint32_t high = 0;
    for (uint32_t i = 0; i < h->slot_bump; i++) {
        if (s->slots[i].state != RB_SLOT_QUEUE)
            continue;
        if (!mark) { /* no scratch memory: keep the queues, leak nothing new */
            continue;
        }
        walk_queue(s, i, mark, seen, 1, why, sizeof why);
    }

    /* 6 (before the free list, which must not take the cells of a kept
     * row's long list; and before 5, so queue.waiters is right when the
     * index is rebuilt).  Records were marked first: a list that overlaps
     * one (only corruption makes that) loses its row, never the messages. */
    for (uint32_t i = 0; i < h->slot_bump; i++)
        s->slots[i].waiters = s->slots[i].fd_watchers = 0;
    h->waiters_used = 0;
    h->waiter_hi = 0;
    for (uint32_t w = 0; w < s->waiter_count; w++) {
        rb_waiter *wt = &s->waiters[w];
        if (wt->pid == 0)
            continue;
        bool alive = rb_pid_alive(wt->pid, wt->start_time);
        bool ok = wt->kind <= RB_WAITER_KIND_MAX && alive;
        if (ok && wt->n > RB_WAIT_MAX) {
            /* Checked and marked in one step; without scratch memory the
             * check still runs and the free list is not rebuilt below. */
            ok = rb_list_walk(s, wt, mark, why, sizeof why) > 0;
        } else {
            for (uint32_t k = 0; ok && k < wt->n; k++)
                ok = wt->slot[k] < h->slot_bump && s->slots[wt->slot[k]].state == RB_SLOT_QUEUE;
        }
        if (!ok) {
            /* A dead FD watcher's FIFO is unlinked with its row.  A live
             * owner's row dropped for a bad slot keeps its FIFO: the owner
             * unlinks it in rb_watch_close (and its arm reports the row gone).
             * Its long list, unmarked, is freed with every other unmarked cell. */
            if (!alive)
                rb_watch_forget_row(s, wt);
            wt->pid = 0;
            continue;
        }
        int scanned = wt->kind != RB_WAITER_FUTEX;
        rb_row_each(s, wt, count_again, &scanned);
        h->waiters_used++;
        h->waiter_hi = w + 1;
        if (wt->kind == RB_WAITER_BELL) {
            /* The dead process may have linked a record and died before
             * ringing this row (rb_watch_collect runs after the link, in the
             * same lock hold).  A bell sleeper re-looks only when its bell
             * moved (queue.c), so ring every bell: a spurious look at worst. */
            wt->armed = 0;
            __atomic_fetch_add(&wt->bell, 1, __ATOMIC_RELEASE);
            rb_futex_wake(&wt->bell, 1);
        }
    }

    free(seen);
    if (mark) {
        for (uint32_t c = 0; c < h->cell_bump; c++)
            if (BIT_GET(mark, c))
                high = c + 1;
        h->cell_free_head = RB_NIL;
        h->cell_free = 0;
        /* Push in descending order so allocation proceeds upwards. */
        for (uint32_t c = high; c-- > 0;)
            if (!BIT_GET(mark, c)) {
                s->cells[c].next = h->cell_free_head;
                h->cell_free_head = c;
                h->cell_free++;
            }
        h->cell_bump = high;
        free(mark);
    }

    /* 4. sets and members. */
    for (uint32_t i = 0; i < h->slot_bump; i++)
        if (s->slots[i].state == RB_SLOT_SET) {
            s->slots[i].first_member = RB_NIL;
            s->slots[i].member_count = 0;
        }
    for (uint32_t i = 0; i < h->slot_bump; i++) {
        rb_slot *m = &s->slots[i];
        if (m->state != RB_SLOT_MEMBER)
            continue;
        rb_slot *st = &s->slots[m->set_id];
        m->prev_member = RB_NIL;
        m->next_member = st->first_member;
        if (st->first_member != RB_NIL)
            s->slots[st->first_member].prev_member = i;
        st->first_member = i;
        st->member_count++;
    }
    for (uint32_t i = 0; i < h->slot_bump; i++)
        if (s->slots[i].state == RB_SLOT_SET && s->slots[i].member_count == 0)
            s->slots[i].state = RB_SLOT_FREE;

    /* 5. slot free list, then the index. */
    uint32_t high_slot = 0, used = 0;
    for (uint32_t i = 0; i < h->slot_bump; i++)
        if (s->slots[i].state != RB_SLOT_FREE) {
            high_slot = i + 1;
            used++;
        }
    h->slot_free_head = RB_NIL;
    for (uint32_t i = high_slot; i-- > 0;)
        if (s->slots[i].state == RB_SLOT_FREE) {
            s->slots[i].next_free = h->slot_free_head;
            h->slot_free_head = i;
        }
    h->slot_bump = high_slot;
    h->slots_used = used;
    rb_index_rebuild(s);
    /* Rows may have been retired: a caller holding queue ids across this
     * (a grouped fan-out's walk, resolve_for_wait) sees the epoch move and
     * resolves them again, as after a table GC. */
    h->gc_epoch++;
}

/* ---- check ---------------------------------------------------------------- */

struct tally {
    uint32_t *waiters, *fdw;
    uint32_t bump;
    int scanned;
};

static int tally_fn(rb_seg *s, uint32_t id, void *arg)
{
    (void)s;
    struct tally *t = arg;
    if (id < t->bump) {
        t->waiters[id]++;
        if (t->scanned)
            t->fdw[id]++;
    }
    return 0;
}

static int check_locked(rb_seg *s, char *why, size_t cap)
{
    rb_header *h = s->hdr;
    if (h->slot_bump > s->slot_count || h->cell_bump > s->cell_count)
        return snprintf(why, cap, "bump marks beyond table: slots %u/%u cells %u/%u", h->slot_bump,
                        s->slot_count, h->cell_bump, s->cell_count),
               -1;
    unsigned char *mark = calloc((h->cell_bump + 7) / 8 + 1, 1);
    if (!mark)
        return snprintf(why, cap, "out of memory"), -1;
    int bad = 0;
    uint64_t used_cells = 0;
    uint32_t used_slots = 0;
    uint32_t *members = calloc(h->slot_bump + 1, sizeof(uint32_t));
    uint32_t *waiters = calloc(h->slot_bump + 1, sizeof(uint32_t));
    uint32_t *fdw = calloc(h->slot_bump + 1, sizeof(uint32_t));
    if (!members || !waiters || !fdw) {
        bad = snprintf(why, cap, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < h->slot_bump && !bad; i++) {
        rb_slot *sl = &s->slots[i];
        if (sl->state == RB_SLOT_FREE)
            continue;
        used_slots++;
        if (!slot_valid(s, i)) {
            bad = snprintf(why, cap, "slot %u (state %u) is malformed", i, sl->state);
            break;
        }
        if (rb_table_find(s, sl->state, sl->state == RB_SLOT_MEMBER ? sl->set_id : 0, sl->name,
                          sl->name_len) != i) {
            bad = snprintf(why, cap, "slot %u is not found through the index", i);
            break;
        }
        if (sl->state == RB_SLOT_QUEUE) {
            int64_t n = walk_queue(s, i, mark, NULL, 0, why, cap);
            if (n < 0)
                bad = 1;
            else
                used_cells += (uint64_t)n;
        } else if (sl->state == RB_SLOT_MEMBER) {
            members[sl->set_id]++;
        }
    }
    if (bad)
        goto out;
    if (used_slots != h->slots_used) {
        bad = snprintf(why, cap, "slots_used is %u, %u slots are in use", h->slots_used, used_slots);
        goto out;
    }
    for (uint32_t i = 0; i < h->slot_bump; i++) {
        rb_slot *sl = &s->slots[i];
        if (sl->state == RB_SLOT_SET && (sl->member_count != members[i] || members[i] == 0)) {
            bad = snprintf(why, cap, "set slot %u counts %u members, %u rows point at it", i,
                           sl->member_count, members[i]);
            goto out;
        }
    }
    uint32_t live = 0;
    for (uint32_t w = 0; w < s->waiter_count; w++) {
        rb_waiter *wt = &s->waiters[w];
        if (wt->pid == 0)
            continue;
        if (w >= h->waiter_hi) {
            bad = snprintf(why, cap, "waiter row %u is live but waiter_hi is %u", w, h->waiter_hi);
            goto out;
        }
        live++;
        if (wt->kind > RB_WAITER_KIND_MAX) {
            bad = snprintf(why, cap, "waiter row %u has kind %u", w, wt->kind);
            goto out;
        }
        if (wt->n > RB_WAIT_MAX) {
            /* A long list: its cells are in use (marked, counted), its ids
             * ascending queue ids. */
            uint32_t n = rb_list_walk(s, wt, mark, why, cap);
            if (n == 0) {
                bad = 1;
                goto out;
            }
            used_cells += n;
        }
        struct tally t = {waiters, fdw, h->slot_bump, wt->kind != RB_WAITER_FUTEX};
        rb_row_each(s, wt, tally_fn, &t);
    }
    /* Free cells: each below the bump, unmarked and listed once. */
    uint32_t nfree = 0;
    for (uint32_t c = h->cell_free_head; c != RB_NIL; c = s->cells[c].next) {
        if (c >= h->cell_bump || BIT_GET(mark, c) || nfree > h->cell_bump) {
            bad = snprintf(why, cap, "free list: cell %u is out of range, in use or repeated", c);
            goto out;
        }
        BIT_SET(mark, c);
        nfree++;
    }
    if (nfree != h->cell_free || used_cells + nfree != h->cell_bump) {
        bad = snprintf(why, cap, "cells: %llu in records and waiter lists + %u free (counter %u) != bump %u",
                       (unsigned long long)used_cells, nfree, h->cell_free, h->cell_bump);
        goto out;
    }

    if (live != h->waiters_used) {
        bad = snprintf(why, cap, "waiters_used is %u, %u rows are live", h->waiters_used, live);
        goto out;
    }
    for (uint32_t i = 0; i < h->slot_bump; i++)
        if (s->slots[i].state == RB_SLOT_QUEUE && s->slots[i].waiters != waiters[i]) {
            bad = snprintf(why, cap, "queue slot %u counts %u waiters, %u rows watch it", i,
                           s->slots[i].waiters, waiters[i]);
            goto out;
        }
    for (uint32_t i = 0; i < h->slot_bump; i++)
        if (s->slots[i].state == RB_SLOT_QUEUE && s->slots[i].fd_watchers != fdw[i]) {
            bad = snprintf(why, cap, "queue slot %u counts %u fd watchers, %u fd rows watch it", i,
                           s->slots[i].fd_watchers, fdw[i]);
            goto out;
        }
out:
    free(mark);
    free(members);
    free(waiters);
    free(fdw);
    return bad ? -1 : 0;
}

/* check_locked with findings of the lookups it makes (an index entry out of
 * range) reported as its own, and nothing repaired: a check only reports. */
static int check_reporting(rb_seg *s, char *why, size_t cap)
{
    s->checking = 1;
    int bad = check_locked(s, why, cap);
    s->checking = 0;
    if (s->damage) {
        /* What a lookup found (an entry past the table) says more than
         * what check_locked concluded from it (a slot not found). */
        size_t k = strnlen(s->note, cap - 1);
        memcpy(why, s->note, k);
        why[k] = 0;
        bad = -1;
        s->damage = 0; /* returned to the caller, not logged */
    }
    return bad;
}

int rb_check(rb_seg *s, char *report, size_t cap)
{
    char why[512] = "";
    int r = rb_lock(s);
    if (r != RB_OK)
        return r;
    int bad = check_reporting(s, why, sizeof why);
    rb_unlock(s);
    if (report && cap) {
        snprintf(report, cap, "%s", bad ? why : "ok");
    }
    if (bad)
        return rb_fail(RB_E_CORRUPT, "segment %s: %s", s->prefix, why);
    return RB_OK;
}

/* ---- maintenance ------------------------------------------------------------ */

int rb_recover(rb_seg *s, uint32_t *out_swept)
{
    int r = rb_lock(s);
    if (r != RB_OK)
        return r;
    uint32_t swept = rb_sweep_waiters(s);
    /* Anything rb_check would report (a poisoned record, a broken list) is
     * repaired here: the same rebuild, broken records dropped and counted. */
    char why[512] = "";
    if (check_reporting(s, why, sizeof why) != 0)
        rb_corrupt(s, "%s", why);
    uint64_t now = rb_now_ns();
    for (uint32_t i = 0, hi = rb_slot_hi(s); i < hi; i++) {
        rb_slot *sl = &s->slots[i];
        if (sl->state == RB_SLOT_QUEUE && sl->head != RB_NIL)
            rb_purge_queue(s, i, now);
        else if (sl->state == RB_SLOT_MEMBER && sl->deadline && sl->deadline <= now)
            rb_member_unlink(s, i);
    }
    rb_unlock(s);
    if (out_swept)
        *out_swept = swept;
    return RB_OK;
}

int rb_stats_reset(rb_seg *s)
{
    int r = rb_lock(s);
    if (r != RB_OK)
        return r;
    rb_header *h = s->hdr;
    h->sent = h->received = h->full = h->expired = 0;
    for (uint32_t i = 0, hi = rb_slot_hi(s); i < hi; i++)
        s->slots[i].sent = s->slots[i].full = 0;
    rb_unlock(s);
    return RB_OK;
}

int rb_flush(rb_seg *s)
{
    int r = rb_lock(s);
    if (r != RB_OK)
        return r;
    rb_header *h = s->hdr;
    /* Make every record unreachable and retire every row but the queues
     * somebody sleeps on (their futex words must stay put); the repair then
     * rebuilds the free lists, which hands back every cell. */
    for (uint32_t i = 0, hi = rb_slot_hi(s); i < hi; i++) {
        rb_slot *sl = &s->slots[i];
        if (sl->state == RB_SLOT_QUEUE && sl->waiters) {
            RB_STORE_RELEASE(&sl->head, RB_NIL);
            sl->sent = sl->full = 0;
            sl->capacity = 0;
        } else if (sl->state != RB_SLOT_FREE) {
            RB_STORE_RELEASE(&sl->state, (uint32_t)RB_SLOT_FREE);
        }
    }
    rb_repair(s);
    h->sent = h->received = h->full = h->expired = 0;
    rb_unlock(s);
    return RB_OK;
}
