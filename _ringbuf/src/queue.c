/*
 * queue.c - per-name FIFO queues of variable-length records: send, receive,
 * wait, expiry sweeps and per-queue statistics.
 *
 * Order of a send (all under the segment lock):
 *   1. find or create the queue slot;
 *   2. capacity check (after sweeping expired records if it looks full) -
 *      atomic with the enqueue because both happen under the one lock;
 *   3. allocate cells and copy the payload;
 *   4. COMMIT: link the record (release store of queue.head or of the
 *      previous tail record's next);
 *   5. bump the queue's futex word; after unlocking, wake one waiter.
 * A SIGKILL before 4 loses only this record (its cells are reclaimed by the
 * repair); after 4 the record is delivered even if the wake never happens,
 * because every futex sleep is bounded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Most broken records one receive drops before it gives up (RB_E_CORRUPT):
 * each drop runs a repair, which removes the record for good. */
#define RB_BAD_RECORDS_MAX 16

/* A record's bytes may come in two parts (a tag frame and the payload):
 * copy them as one stream into cells. */
typedef struct part_cursor {
    const char *p[2];
    size_t n[2];
    int i;
} part_cursor;

static void cursor_copy(part_cursor *c, unsigned char *dst, size_t k)
{
    while (k) {
        if (c->n[c->i] == 0) {
            c->i++;
            continue;
        }
        size_t take = k < c->n[c->i] ? k : c->n[c->i];
        memcpy(dst, c->p[c->i], take);
        c->p[c->i] += take;
        c->n[c->i] -= take;
        dst += take;
        k -= take;
    }
}

/* Copy a record into a chain of freshly allocated cells and return the
 * first cell (not yet linked to any queue). */
static uint32_t record_write(rb_seg *s, const char *pre, size_t pre_len, const char *data,
                             size_t len, uint64_t deadline, uint64_t now)
{
    part_cursor cur = {{pre, data}, {pre_len, len}, 0};
    size_t total = pre_len + len;
    uint32_t first = rb_cell_alloc(s);
    if (RB_UNLIKELY(first == RB_NIL))
        return RB_NIL; /* corrupt free list, repaired: start over */
    rb_rec *rec = rb_rec_at(s, first);
    rec->next = RB_NIL;
    rec->len = (uint32_t)total;
    rec->deadline = deadline;
    rec->enq_ns = now;
    size_t n = total < RB_FIRST_PAYLOAD ? total : RB_FIRST_PAYLOAD;
    cursor_copy(&cur, s->cells[first].data + sizeof(rb_rec), n);
    size_t off = n;
    uint32_t prev = first;
    while (off < total) {
        uint32_t c = rb_cell_alloc(s);
        if (RB_UNLIKELY(c == RB_NIL))
            return RB_NIL; /* the repair reclaimed the cells taken so far */
        size_t k = total - off < RB_CELL_PAYLOAD ? total - off : RB_CELL_PAYLOAD;
        cursor_copy(&cur, s->cells[c].data, k);
        s->cells[prev].next = c;
        prev = c;
        off += k;
    }
    return first;
}

/* Copy a record out.  Its length was checked against max_record by
 * live_head; the chain is checked on the way (every cell in range, as many
 * as the length needs): false if it is broken (nothing is unlinked). */
static bool record_read(rb_seg *s, uint32_t first, char *buf)
{
    rb_rec *rec = rb_rec_at(s, first);
    size_t len = rec->len;
    uint32_t c = s->cells[first].next;
    /* rb_receive accepts buf == NULL with cap == 0, which is exactly enough
     * for an empty record; memcpy(NULL, src, 0) is still undefined behaviour
     * (UBSan: "null pointer passed as argument 1"), so copy nothing. */
    if (len == 0)
        return RB_LIKELY(c == RB_NIL);
    size_t n = len < RB_FIRST_PAYLOAD ? len : RB_FIRST_PAYLOAD;
    memcpy(buf, s->cells[first].data + sizeof(rb_rec), n);
    size_t off = n;
    while (off < len) {
        if (RB_UNLIKELY(!rb_cell_ok(s, c)))
            return false; /* short chain (RB_NIL) or a cell past the table */
        size_t k = len - off < RB_CELL_PAYLOAD ? len - off : RB_CELL_PAYLOAD;
        memcpy(buf + off, s->cells[c].data, k);
        off += k;
        c = s->cells[c].next;
    }
    return RB_LIKELY(c == RB_NIL); /* not longer than its length */
}

static void link_tail(rb_seg *s, rb_slot *q, uint32_t rec)
{
    if (q->head == RB_NIL) {
        /* COMMIT (empty queue): the record becomes reachable here. */
        RB_STORE_RELEASE(&q->head, rec);
    } else {
        /* COMMIT (non-empty queue): link from the current tail record. */
        RB_STORE_RELEASE(&rb_rec_at(s, q->tail)->next, rec);
    }
    q->tail = rec;
    q->count++;
}

/* Unlink the head record of q (the caller has read it if it wanted to,
 * and live_head checked it).  The new head is checked by the next
 * live_head.  False: freeing found the record's chain broken and the
 * segment was repaired (q's count and tail are the repair's). */
static bool pop_head(rb_seg *s, rb_slot *q)
{
    uint32_t rec = q->head;
    /* COMMIT: after this store the record is gone from the queue; killed
     * before the free below, its cells are unreachable and the repair
     * reclaims them. */
    RB_STORE_RELEASE(&q->head, rb_rec_at(s, rec)->next);
    if (q->head == RB_NIL)
        q->tail = RB_NIL;
    q->count--;
    return rb_record_free(s, rec);
}

/* The head record failed its checks: report it (naming the queue) and
 * repair, which drops it (counted in `dropped`) and keeps the records
 * after it.  False if nothing changed (no repair could run) or the row is
 * not a queue any more. */
static bool drop_bad_head(rb_seg *s, rb_slot *q, const char *why)
{
    uint32_t head = q->head;
    rb_corrupt(s, "queue %.*s: head record at cell %u %s; dropped",
               (int)(q->name_len > 100 ? 100 : q->name_len), q->name, head, why);
    return q->head != head && q->state == RB_SLOT_QUEUE;
}

/* live_head's cold path: why the head failed, then drop it. */
static __attribute__((noinline, cold)) bool bad_head(rb_seg *s, rb_slot *q, bool cycle)
{
    char why[64];
    if (cycle)
        snprintf(why, sizeof why, "closes a cycle of expired records");
    else if (!rb_cell_ok(s, q->head))
        snprintf(why, sizeof why, "is past the table");
    else
        snprintf(why, sizeof why, "has length %u > max_record %u", rb_rec_at(s, q->head)->len,
                 s->max_record);
    return drop_bad_head(s, q, why);
}

/* Drop expired records at the head of q.  Returns the live head or RB_NIL.
 * The head it returns is checked: its first cell is in the table and its
 * length at most max_record (its chain is checked as it is read).  A head
 * that fails is dropped and the next one looked at; the expired records
 * popped are bounded by the cells (each record has one of its own), so a
 * cycle of expired records ends too. */
static inline uint32_t live_head(rb_seg *s, rb_slot *q, uint64_t now)
{
    uint32_t popped = 0;
    for (;;) {
        uint32_t c = q->head;
        if (c == RB_NIL)
            return RB_NIL;
        if (RB_UNLIKELY(!rb_cell_ok(s, c) || rb_rec_at(s, c)->len > s->max_record)) {
            if (!bad_head(s, q, false))
                return RB_NIL;
            continue;
        }
        rb_rec *r = rb_rec_at(s, c);
        if (r->deadline == 0 || r->deadline > now)
            return c;
        if (RB_UNLIKELY(++popped > s->cell_count)) {
            if (!bad_head(s, q, true))
                return RB_NIL;
            popped = 0;
            continue;
        }
        pop_head(s, q);
        s->hdr->expired++;
    }
}

/* Drop every expired record of q, wherever it sits.  Returns how many. */
uint32_t rb_purge_queue(rb_seg *s, uint32_t qid, uint64_t now)
{
    rb_slot *q = rb_slot_at(s, qid);
    uint32_t dropped = 0;
    /* Nothing can have expired yet: skip the O(records) walk.  This is
     * what keeps a full queue (backpressure) cheap to refuse. */
    if (q->expiry_hint == 0 || q->expiry_hint > now)
        return 0;
    live_head(s, q, now);
    q->expiry_hint = 0;
    if (q->head == RB_NIL)
        return 0;
    uint64_t earliest = rb_rec_at(s, q->head)->deadline;
    uint32_t prev = q->head;
    uint32_t cur = rb_rec_at(s, prev)->next;
    for (uint32_t steps = 0; cur != RB_NIL; steps++) {
        if (RB_UNLIKELY(!rb_cell_ok(s, cur) || steps > s->cell_count)) {
            /* The repair cuts or drops what is broken; its hint says "sweep". */
            rb_corrupt(s, "queue %.*s: record link %u after cell %u %s",
                       (int)(q->name_len > 100 ? 100 : q->name_len), q->name, cur, prev,
                       steps > s->cell_count ? "closes a cycle" : "is past the table");
            break;
        }
        rb_rec *r = rb_rec_at(s, cur);
        uint32_t next = r->next;
        if (r->deadline != 0 && r->deadline > now && (earliest == 0 || r->deadline < earliest))
            earliest = r->deadline;
        if (r->deadline != 0 && r->deadline <= now) {
            /* COMMIT: bypass cur; its cells are reclaimed below (or by the repair). */
            RB_STORE_RELEASE(&rb_rec_at(s, prev)->next, next);
            if (q->tail == cur)
                q->tail = prev;
            q->count--;
            dropped++;
            if (RB_UNLIKELY(!rb_record_free(s, cur)))
                break; /* repaired: prev and cur are stale now */
        } else {
            prev = cur;
        }
        cur = next;
    }
    if (RB_LIKELY(!s->damage))
        q->expiry_hint = earliest; /* else the repair's 1 ("sweep to find out") stays */
    s->hdr->expired += dropped;
    return dropped;
}

/* Sweep expired records from every queue: the last resort before saying
 * the segment's memory is exhausted. */
static uint32_t purge_all(rb_seg *s, uint64_t now)
{
    uint32_t n = 0;
    for (uint32_t i = 0, hi = rb_slot_hi(s); i < hi; i++)
        if (s->slots[i].state == RB_SLOT_QUEUE && s->slots[i].head != RB_NIL)
            n += rb_purge_queue(s, i, now);
    return n;
}

int rb_enqueue_locked(rb_seg *s, uint32_t qid, const char *pre, size_t pre_len, const char *data,
                      size_t len, uint64_t deadline, uint64_t now, uint32_t capacity)
{
    rb_header *h = s->hdr;
    rb_slot *q = rb_slot_at(s, qid);
    /* Written only when it changes: a store of the same value would still
     * dirty the read-mostly line every lookup reads. */
    if (capacity && q->capacity != capacity)
        q->capacity = capacity;
    uint32_t cap = q->capacity;
    if (cap && q->count >= cap && (rb_purge_queue(s, qid, now), q->count >= cap)) {
        q->full++;
        h->full++;
        return rb_fail(RB_E_FULL, "queue %.*s is full (capacity %u)",
                       (int)(q->name_len > 100 ? 100 : q->name_len), q->name, cap);
    }
    uint32_t need = rb_cells_needed(pre_len + len), rec;
    for (int attempt = 0;; attempt++) {
        if (rb_cells_available(s) < need && (purge_all(s, now), rb_cells_available(s) < need)) {
            q->full++;
            h->full++;
            return rb_fail(RB_E_NOMEM,
                           "segment %s is out of record memory (%u cells free, %u needed)",
                           s->prefix, rb_cells_available(s), need);
        }
        /* The tail (derived) is where the record gets linked: it must be
         * this queue's last record, checked BEFORE any cell is taken (a
         * repair reclaims cells not linked yet).  Its line is the one the
         * link writes anyway. */
        if (RB_UNLIKELY(q->head != RB_NIL &&
                        (!rb_cell_ok(s, q->tail) || rb_rec_at(s, q->tail)->next != RB_NIL))) {
            int e = rb_corrupt(s, "queue %.*s: tail %u is not its last record",
                               (int)(q->name_len > 100 ? 100 : q->name_len), q->name, q->tail);
            if (attempt)
                return e;
            continue; /* the repair recomputed the tail */
        }
        rec = record_write(s, pre, pre_len, data, len, deadline, now);
        if (RB_LIKELY(rec != RB_NIL))
            break;
        /* The free list was corrupt and is rebuilt (the cells taken so far
         * were reclaimed with it): write the record again, once. */
        if (attempt)
            return rb_fail(RB_E_CORRUPT, "segment %s: record memory is corrupt", s->prefix);
    }
    link_tail(s, q, rec);
    if (deadline && (q->expiry_hint == 0 || deadline < q->expiry_hint))
        q->expiry_hint = deadline;
    q->sent++;
    h->sent++;
    /* The futex word changes under the lock, after the record is linked: a
     * receiver that snapshotted it under the lock and found the queue empty
     * is guaranteed to see a different value and not sleep through this. */
    __atomic_fetch_add(&q->seq, 1, __ATOMIC_RELEASE);
    return RB_OK;
}

static int check_record(rb_seg *s, size_t len)
{
    if (len > s->max_record)
        return rb_fail(RB_E_TOOLARGE, "record of %zu bytes exceeds the segment's max_record of %u bytes",
                       len, s->max_record);
    return RB_OK;
}

/* Under the lock: the queue slot of `name`, created on first send. */
static int queue_for_send(rb_seg *s, const char *name, size_t name_len, uint32_t *qid)
{
    *qid = rb_table_find(s, RB_SLOT_QUEUE, 0, name, name_len);
    if (*qid != RB_NIL)
        return RB_OK;
    return rb_table_create(s, RB_SLOT_QUEUE, 0, name, name_len, 0, qid);
}

/* rb_send and rb_send_tagged: enqueue pre + data as one record. */
static int send_one(rb_seg *s, const char *name, size_t name_len, const char *pre, size_t pre_len,
                    const char *data, size_t len, uint64_t deadline_ns, uint32_t capacity)
{
    int r = rb_check_name("queue", name, name_len);
    if (r == RB_OK)
        r = check_record(s, pre_len + len);
    if (r != RB_OK)
        return r;
    if (data == NULL && len)
        return rb_fail(RB_E_INVAL, "data is NULL");
    uint64_t now = rb_now_ns();
    if ((r = rb_lock(s)) != RB_OK)
        return r;
    uint32_t qid;
    r = queue_for_send(s, name, name_len, &qid);
    if (r == RB_OK)
        r = rb_enqueue_locked(s, qid, pre, pre_len, data, len, deadline_ns, now, capacity);
    rb_slot *q = qid == RB_NIL ? NULL : rb_slot_at(s, qid);
    /* FD-watch rows sleep on their FIFO, not on the futex word. */
    uint32_t waiters = q ? q->waiters - q->fd_watchers : 0;
    rb_pokes pokes;
    rb_pokes_init(&pokes);
    if (r == RB_OK && q->fd_watchers)
        rb_watch_collect(s, qid, &pokes); /* disarms them: see watch.c */
    rb_unlock(s);
    if (r == RB_OK && waiters)
        rb_futex_wake(&q->seq, 1);
    rb_watch_poke_all(s, &pokes);
    return r;
}

int rb_send(rb_seg *s, const char *name, size_t name_len, const char *data, size_t len,
            uint64_t deadline_ns, uint32_t capacity)
{
    return send_one(s, name, name_len, NULL, 0, data, len, deadline_ns, capacity);
}

int rb_send_tagged(rb_seg *s, const char *name, size_t name_len, const char *tag, size_t tag_len,
                   const char *data, size_t len, uint64_t deadline_ns, uint32_t capacity)
{
    if (tag_len > RB_FRAME_TAG_MAX || (tag == NULL && tag_len))
        return rb_fail(RB_E_INVAL, "tag of %zu bytes: a frame's tag is 0..%d bytes (record format %d)",
                       tag_len, RB_FRAME_TAG_MAX, RB_RECORD_FORMAT);
    /* The single frame of the record format (ringbuf.h): [len][tag]. */
    char frame[1 + RB_FRAME_TAG_MAX];
    frame[0] = (char)tag_len;
    if (tag_len)
        memcpy(frame + 1, tag, tag_len);
    return send_one(s, name, name_len, frame, 1 + tag_len, data, len, deadline_ns, capacity);
}

int rb_send_batch(rb_seg *s, const char *name, size_t name_len, const char *data,
                  const uint32_t *lens, uint32_t n, uint64_t deadline_ns, uint32_t capacity,
                  uint32_t *out_sent)
{
    int r = rb_check_name("queue", name, name_len);
    if (r != RB_OK)
        return r;
    if (out_sent == NULL || (n && (data == NULL || lens == NULL)))
        return rb_fail(RB_E_INVAL, "send_batch needs data, lens and out_sent");
    *out_sent = 0;
    for (uint32_t i = 0; i < n; i++)
        if ((r = check_record(s, lens[i])) != RB_OK)
            return r;
    uint64_t now = rb_now_ns();
    if ((r = rb_lock(s)) != RB_OK)
        return r;
    uint32_t qid;
    r = queue_for_send(s, name, name_len, &qid);
    uint32_t sent = 0;
    size_t off = 0;
    /* Each record is committed on its own (same crash points as rb_send):
     * a producer killed mid-batch has delivered a prefix of the batch. */
    for (; r == RB_OK && sent < n; sent++) {
        r = rb_enqueue_locked(s, qid, NULL, 0, data + off, lens[sent], deadline_ns, now, capacity);
        if (r == RB_OK)
            off += lens[sent];
    }
    if (r != RB_OK && sent > 0)
        sent--; /* the loop counted the refused record */
    rb_slot *q = qid == RB_NIL ? NULL : rb_slot_at(s, qid);
    /* FD-watch rows sleep on their FIFO, not on the futex word. */
    uint32_t waiters = q ? q->waiters - q->fd_watchers : 0;
    rb_pokes pokes;
    rb_pokes_init(&pokes);
    if (sent && q->fd_watchers)
        rb_watch_collect(s, qid, &pokes);
    rb_unlock(s);
    *out_sent = sent;
    rb_watch_poke_all(s, &pokes);
    if (sent && waiters)
        rb_futex_wake(&q->seq, (int)(waiters < sent ? waiters : sent));
    return r;
}

/* ---- receive / wait ----------------------------------------------------- */

/* Parse the u16-length-prefixed names blob. */
typedef rb_name_ref name_ref;

/* No upper bound on count (the ASGI receive has none): only what the blob
 * can hold, checked before anybody sizes an array by count.  Each entry is
 * at least its u16 length (an empty name is then refused by name). */
int rb_check_count(size_t blob_len, uint32_t count)
{
    if (count == 0)
        return rb_fail(RB_E_INVAL, "receive needs at least one queue name, got 0");
    if (count > blob_len / 2)
        return rb_fail(RB_E_INVAL, "a names blob of %zu bytes cannot hold %u names", blob_len,
                       count);
    return RB_OK;
}

int rb_parse_names(const char *blob, size_t blob_len, uint32_t count, name_ref *out)
{
    int rc = rb_check_count(blob_len, count);
    if (rc != RB_OK)
        return rc;
    size_t off = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (off + 2 > blob_len)
            return rb_fail(RB_E_INVAL, "names blob truncated at entry %u", i);
        uint32_t n = (uint32_t)(unsigned char)blob[off] | (uint32_t)(unsigned char)blob[off + 1] << 8;
        off += 2;
        if (off + n > blob_len)
            return rb_fail(RB_E_INVAL, "names blob truncated in entry %u", i);
        int r = rb_check_name("queue", blob + off, n);
        if (r != RB_OK)
            return r;
        out[i].p = blob + off;
        out[i].len = n;
        off += n;
    }
    return RB_OK;
}

/* Under the lock: find the listed queue whose live head is the oldest (fair
 * across queues: no queue can starve another).  Returns its index in the
 * list or -1.  A batch caches the lookups in `ids` within one lock hold:
 * PICK_FILL looks every name up and stores its id, PICK_CACHED reuses them -
 * valid because no queue slot is created or retired while the same lock is
 * held by a receive that only pops records.  A batch thus costs one lookup
 * per name and then one head read per name per record (5,000 queues:
 * draining 5,000 records took 25 M lookups).  A single receive looks up
 * without storing (PICK_FIND: the store cost ~4 instructions a name).
 * Inlined, so each call site gets the loop for its constant mode. */
enum { PICK_FIND, PICK_FILL, PICK_CACHED };
static inline __attribute__((always_inline)) int
pick_oldest(rb_seg *s, const name_ref *names, uint32_t count, uint64_t now, uint32_t *out_qid,
            uint32_t *ids, int mode)
{
    int best = -1;
    uint64_t best_enq = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t qid;
        if (mode == PICK_CACHED) {
            qid = ids[i];
        } else {
            qid = rb_table_find(s, RB_SLOT_QUEUE, 0, names[i].p, names[i].len);
            if (mode == PICK_FILL)
                ids[i] = qid;
        }
        if (qid == RB_NIL)
            continue;
        uint32_t rec = live_head(s, rb_slot_at(s, qid), now);
        if (rec == RB_NIL)
            continue;
        uint64_t enq = rb_rec_at(s, rec)->enq_ns;
        if (best < 0 || enq < best_enq) {
            best = (int)i;
            best_enq = enq;
            *out_qid = qid;
        }
    }
    return best;
}

/* Under the lock: resolve (creating when absent) the queue slots to sleep
 * on, and snapshot their futex words.  Creating a slot may GC other empty
 * queues, so retry until one pass completes without a GC. */
static int resolve_for_wait(rb_seg *s, const name_ref *names, uint32_t count, uint32_t *ids,
                            uint32_t *vals);

int rb_resolve_queues(rb_seg *s, const rb_name_ref *names, uint32_t count, uint32_t *ids)
{
    return resolve_for_wait(s, names, count, ids, NULL);
}

int rb_queue_live(rb_seg *s, uint32_t qid, uint64_t now)
{
    return live_head(s, rb_slot_at(s, qid), now) != RB_NIL;
}

static int resolve_for_wait(rb_seg *s, const name_ref *names, uint32_t count, uint32_t *ids,
                            uint32_t *vals)
{
    for (int attempt = 0; attempt < 4; attempt++) {
        uint32_t epoch = s->hdr->gc_epoch;
        int r = RB_OK;
        for (uint32_t i = 0; i < count && r == RB_OK; i++) {
            ids[i] = rb_table_find(s, RB_SLOT_QUEUE, 0, names[i].p, names[i].len);
            if (ids[i] == RB_NIL)
                r = rb_table_create(s, RB_SLOT_QUEUE, 0, names[i].p, names[i].len, 0, &ids[i]);
        }
        if (r != RB_OK)
            return r;
        if (epoch == s->hdr->gc_epoch) {
            for (uint32_t i = 0; vals && i < count; i++)
                vals[i] = RB_LOAD_RELAXED(&s->slots[ids[i]].seq);
            return RB_OK;
        }
    }
    return rb_fail(RB_E_NOSLOT, "name table too full to wait on %u queues", count);
}

static int count_in(rb_seg *s, uint32_t id, void *fd)
{
    s->slots[id].waiters++;
    if (*(const int *)fd)
        s->slots[id].fd_watchers++;
    return 0;
}

static int count_out(rb_seg *s, uint32_t id, void *fd)
{
    if (id >= s->slot_count)
        return 0;
    if (s->slots[id].waiters)
        s->slots[id].waiters--;
    if (*(const int *)fd && s->slots[id].fd_watchers)
        s->slots[id].fd_watchers--;
    return 0;
}

/* Under the lock: take a free waiter row for `ids` (sweeping dead rows if
 * none is free).  FD and BELL rows also count in queue.fd_watchers (the
 * rows senders find by scanning).  More than RB_WAIT_MAX ids go, sorted and
 * without repeats, into list cells (waitlist.c); a BELL row starts armed
 * (its owner found nothing under this lock hold and sleeps next).  `token`
 * 0 = a fresh one; else one the caller reserved (rb_watch_open names its
 * FIFO after it, so the row carries it from its first live instant). */
int rb_waiter_register(rb_seg *s, const uint32_t *ids, uint32_t count, uint32_t kind,
                       uint64_t token, uint32_t *out_row, uint64_t *out_token)
{
    rb_header *h = s->hdr;
    uint32_t *sorted = NULL;
    if (count > RB_WAIT_MAX) {
        sorted = rb_ids_sorted_unique(s, ids, &count);
        if (!sorted)
            return rb_fail(RB_E_SYS, "out of memory for a list of %u queues", count);
        if (count <= RB_WAIT_MAX) {
            /* Repeated names: few enough distinct queues to stay inline (the
             * kind is the caller's; a BELL row with an inline list works the
             * same, it just does not need the cells). */
            ids = sorted;
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t w = 0; w < s->waiter_count; w++) {
            rb_waiter *wt = &s->waiters[w];
            if (wt->pid != 0)
                continue;
            if (count > RB_WAIT_MAX) {
                /* Cells first: unreachable until the pid store below. */
                int r = rb_list_write(s, sorted, count, &wt->list);
                if (r != RB_OK) {
                    free(sorted);
                    return r;
                }
            } else {
                memcpy(wt->slot, ids, count * sizeof(uint32_t));
            }
            wt->n = count;
            wt->start_time = rb_self_start_time();
            wt->kind = kind;
            wt->armed = kind == RB_WAITER_BELL;
            wt->token = token ? token : ++h->waiter_token; /* FD rows: reserved by the caller */
            *out_token = wt->token;
            /* Before the commit: a live row is always below waiter_hi (a crash
             * here leaves it only too high, which costs a scan a few rows). */
            if (w >= h->waiter_hi)
                h->waiter_hi = w + 1;
            /* COMMIT: the pid makes the row live (and its list cells
             * reachable); the repair recounts queue.waiters from live rows
             * only. */
            RB_STORE_RELEASE(&wt->pid, rb_self_pid());
            h->waiters_used++;
            int scanned = kind != RB_WAITER_FUTEX;
            rb_row_each(s, wt, count_in, &scanned);
            free(sorted);
            *out_row = w;
            return RB_OK;
        }
        if (pass == 0 && rb_sweep_waiters(s) == 0)
            break;
    }
    free(sorted);
    return rb_fail(RB_E_WAITERS, "all %u waiter rows are in use; raise the segment's waiters option",
                   s->waiter_count);
}

void rb_waiter_unregister(rb_seg *s, uint32_t row, uint64_t token)
{
    rb_waiter *wt = &s->waiters[row];
    if (wt->pid == 0 || wt->token != token)
        return; /* swept by a repair meanwhile, maybe reused: nothing of ours to undo */
    int scanned = wt->kind != RB_WAITER_FUTEX;
    rb_row_each(s, wt, count_out, &scanned);
    /* COMMIT: the row is free; a long list's cells are unreachable from
     * here on (killed before the free below, the repair reclaims them). */
    RB_STORE_RELEASE(&wt->pid, 0u);
    s->hdr->waiters_used--;
    if (wt->n > RB_WAIT_MAX)
        rb_list_free(s, wt->list, wt->n);
}

/* The per-call arrays of a receive: on the stack up to RB_WAIT_MAX names
 * (the hot case, no malloc), else on the heap. */
typedef struct wait_arrays {
    name_ref *names;
    uint32_t *ids, *vals;
    uint32_t **words;
} wait_arrays;

/* Inlined into both branches of receive_or_wait, so the common case (up to
 * RB_WAIT_MAX names, stack arrays) costs no extra call: a non-blocking empty
 * receive on one queue is ~45 ns and a call was measurable in it. */
#define RB_HOT_INLINE static inline __attribute__((always_inline))
RB_HOT_INLINE int receive_or_wait_in(rb_seg *s, const char *blob, size_t blob_len, uint32_t count,
                              uint32_t take, char *buf, size_t cap, size_t *out_len,
                              uint32_t *out_index, uint32_t *lens, uint32_t *idxs,
                              uint32_t *out_n, int64_t timeout_ns, uint32_t spin_us,
                              wait_arrays *a);

/* The shared engine of rb_receive (take = 1), rb_receive_batch (take = max
 * records; lens/idxs arrays given) and rb_wait (take = 0). */
static int receive_or_wait(rb_seg *s, const char *blob, size_t blob_len, uint32_t count,
                           uint32_t take, char *buf, size_t cap, size_t *out_len,
                           uint32_t *out_index, uint32_t *lens, uint32_t *idxs, uint32_t *out_n,
                           int64_t timeout_ns, uint32_t spin_us)
{
    if (count <= RB_WAIT_MAX) {
        name_ref names[RB_WAIT_MAX];
        uint32_t ids[RB_WAIT_MAX], vals[RB_WAIT_MAX];
        uint32_t *words[RB_WAIT_MAX];
        wait_arrays a = {names, ids, vals, words};
        return receive_or_wait_in(s, blob, blob_len, count, take, buf, cap, out_len, out_index,
                                  lens, idxs, out_n, timeout_ns, spin_us, &a);
    }
    int r = rb_check_count(blob_len, count); /* bounds count before it sizes the arrays */
    if (r != RB_OK)
        return r;
    wait_arrays a;
    a.names = malloc((size_t)count * sizeof(name_ref));
    a.ids = malloc((size_t)count * sizeof(uint32_t));
    a.vals = malloc((size_t)count * sizeof(uint32_t));
    a.words = malloc((size_t)count * sizeof(uint32_t *));
    if (!a.names || !a.ids || !a.vals || !a.words)
        r = rb_fail(RB_E_SYS, "out of memory for a receive on %u queues", count);
    else
        r = receive_or_wait_in(s, blob, blob_len, count, take, buf, cap, out_len, out_index, lens,
                               idxs, out_n, timeout_ns, spin_us, &a);
    free(a.names);
    free(a.ids);
    free(a.vals);
    free(a.words);
    return r;
}

RB_HOT_INLINE int receive_or_wait_in(rb_seg *s, const char *blob, size_t blob_len, uint32_t count,
                              uint32_t take, char *buf, size_t cap, size_t *out_len,
                              uint32_t *out_index, uint32_t *lens, uint32_t *idxs,
                              uint32_t *out_n, int64_t timeout_ns, uint32_t spin_us,
                              wait_arrays *a)
{
    name_ref *names = a->names;
    uint32_t *ids = a->ids, *vals = a->vals;
    uint32_t **words = a->words;
    int r = rb_parse_names(blob, blob_len, count, names);
    if (r != RB_OK)
        return r;
    /* More queues than futex_waitv takes: sleep on the row's bell instead
     * of on the queues' words (see rb_waiter in internal.h). */
    const int bell = count > RB_WAIT_MAX;
    uint32_t bell_val = 0;
    /* Set from the first clock read under the lock: one clock_gettime per
     * call on the hot path (a record is there), not two. */
    uint64_t deadline = 0, spin_end = 0;
    int first = 1;
    int registered = 0;
    uint32_t row = 0;
    uint64_t token = 0;

    for (;;) {
        if ((r = rb_lock(s)) != RB_OK)
            return r;
        if (registered) {
            rb_waiter_unregister(s, row, token);
            registered = 0;
        }
        uint64_t now = rb_now_ns();
        if (first) {
            deadline = timeout_ns < 0 ? UINT64_MAX : now + (uint64_t)timeout_ns;
            spin_end = now + (uint64_t)spin_us * 1000ULL;
            first = 0;
        }
        uint32_t qid = RB_NIL;
        int idx = take > 1 ? pick_oldest(s, names, count, now, &qid, ids, PICK_FILL)
                           : pick_oldest(s, names, count, now, &qid, ids, PICK_FIND);
        if (idx >= 0) {
            if (!take) {
                /* rb_wait took the one wake a send gives without taking the
                 * record: pass it on, or another sleeper on this queue would
                 * only notice at the end of its bounded sleep. */
                int others = rb_slot_at(s, qid)->waiters > 0;
                rb_unlock(s);
                if (others)
                    rb_futex_wake(&s->slots[qid].seq, 1);
                return RB_OK;
            }
            /* Take records, oldest first across the listed queues, while
             * they fit: one for rb_receive, up to `take` for a batch. */
            size_t used = 0;
            uint32_t n = 0, wake_q = RB_NIL, bad = 0;
            for (;;) {
                rb_slot *q = rb_slot_at(s, qid);
                uint32_t rec = q->head;
                uint32_t len = rb_rec_at(s, rec)->len; /* <= max_record: live_head */
                if (used + len > cap) {
                    if (n > 0)
                        break;
                    rb_unlock(s);
                    if (out_len)
                        *out_len = len;
                    return rb_fail(RB_E_BUFSMALL,
                                   "record of %u bytes does not fit a %zu-byte buffer", len, cap);
                }
                if (RB_UNLIKELY(!record_read(s, rec, buf + used))) {
                    /* A poisoned record must not poison its receivers: drop
                     * it and go on to the next one and the other queues.
                     * Each drop removes a record, and the drops of one call
                     * are bounded all the same. */
                    if (++bad > RB_BAD_RECORDS_MAX ||
                        !drop_bad_head(s, q, "has a broken cell chain")) {
                        r = RB_E_CORRUPT;
                        break;
                    }
                } else {
                    pop_head(s, q);
                    s->hdr->received++;
                    if (lens) {
                        lens[n] = len;
                        idxs[n] = (uint32_t)idx;
                    } else {
                        *out_len = len;
                        if (out_index)
                            *out_index = (uint32_t)idx;
                    }
                    used += len;
                    n++;
                    /* Pass the baton: if records remain and somebody sleeps on
                     * this queue, wake one (the sender woke only one). */
                    if (q->head != RB_NIL && q->waiters > 0)
                        wake_q = qid;
                    if (n >= take)
                        break;
                }
                /* The ids resolved at the top of this hold (a batch fills
                 * them); after a drop - a repair ran, and a single receive
                 * never filled them - they are looked up again. */
                if ((idx = pick_oldest(s, names, count, rb_now_ns(), &qid, ids,
                                       bad ? PICK_FILL : PICK_CACHED)) < 0)
                    break;
            }
            if (n == 0) {
                /* Every record looked at was dropped: nothing taken, so
                 * wait on as if none had been there (or report the
                 * corruption that could not be repaired). */
                rb_unlock(s);
                if (r == RB_E_CORRUPT)
                    return rb_fail(RB_E_CORRUPT, "segment %s: receive found more than %d broken "
                                   "records in one call", s->prefix, RB_BAD_RECORDS_MAX);
                continue;
            }
            if (out_n)
                *out_n = n;
            rb_unlock(s);
            if (wake_q != RB_NIL)
                rb_futex_wake(&s->slots[wake_q].seq, 1);
            return RB_OK;
        }
        if (now >= deadline) {
            rb_unlock(s);
            /* A normal outcome, and the hot one when polling: no message. */
            return RB_E_EMPTY;
        }
        int spinning = now < spin_end;
        r = resolve_for_wait(s, names, count, ids, vals);
        if (r == RB_OK && !spinning) {
            r = rb_waiter_register(s, ids, count, bell ? RB_WAITER_BELL : RB_WAITER_FUTEX, 0,
                                   &row, &token);
            registered = r == RB_OK;
            /* Snapshotted under the lock hold that armed the row: a sender
             * rings it (bumps the word) only after this, so the sleep below
             * returns at once if one already did. */
            if (registered && bell)
                bell_val = RB_LOAD_RELAXED(&s->waiters[row].bell);
        }
        rb_unlock(s);
        if (r != RB_OK)
            return r;
        for (uint32_t i = 0; i < count; i++)
            words[i] = &s->slots[ids[i]].seq;

        if (spinning) {
            /* Busy-wait on the futex words without the lock: costs CPU but
             * no syscall, for latency-critical deployments. */
            uint64_t until = spin_end < deadline ? spin_end : deadline;
            for (uint32_t n = 0;; n++) {
                int changed = 0;
                for (uint32_t i = 0; i < count && !changed; i++)
                    changed = RB_LOAD_ACQUIRE(words[i]) != vals[i];
                if (changed)
                    break;
                rb_cpu_relax();
                if ((n & 63) == 0 && rb_now_ns() >= until)
                    break;
            }
            continue;
        }
        uint64_t wake_at = now + RB_MAX_SLEEP_NS;
        if (wake_at > deadline)
            wake_at = deadline;
        if (bell) {
            /* A bounded sleep that ends with the bell unrung means no
             * record reached a watched queue: every enqueue rings armed
             * rows under the lock hold that links it, and a sender killed
             * between the two dies holding the lock, so the repair rings
             * every bell (recover.c).  Sleep again without taking the lock
             * and re-walking the whole list: an idle receive on 5,000
             * queues then costs one futex syscall per RB_MAX_SLEEP_NS, not
             * a few milliseconds of lookups (and of lock hold).  Leave the
             * loop to look when the bell moved, the row is not ours any
             * more (dropped by a repair), the deadline came or a signal. */
            rb_waiter *wt = &s->waiters[row];
            uint32_t *bw = &wt->bell;
            for (;;) {
                r = rb_futex_wait_many(&bw, &bell_val, 1, wake_at);
                if (r != RB_OK || RB_LOAD_ACQUIRE(bw) != bell_val ||
                    RB_LOAD_ACQUIRE(&wt->pid) != rb_self_pid() ||
                    RB_LOAD_RELAXED(&wt->token) != token)
                    break;
                uint64_t t = rb_now_ns();
                if (t >= deadline)
                    break;
                wake_at = t + RB_MAX_SLEEP_NS < deadline ? t + RB_MAX_SLEEP_NS : deadline;
            }
        } else {
            r = rb_futex_wait_many(words, vals, count, wake_at);
        }
        if (r == RB_E_INTR) {
            if ((r = rb_lock(s)) != RB_OK)
                return r;
            rb_waiter_unregister(s, row, token);
            rb_unlock(s);
            return rb_fail(RB_E_INTR, "interrupted by a signal");
        }
        /* Woken, timed out or the word had already changed: loop and look. */
    }
}

int rb_receive(rb_seg *s, const char *names, size_t names_len, uint32_t count, char *buf,
               size_t cap, size_t *out_len, uint32_t *out_index, int64_t timeout_ns,
               uint32_t spin_us)
{
    if (buf == NULL && cap)
        return rb_fail(RB_E_INVAL, "buffer is NULL");
    if (out_len == NULL)
        return rb_fail(RB_E_INVAL, "out_len is NULL");
    return receive_or_wait(s, names, names_len, count, 1, buf, cap, out_len, out_index, NULL,
                           NULL, NULL, timeout_ns, spin_us);
}

int rb_receive_batch(rb_seg *s, const char *names, size_t names_len, uint32_t count, char *buf,
                     size_t cap, uint32_t *lens, uint32_t *idxs, uint32_t max, uint32_t *out_n,
                     size_t *out_len, int64_t timeout_ns, uint32_t spin_us)
{
    if (buf == NULL || lens == NULL || idxs == NULL || out_n == NULL || max == 0)
        return rb_fail(RB_E_INVAL, "receive_batch needs a buffer, lens/idxs arrays, out_n and max >= 1");
    *out_n = 0;
    return receive_or_wait(s, names, names_len, count, max, buf, cap, out_len, NULL, lens, idxs,
                           out_n, timeout_ns, spin_us);
}

int rb_wait(rb_seg *s, const char *names, size_t names_len, uint32_t count, int64_t timeout_ns,
            uint32_t spin_us)
{
    return receive_or_wait(s, names, names_len, count, 0, NULL, 0, NULL, NULL, NULL, NULL, NULL,
                           timeout_ns, spin_us);
}

int rb_queue_stats_get(rb_seg *s, const char *name, size_t name_len, rb_queue_stats *out)
{
    int r = rb_check_name("queue", name, name_len);
    if (r != RB_OK)
        return r;
    memset(out, 0, sizeof *out);
    uint64_t now = rb_now_ns();
    if ((r = rb_lock(s)) != RB_OK)
        return r;
    uint32_t qid = rb_table_find(s, RB_SLOT_QUEUE, 0, name, name_len);
    if (qid != RB_NIL) {
        rb_slot *q = rb_slot_at(s, qid);
        live_head(s, q, now);
        out->sent = q->sent;
        out->full = q->full;
        out->pending = q->count;
        out->capacity = q->capacity;
        out->waiters = q->waiters;
        if (q->head != RB_NIL) {
            uint64_t enq = rb_rec_at(s, q->head)->enq_ns;
            out->oldest_age_ns = now > enq ? now - enq : 0;
        }
    }
    rb_unlock(s);
    return RB_OK;
}
