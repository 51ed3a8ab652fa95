/*
 * waitlist.c - the queue list of a waiter row that watches more than
 * RB_WAIT_MAX queues.
 *
 * Why cells.  A row is a fixed-size entry of the waiter table; a receive
 * over 5,000 channels cannot fit there, and a separate region sized for the
 * worst case (waiters x slots ids) would cost megabytes nobody uses.  The
 * cell allocator already hands out 256-byte cells whose reachability the
 * repair knows how to compute, so a long list is a chain of cells:
 *
 *     cell.next  the next cell of the list, RB_NIL at the end
 *     cell.pad   how many ids this cell holds (1..RB_LIST_IDS_PER_CELL)
 *     cell.data  those ids, as u32
 *
 * The ids are unique and ascending over the whole chain, so a sender asking
 * "does this row watch queue Q" skips every cell whose last id is below Q
 * and binary-searches the first one that is not: a walk of at most
 * n / 62 cells, done only for armed rows (a disarmed row is already owed a
 * ring; see rb_watch_collect).
 *
 * Crash points (all under the segment lock):
 *   - rb_list_write: the cells are allocated and filled, then the row's
 *     `list` and `n` are written, then the row's pid (the COMMIT, in
 *     rb_waiter_register).  Killed before the pid store, the cells are
 *     reachable from nothing and the repair frees them.
 *   - unregister/sweep: the pid store of 0 is the commit; the cells are
 *     pushed on the free list after it.  Killed in between, they are
 *     unreachable and the repair frees them.
 *   - the repair marks the list cells of every row it keeps (rb_list_walk)
 *     before it rebuilds the free list; a row whose chain is not well
 *     formed (only memory corruption makes one) is dropped, its cells
 *     reclaimed.
 * So the cells of a long list are never leaked and never handed out while
 * their row is live.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include "internal.h"

static inline uint32_t *cell_ids(rb_seg *s, uint32_t c) { return (uint32_t *)s->cells[c].data; }

/* Under the lock: a sorted unique copy of ids.  A bitmap over the slot
 * table, not a comparison sort: O(n + slot_count / 64), which for a 5,000
 * queue receive is a few microseconds instead of qsort's ~0.3 ms spent
 * holding the lock every sender needs. */
uint32_t *rb_ids_sorted_unique(rb_seg *s, const uint32_t *ids, uint32_t *n)
{
    uint32_t slots = s->slot_count;
    uint64_t *bits = calloc((slots + 63) / 64, sizeof(uint64_t));
    uint32_t *out = malloc((size_t)*n * sizeof(uint32_t));
    if (!bits || !out) {
        free(bits);
        free(out);
        return NULL;
    }
    for (uint32_t i = 0; i < *n; i++)
        if (ids[i] < slots)
            bits[ids[i] >> 6] |= 1ULL << (ids[i] & 63);
    uint32_t k = 0;
    for (uint32_t w = 0; w < (slots + 63) / 64; w++)
        for (uint64_t b = bits[w]; b; b &= b - 1)
            out[k++] = w * 64 + (uint32_t)__builtin_ctzll(b);
    free(bits);
    *n = k;
    return out;
}

/* Under the lock: write `sorted` (n ids, unique, ascending) into a fresh
 * chain of cells.  The chain is not reachable until the caller publishes
 * the row (see the crash points above). */
int rb_list_write(rb_seg *s, const uint32_t *sorted, uint32_t n, uint32_t *out_first)
{
    uint32_t need = rb_list_cells_needed(n);
    if (rb_cells_available(s) < need)
        return rb_fail(RB_E_NOMEM,
                       "segment %s has no memory for the list of %u queues to wait on "
                       "(%u cells needed, %u free)",
                       s->prefix, n, need, rb_cells_available(s));
    uint32_t first = RB_NIL, prev = RB_NIL;
    for (uint32_t off = 0; off < n; off += (uint32_t)RB_LIST_IDS_PER_CELL) {
        uint32_t c = rb_cell_alloc(s); /* next = RB_NIL */
        if (RB_UNLIKELY(c == RB_NIL)) /* corrupt free list: repaired, cells so far reclaimed */
            return rb_fail(RB_E_CORRUPT, "segment %s: record memory is corrupt", s->prefix);
        uint32_t k = n - off < RB_LIST_IDS_PER_CELL ? n - off : (uint32_t)RB_LIST_IDS_PER_CELL;
        memcpy(cell_ids(s, c), sorted + off, (size_t)k * sizeof(uint32_t));
        s->cells[c].pad = k;
        if (prev == RB_NIL)
            first = c;
        else
            s->cells[prev].next = c;
        prev = c;
    }
    *out_first = first;
    return RB_OK;
}

/* Under the lock, after the row's pid store of 0: the cells are unreachable
 * already, this only hands them back (the repair would too).  The chain is
 * checked (bounded by the cells n ids need) before any cell is pushed. */
void rb_list_free(rb_seg *s, uint32_t first, uint32_t n)
{
    rb_cells_free(s, first, rb_list_cells_needed(n), "waiter list");
}

int rb_row_each(rb_seg *s, const rb_waiter *wt, rb_id_fn fn, void *arg)
{
    if (wt->n <= RB_WAIT_MAX) {
        for (uint32_t i = 0; i < wt->n; i++) {
            int r = fn(s, wt->slot[i], arg);
            if (r)
                return r;
        }
        return 0;
    }
    /* Bounded by the cell count as well as by n: the walk of a chain a bug
     * (or a corruption the repair has not seen yet) made cyclic ends.  A
     * chain that ends before its n ids, or a cell that holds an impossible
     * count, is corruption: -1, for the callers that report it (the watch's
     * arm repairs, its lock-free seq says "not a valid watch"). */
    uint32_t left = wt->n, steps = 0, cells = s->cell_count;
    for (uint32_t c = wt->list; c < cells && left && steps < cells; c = s->cells[c].next, steps++) {
        uint32_t k = s->cells[c].pad;
        if (RB_UNLIKELY(k == 0 || k > RB_LIST_IDS_PER_CELL || k > left))
            return -1;
        const uint32_t *v = cell_ids(s, c);
        for (uint32_t i = 0; i < k; i++) {
            int r = fn(s, v[i], arg);
            if (r)
                return r;
        }
        left -= k;
    }
    return RB_UNLIKELY(left) ? -1 : 0;
}

bool rb_row_watches(rb_seg *s, const rb_waiter *wt, uint32_t qid)
{
    if (wt->n <= RB_WAIT_MAX) {
        for (uint32_t i = 0; i < wt->n; i++)
            if (wt->slot[i] == qid)
                return true;
        return false;
    }
    uint32_t left = wt->n, steps = 0, cells = s->cell_count;
    for (uint32_t c = wt->list; c < cells && left && steps < cells; c = s->cells[c].next, steps++) {
        uint32_t k = s->cells[c].pad;
        if (k == 0 || k > RB_LIST_IDS_PER_CELL || k > left)
            return false;
        const uint32_t *v = cell_ids(s, c);
        if (v[k - 1] < qid) { /* ascending: qid is in a later cell, if anywhere */
            left -= k;
            continue;
        }
        uint32_t lo = 0, hi = k; /* v[hi - 1] >= qid */
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (v[mid] < qid)
                lo = mid + 1;
            else
                hi = mid;
        }
        return v[lo] == qid;
    }
    return false;
}

#define BIT_GET(b, i) ((b)[(i) >> 3] & (1u << ((i)&7)))
#define BIT_SET(b, i) ((b)[(i) >> 3] |= (unsigned char)(1u << ((i)&7)))

uint32_t rb_list_walk(rb_seg *s, const rb_waiter *wt, unsigned char *mark, char *why, size_t cap)
{
    rb_header *h = s->hdr;
    uint32_t left = wt->n, cells = 0, last = 0;
    int any = 0;
    uint32_t need = rb_list_cells_needed(wt->n);
    uint32_t c = wt->list;
    for (; left; c = s->cells[c].next) {
        if (c >= h->cell_bump || (mark && BIT_GET(mark, c)) || cells >= need) {
            snprintf(why, cap, "waiter list at cell %u: bad chain at cell %u (cell %u of %u)",
                     wt->list, c, cells, need);
            return 0;
        }
        uint32_t k = s->cells[c].pad;
        if (k == 0 || k > RB_LIST_IDS_PER_CELL || k > left) {
            snprintf(why, cap, "waiter list cell %u holds %u ids (%u left of %u)", c, k, left,
                     wt->n);
            return 0;
        }
        const uint32_t *v = cell_ids(s, c);
        for (uint32_t i = 0; i < k; i++) {
            if ((any && v[i] <= last) || v[i] >= h->slot_bump ||
                s->slots[v[i]].state != RB_SLOT_QUEUE) {
                snprintf(why, cap, "waiter list cell %u: id %u is out of order or not a queue", c,
                         v[i]);
                return 0;
            }
            last = v[i];
            any = 1;
        }
        left -= k;
        cells++;
    }
    if (c != RB_NIL) {
        snprintf(why, cap, "waiter list at cell %u runs on past its %u ids", wt->list, wt->n);
        return 0;
    }
    if (mark)
        for (uint32_t k = wt->list, i = 0; i < cells; k = s->cells[k].next, i++)
            BIT_SET(mark, k);
    return cells;
}
