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

/* Caller has checked rb_cells_available(). */
uint32_t rb_cell_alloc(rb_seg *s)
{
    rb_header *h = s->hdr;
    uint32_t id;
    if (h->cell_free_head != RB_NIL) {
        id = h->cell_free_head;
        h->cell_free_head = s->cells[id].next;
        h->cell_free--;
    } else {
        id = h->cell_bump++;
    }
    s->cells[id].next = RB_NIL;
    return id;
}

/* Push every cell of an (already unlinked) record on the free list. */
void rb_record_free(rb_seg *s, uint32_t first)
{
    rb_header *h = s->hdr;
    uint32_t c = first;
    while (c != RB_NIL) {
        uint32_t next = s->cells[c].next;
        s->cells[c].next = h->cell_free_head;
        h->cell_free_head = c;
        h->cell_free++;
        c = next;
    }
}
