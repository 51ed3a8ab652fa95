/*
 * alloc.c - the cell allocator for record bodies.
 *
 * Cells below hdr->cell_bump that are not part of a linked record sit on a
 * singly linked free list; cells at or above the bump mark have never been
 * handed out since the last rebuild (so a fresh segment touches no cell
 * pages).  Both the free list and the bump mark are DERIVED: rb_repair()
 * recomputes them by marking every cell reachable from a queue.  That is
 * what makes a record that a dead process had half-allocated, or had
 * unlinked but not yet freed, come back instead of leaking.
 *
 * All functions run under the segment lock.
 */
#include "internal.h"

uint32_t rb_cells_needed(size_t len)
{
    if (len <= RB_FIRST_PAYLOAD)
        return 1;
    return 1 + (uint32_t)((len - RB_FIRST_PAYLOAD + RB_CELL_PAYLOAD - 1) / RB_CELL_PAYLOAD);
}

uint32_t rb_cells_available(rb_seg *s)
{
    rb_header *h = s->hdr;
    return h->cell_free + (s->cell_count - h->cell_bump);
}

/* Caller has checked rb_cells_available().  RB_NIL: the free list or the
 * counters were found corrupt and repaired (rb_corrupt); the cells this
 * caller took before are unreachable, so the repair reclaimed them, and the
 * caller must start its record over. */
uint32_t rb_cell_alloc(rb_seg *s)
{
    rb_header *h = s->hdr;
    uint32_t id;
    if (h->cell_free_head != RB_NIL) {
        id = h->cell_free_head;
        /* A free cell is below the bump mark (the head was checked by
         * rb_lock; later heads come from free cells' links). */
        if (RB_UNLIKELY(id >= h->cell_bump || !rb_cell_ok(s, id) || h->cell_free == 0)) {
            rb_corrupt(s, "cell free list: head %u, %u cells free, bump %u", id, h->cell_free,
                       h->cell_bump);
            return RB_NIL;
        }
        h->cell_free_head = s->cells[id].next;
        h->cell_free--;
    } else {
        if (RB_UNLIKELY(h->cell_bump >= s->cell_count)) {
            /* cell_free said there was room, the list is empty. */
            rb_corrupt(s, "cell free list is empty but counts %u free cells", h->cell_free);
            return RB_NIL;
        }
        id = h->cell_bump++;
    }
    s->cells[id].next = RB_NIL;
    return id;
}

/* Push a chain of exactly `need` cells (already unreachable) on the free
 * list.  The chain is checked first (every cell in range, exactly `need`
 * of them): a broken one is pushed nowhere - it would put cells of other
 * records, or ids past the table, on the free list - but reported, and
 * the repair reclaims whatever is unreachable.  Returns false then (the
 * caller's view of the queues was rebuilt under it). */
bool rb_cells_free(rb_seg *s, uint32_t first, uint32_t need, const char *what)
{
    rb_header *h = s->hdr;
    uint32_t n = 0, c = first;
    while (c != RB_NIL && n < need && rb_cell_ok(s, c)) {
        n++;
        c = s->cells[c].next;
    }
    if (RB_UNLIKELY(c != RB_NIL || n != need)) {
        rb_corrupt(s, "%s at cell %u has a broken cell chain at cell %u (cell %u of %u)", what,
                   first, c, n, need);
        return false;
    }
    for (c = first; c != RB_NIL;) {
        uint32_t next = s->cells[c].next;
        s->cells[c].next = h->cell_free_head;
        h->cell_free_head = c;
        h->cell_free++;
        c = next;
    }
    return true;
}

/* Push every cell of an (already unlinked) record on the free list (see
 * rb_cells_free).  A freed record's header says so: its length becomes
 * impossible (the line is the one the free-list link writes anyway), so a
 * stale link to it - only corruption makes one - fails live_head's length
 * check instead of handing the old bytes out again. */
bool rb_record_free(rb_seg *s, uint32_t first)
{
    rb_header *h = s->hdr;
    rb_rec *rec = rb_rec_at(s, first);
    uint32_t len = rec->len;
    /* The common record fits its first cell: nothing to walk. */
    if (RB_LIKELY(len <= RB_FIRST_PAYLOAD && s->cells[first].next == RB_NIL)) {
        rec->len = RB_NIL;
        s->cells[first].next = h->cell_free_head;
        h->cell_free_head = first;
        h->cell_free++;
        return true;
    }
    if (RB_UNLIKELY(len > s->max_record)) {
        rb_corrupt(s, "record at cell %u has length %u > max_record %u", first, len,
                   s->max_record);
        return false;
    }
    if (!rb_cells_free(s, first, rb_cells_needed(len), "record"))
        return false;
    rec->len = RB_NIL;
    return true;
}
