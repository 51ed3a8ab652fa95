/*
 * table.c - the name table: slots (primary) and the open-addressing hash
 * index over them (derived, rebuildable at any time from the slots).
 *
 * All functions run under the segment lock.
 */
#include <string.h>

#include "internal.h"

int rb_check_name(const char *what, const char *name, size_t len)
{
    if (len == 0 || len > RB_NAME_MAX)
        return rb_fail(RB_E_NAME, "%s name must be 1..%d bytes, got %zu", what, RB_NAME_MAX, len);
    if (name == NULL)
        return rb_fail(RB_E_INVAL, "%s name is NULL", what);
    return RB_OK;
}

/* FNV-1a, seeded with the kind and the set id so that a queue, a set and a
 * member of the same name are different keys. */
uint64_t rb_hash(uint32_t kind, uint32_t set_id, const char *name, size_t len)
{
    uint64_t h = 1469598103934665603ULL ^ ((uint64_t)kind << 32 | set_id);
    h *= 1099511628211ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)name[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static bool slot_matches(const rb_slot *sl, uint32_t kind, uint32_t set_id, uint64_t hash,
                         const char *name, size_t len)
{
    return sl->state == kind && sl->hash == hash && sl->name_len == len &&
           (kind != RB_SLOT_MEMBER || sl->set_id == set_id) && memcmp(sl->name, name, len) == 0;
}

/* An index entry is a slot id + 1 (< slot_count + 1), EMPTY or TOMB.  A
 * probe that meets an entry past the table, or goes round the whole index
 * without an EMPTY entry (the index is at most half used plus a quarter of
 * tombstones, so one always exists), found corruption: the repair rebuilds
 * the index from the slots and the probe runs once more on it. */
uint32_t rb_table_find(rb_seg *s, uint32_t kind, uint32_t set_id, const char *name, size_t len)
{
    uint64_t hash = rb_hash(kind, set_id, name, len);
    uint32_t mask = s->index_size - 1;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t i = (uint32_t)hash & mask, n = 0;
        for (; n < s->index_size; i = (i + 1) & mask, n++) {
            uint32_t e = s->index[i];
            if (e == RB_INDEX_EMPTY)
                return RB_NIL;
            /* One compare both skips a tombstone (e - 1 = 0xfffffffe) and
             * bounds the id: the range check costs nothing extra. */
            uint32_t id = e - 1;
            if (RB_UNLIKELY(id >= s->slot_count)) {
                if (e == RB_INDEX_TOMB)
                    continue;
                break;
            }
            if (slot_matches(&s->slots[id], kind, set_id, hash, name, len))
                return id;
        }
        if (n < s->index_size)
            rb_corrupt(s, "index entry %u holds slot id %u, past the %u slots", i, s->index[i] - 1,
                       s->slot_count);
        else
            rb_corrupt(s, "index of %u entries has no empty entry", s->index_size);
        /* In rb_check (no repair) or inside a repair: nothing to retry on. */
        if (s->checking || s->repairing)
            return RB_NIL;
    }
    return RB_NIL;
}

/* Bounded by the index size: an index with no free entry is corrupt (see
 * rb_table_find); it is rebuilt from the slots, which holds this slot too
 * if its state is committed (rb_table_create inserts after the commit). */
static void index_insert(rb_seg *s, uint32_t id, uint64_t hash)
{
    rb_header *h = s->hdr;
    uint32_t mask = s->index_size - 1;
    uint32_t i = (uint32_t)hash & mask;
    for (uint32_t n = 0; n < s->index_size; i = (i + 1) & mask, n++) {
        uint32_t e = s->index[i];
        if (e == RB_INDEX_EMPTY || e == RB_INDEX_TOMB) {
            if (e == RB_INDEX_TOMB && h->index_tombs)
                h->index_tombs--;
            s->index[i] = id + 1;
            return;
        }
    }
    rb_corrupt(s, "index of %u entries has no free entry for slot %u", s->index_size, id);
}

/* Derived data: clear the index and re-insert every used slot. */
void rb_index_rebuild(rb_seg *s)
{
    rb_header *h = s->hdr;
    memset(s->index, 0, (size_t)s->index_size * sizeof(uint32_t));
    h->index_tombs = 0;
    for (uint32_t i = 0, hi = rb_slot_hi(s); i < hi; i++)
        if (s->slots[i].state != RB_SLOT_FREE)
            index_insert(s, i, s->slots[i].hash);
}

/* Free queue slots that hold nothing and have nobody waiting, so a busy
 * table makes room for new names.  Costs a scan of the table; runs only when
 * no slot is free.  It never frees set or member rows (a fan-out may be
 * walking a member list while it creates queues), and it bumps gc_epoch so a
 * caller holding queue ids across several creates can tell they moved. */
static uint32_t table_gc(rb_seg *s)
{
    rb_header *h = s->hdr;
    uint32_t freed = 0;
    for (uint32_t i = 0, hi = rb_slot_hi(s); i < hi; i++) {
        rb_slot *sl = &s->slots[i];
        if (sl->state == RB_SLOT_QUEUE && sl->head == RB_NIL && sl->waiters == 0) {
            rb_table_remove(s, i);
            freed++;
        }
    }
    h->gc_epoch++;
    return freed;
}

int rb_table_create(rb_seg *s, uint32_t kind, uint32_t set_id, const char *name, size_t len,
                    uint64_t deadline, uint32_t *out)
{
    rb_header *h = s->hdr;
    uint32_t id;
    for (int attempt = 0;; attempt++) {
        if (h->slot_free_head == RB_NIL && h->slot_bump >= s->slot_count && table_gc(s) == 0)
            return rb_fail(RB_E_NOSLOT, "name table full (%u slots) creating %.*s",
                           s->slot_count, (int)(len > 80 ? 80 : len), name);
        id = h->slot_free_head;
        if (id == RB_NIL) {
            id = h->slot_bump++;
            break;
        }
        /* A free-list entry is a FREE row below the bump mark; anything else
         * would overwrite a live row (or a row past the table). */
        if (RB_LIKELY(id < h->slot_bump && rb_slot_ok(s, id) &&
                      s->slots[id].state == RB_SLOT_FREE)) {
            h->slot_free_head = s->slots[id].next_free;
            break;
        }
        int e = rb_corrupt(s, "slot free list: entry %u is %s", id,
                           id < h->slot_bump ? "a row in use" : "past the bump mark");
        if (attempt)
            return e;
        /* The repair retires a set with no member yet (one being created
         * for this member): then there is nothing to add the member to. */
        if (kind == RB_SLOT_MEMBER && s->slots[set_id].state != RB_SLOT_SET)
            return e;
    }
    rb_slot *sl = &s->slots[id];
    uint64_t hash = rb_hash(kind, set_id, name, len);
    memcpy(sl->name, name, len);
    sl->name_len = (uint32_t)len;
    sl->hash = hash;
    sl->head = sl->tail = RB_NIL;
    sl->count = sl->capacity = sl->waiters = sl->fd_watchers = 0;
    sl->sent = sl->full = 0;
    sl->expiry_hint = 0;
    sl->first_member = RB_NIL;
    sl->member_count = 0;
    sl->set_id = set_id;
    /* A reused row must not keep a previous member's routing: rb_set_add_member
     * writes queue_len only after the commit below, and a creator killed in
     * between leaves it as is - 0 ("the whole name"), never a stale prefix length
     * that would misroute fan-out copies to a truncated queue name. */
    sl->queue_len = 0;
    sl->next_member = sl->prev_member = RB_NIL;
    sl->deadline = deadline;
    /* COMMIT: the state store publishes the row; every field above is in
     * place before it (release).  Killed before it, the row is FREE and the
     * repair puts it back on the free list. */
    RB_STORE_RELEASE(&sl->state, kind);
    h->slots_used++;
    /* Tombstones make probes long; rebuild the index when they pile up. */
    if (h->index_tombs > s->index_size / 4)
        rb_index_rebuild(s);
    else
        index_insert(s, id, hash);
    *out = id;
    return RB_OK;
}

void rb_table_remove(rb_seg *s, uint32_t id)
{
    rb_header *h = s->hdr;
    rb_slot *sl = &s->slots[id];
    /* COMMIT: FREE first; the index entry and the free list are derived. */
    RB_STORE_RELEASE(&sl->state, (uint32_t)RB_SLOT_FREE);
    h->slots_used--;
    uint32_t mask = s->index_size - 1;
    for (uint32_t i = (uint32_t)sl->hash & mask, n = 0; n < s->index_size; i = (i + 1) & mask, n++) {
        uint32_t e = s->index[i];
        if (e == RB_INDEX_EMPTY)
            break;
        if (e == id + 1) {
            s->index[i] = RB_INDEX_TOMB;
            h->index_tombs++;
            break;
        }
    }
    sl->next_free = h->slot_free_head;
    h->slot_free_head = id;
}
