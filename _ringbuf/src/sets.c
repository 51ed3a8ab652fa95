/*
 * sets.c - named sets of member names, each member with its own deadline,
 * and the fan-out send that puts one record into every live member's queue.
 *
 * A set is a SET slot; each member is a MEMBER slot whose primary fields are
 * its name, set_id and deadline.  The per-set member list (first_member,
 * next/prev_member, member_count) is derived: rb_repair() rebuilds it from
 * the member rows' set_id.
 *
 * Crash points: a member row is committed by its state store (after the SET
 * row exists); retiring a member stores FREE first.  A SET left with no
 * members by a dead process is dropped by the repair.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A member-list link read from shared memory (derived data): RB_NIL, or a
 * MEMBER row of set `sid`.  Checked at every step of every walk, with the
 * walk bounded by the table size: a broken list is corruption, repaired by
 * rebuilding the lists from the member rows' set_id (primary). */
static inline bool member_ok(const rb_seg *s, uint32_t m, uint32_t sid)
{
    return m == RB_NIL || RB_LIKELY(rb_slot_ok(s, m) && s->slots[m].state == RB_SLOT_MEMBER &&
                                    s->slots[m].set_id == sid &&
                                    s->slots[m].name_len - 1u < RB_NAME_MAX);
}

static void member_link(rb_seg *s, uint32_t set, uint32_t m)
{
    rb_slot *st = rb_slot_at(s, set), *ms = rb_slot_at(s, m);
    if (RB_UNLIKELY(!member_ok(s, st->first_member, set))) {
        /* The repair links every committed member row, this one too. */
        rb_corrupt(s, "set slot %u: first member %u is not one of its members", set,
                   st->first_member);
        return;
    }
    ms->prev_member = RB_NIL;
    ms->next_member = st->first_member;
    if (st->first_member != RB_NIL)
        rb_slot_at(s, st->first_member)->prev_member = m;
    st->first_member = m;
    st->member_count++;
}

/* Retire a member row, and its set when that was the last member.  The
 * links are checked before the commit; broken ones are rebuilt first. */
void rb_member_unlink(rb_seg *s, uint32_t m)
{
    rb_slot *ms = rb_slot_at(s, m);
    uint32_t set = ms->set_id;
    if (RB_UNLIKELY(!rb_slot_ok(s, set) || s->slots[set].state != RB_SLOT_SET ||
                    s->slots[set].member_count == 0 || !member_ok(s, ms->prev_member, set) ||
                    !member_ok(s, ms->next_member, set) ||
                    (ms->prev_member == RB_NIL && s->slots[set].first_member != m))) {
        rb_corrupt(s, "member slot %u of set %u: its list links (prev %u, next %u) are broken", m,
                   set, ms->prev_member, ms->next_member);
        if (ms->state != RB_SLOT_MEMBER)
            return; /* the repair dropped the row (its set was not a set) */
    }
    rb_slot *st = rb_slot_at(s, set);
    uint32_t prev = ms->prev_member, next = ms->next_member;
    rb_table_remove(s, m); /* COMMIT: the member is gone (state FREE) */
    if (prev != RB_NIL)
        rb_slot_at(s, prev)->next_member = next;
    else
        st->first_member = next;
    if (next != RB_NIL)
        rb_slot_at(s, next)->prev_member = prev;
    st->member_count--;
    if (st->member_count == 0)
        rb_table_remove(s, set);
}

static int check_pair(const char *set, size_t set_len, const char *member, size_t member_len)
{
    int r = rb_check_name("set", set, set_len);
    if (r == RB_OK && member)
        r = rb_check_name("member", member, member_len);
    return r;
}

int rb_set_add_member(rb_seg *s, const char *set, size_t set_len, const char *member,
                      size_t member_len, size_t queue_len, uint32_t capacity,
                      uint64_t deadline_ns)
{
    int r = check_pair(set, set_len, member, member_len);
    if (r != RB_OK)
        return r;
    /* The tag goes into fan-out frames: at most RB_FRAME_TAG_MAX bytes, so
     * that its length byte is never the group mark or a payload's first
     * byte (the record format, ringbuf.h). */
    if (queue_len == 0 || queue_len > member_len || member_len - queue_len > RB_FRAME_TAG_MAX)
        return rb_fail(RB_E_INVAL,
                       "member %.*s: queue_len %zu must be 1..%zu and leave a tag of at most %d bytes "
                       "(record format %d)",
                       (int)(member_len > 100 ? 100 : member_len), member, queue_len, member_len,
                       RB_FRAME_TAG_MAX, RB_RECORD_FORMAT);
    if ((r = rb_lock(s)) != RB_OK)
        return r;
    uint32_t sid = rb_table_find(s, RB_SLOT_SET, 0, set, set_len);
    if (sid == RB_NIL)
        r = rb_table_create(s, RB_SLOT_SET, 0, set, set_len, 0, &sid);
    if (r == RB_OK) {
        uint32_t m = rb_table_find(s, RB_SLOT_MEMBER, sid, member, member_len);
        if (m != RB_NIL) {
            rb_slot_at(s, m)->deadline = deadline_ns; /* re-add refreshes the deadline */
            rb_slot_at(s, m)->queue_len = (uint32_t)queue_len;
            rb_slot_at(s, m)->capacity = capacity;
        } else {
            r = rb_table_create(s, RB_SLOT_MEMBER, sid, member, member_len, deadline_ns, &m);
            if (r == RB_OK) {
                /* Primary, but written after the commit: a member whose
                 * queue_len is 0 (killed right here) routes to its whole
                 * name, see member_queue_len(), and one whose capacity is
                 * still 0 falls back to the queue's or the fan-out's. */
                rb_slot_at(s, m)->queue_len = (uint32_t)queue_len;
                rb_slot_at(s, m)->capacity = capacity;
                member_link(s, sid, m);
            } else if (rb_slot_at(s, sid)->member_count == 0) {
                rb_table_remove(s, sid);
            }
        }
    }
    rb_unlock(s);
    return r;
}

int rb_set_discard(rb_seg *s, const char *set, size_t set_len, const char *member,
                   size_t member_len)
{
    int r = check_pair(set, set_len, member, member_len);
    if (r != RB_OK)
        return r;
    if ((r = rb_lock(s)) != RB_OK)
        return r;
    uint32_t sid = rb_table_find(s, RB_SLOT_SET, 0, set, set_len);
    if (sid != RB_NIL) {
        uint32_t m = rb_table_find(s, RB_SLOT_MEMBER, sid, member, member_len);
        if (m != RB_NIL)
            rb_member_unlink(s, m);
    }
    rb_unlock(s);
    return RB_OK;
}

/* Under the lock: the set's id after dropping its expired members, or RB_NIL. */
static uint32_t live_set(rb_seg *s, const char *set, size_t set_len, uint64_t now)
{
    uint32_t sid = rb_table_find(s, RB_SLOT_SET, 0, set, set_len);
    if (sid == RB_NIL)
        return RB_NIL;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t m = rb_slot_at(s, sid)->first_member, steps = 0;
        while (m != RB_NIL && member_ok(s, m, sid) && steps++ < s->slot_count) {
            rb_slot *ms = rb_slot_at(s, m);
            uint32_t next = ms->next_member;
            if (ms->deadline && ms->deadline <= now) {
                int last = rb_slot_at(s, sid)->member_count == 1;
                rb_member_unlink(s, m);
                if (last)
                    return RB_NIL;
            }
            m = next;
        }
        if (RB_LIKELY(m == RB_NIL))
            return sid;
        rb_corrupt(s, "set %.*s: member list %s at slot %u", (int)(set_len > 100 ? 100 : set_len),
                   set, steps >= s->slot_count ? "is a cycle" : "is broken", m);
        if (s->slots[sid].state != RB_SLOT_SET)
            return RB_NIL;
    }
    return sid;
}

static void put_name(char *buf, size_t off, const char *name, uint32_t len)
{
    buf[off] = (char)(len & 0xFF);
    buf[off + 1] = (char)(len >> 8);
    memcpy(buf + off + 2, name, len);
}

int rb_set_members(rb_seg *s, const char *set, size_t set_len, char *buf, size_t cap,
                   size_t *out_len, uint32_t *out_count)
{
    int r = check_pair(set, set_len, NULL, 0);
    if (r != RB_OK)
        return r;
    uint64_t now = rb_now_ns();
    if ((r = rb_lock(s)) != RB_OK)
        return r;
    uint32_t sid = live_set(s, set, set_len, now);
    size_t need = 0;
    uint32_t count = 0;
    /* live_set walked (and if need be rebuilt) this list just now under
     * the same lock hold; the checks stay, for the bound's sake. */
    uint32_t m = sid == RB_NIL ? RB_NIL : rb_slot_at(s, sid)->first_member;
    for (; m != RB_NIL && member_ok(s, m, sid) && count < s->slot_count;
         m = rb_slot_at(s, m)->next_member) {
        rb_slot *ms = rb_slot_at(s, m);
        uint32_t nl = ms->name_len <= RB_NAME_MAX ? ms->name_len : RB_NAME_MAX;
        if (buf && need + 2 + nl <= cap)
            put_name(buf, need, ms->name, nl);
        need += 2 + nl;
        count++;
    }
    if (RB_UNLIKELY(m != RB_NIL)) {
        r = rb_corrupt(s, "set %.*s: member list is broken at slot %u",
                       (int)(set_len > 100 ? 100 : set_len), set, m);
        rb_unlock(s);
        return r;
    }
    rb_unlock(s);
    *out_len = need;
    if (out_count)
        *out_count = count;
    if (need > cap)
        return rb_fail(RB_E_BUFSMALL, "set members need %zu bytes, buffer has %zu", need, cap);
    return RB_OK;
}

int rb_list_names(rb_seg *s, int kind, char *buf, size_t cap, size_t *out_len,
                  uint32_t *out_count)
{
    if (kind != RB_KIND_QUEUE && kind != RB_KIND_SET)
        return rb_fail(RB_E_INVAL, "kind must be RB_KIND_QUEUE or RB_KIND_SET, got %d", kind);
    uint32_t want = kind == RB_KIND_QUEUE ? RB_SLOT_QUEUE : RB_SLOT_SET;
    int r = rb_lock(s);
    if (r != RB_OK)
        return r;
    size_t need = 0;
    uint32_t count = 0;
    for (uint32_t i = 0, hi = rb_slot_hi(s); i < hi; i++) {
        rb_slot *sl = &s->slots[i];
        if (sl->state != want)
            continue;
        if (RB_UNLIKELY(sl->name_len - 1u >= RB_NAME_MAX)) {
            rb_corrupt(s, "slot %u has a name of %u bytes", i, sl->name_len); /* retired */
            continue;
        }
        if (buf && need + 2 + sl->name_len <= cap)
            put_name(buf, need, sl->name, sl->name_len);
        need += 2 + sl->name_len;
        count++;
    }
    rb_unlock(s);
    *out_len = need;
    if (out_count)
        *out_count = count;
    if (need > cap)
        return rb_fail(RB_E_BUFSMALL, "names need %zu bytes, buffer has %zu", need, cap);
    return RB_OK;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t member_queue_len(const rb_slot *ms)
{
    return ms->queue_len == 0 || ms->queue_len > ms->name_len ? ms->name_len : ms->queue_len;
}

/* A member whose tag cannot be framed (only a row written past
 * rb_set_add_member's check, i.e. a damaged one) is skipped by tagged
 * fan-outs, never framed into an ambiguous length byte. */
static int unframeable(const rb_slot *ms)
{
    return ms->name_len - member_queue_len(ms) > RB_FRAME_TAG_MAX;
}

/* Under the lock: the queue a member's copies go to, created if missing
 * (which may GC other empty queues: see collect_grouped). */
static int member_queue(rb_seg *s, const rb_slot *ms, uint32_t *qid)
{
    uint32_t qlen = member_queue_len(ms);
    *qid = rb_table_find(s, RB_SLOT_QUEUE, 0, ms->name, qlen);
    if (*qid != RB_NIL)
        return RB_OK;
    return rb_table_create(s, RB_SLOT_QUEUE, 0, ms->name, qlen, 0, qid);
}

/* ---- grouped fan-out (tagged == RB_FANOUT_GROUPED) ------------------------
 *
 * Routed members of one process share its queue ("specific.<id>!a",
 * "specific.<id>!b", ...).  Copying the payload once per member made a
 * 100-member group of one process cost 100 record allocations, each pulling
 * cache lines the consumer had just freed on another core.  Grouped, the
 * members of one queue get ONE record carrying all their tags, the grouped
 * frame of the record format (ringbuf.h), or the single frame when a queue
 * has one member.  A record never exceeds max_record: a queue's members
 * are split over as many records as needed.  The capacity checked is the
 * first member's of the record (a process queue's members all state the
 * same one). */

typedef struct fan_item {
    uint32_t qid;
    uint32_t member;
    uint32_t order; /* set order: tags stay in it within a record */
} fan_item;

static int cmp_item(const void *a, const void *b)
{
    const fan_item *x = a, *y = b;
    if (x->qid != y->qid)
        return (x->qid > y->qid) - (x->qid < y->qid);
    return (x->order > y->order) - (x->order < y->order);
}

/* Under the lock: resolve every member's queue (creating missing ones) into
 * items[0..*n), counting unframeable members in *skipped.  The records are
 * enqueued only after the whole walk, and creating a queue may GC other
 * empty queues (table_gc), which would leave ids taken earlier in the walk
 * stale: the record of one process could land in a queue reused by
 * another, or on a FREE slot.  So the walk is repeated until one whole pass
 * ran without a GC (as resolve_for_wait does); a table that never settles
 * is back-pressure: every member is skipped. */
static void collect_grouped(rb_seg *s, uint32_t sid, fan_item *items, uint32_t cap, uint32_t *n,
                            uint32_t *skipped)
{
    for (int attempt = 0; attempt < 4 && s->slots[sid].state == RB_SLOT_SET; attempt++) {
        uint32_t epoch = s->hdr->gc_epoch, count = 0, skip = 0, order = 0, steps = 0;
        /* live_set checked every link in this lock hold; a repair on the way
         * (it rebuilds the lists) moves the epoch, so the walk is redone.
         * Bounded by the member count all the same. */
        for (uint32_t m = rb_slot_at(s, sid)->first_member; m != RB_NIL;
             m = rb_slot_at(s, m)->next_member) {
            if (RB_UNLIKELY(steps++ >= cap)) {
                rb_corrupt(s, "set slot %u: member list is longer than its count %u", sid, cap);
                break;
            }
            rb_slot *ms = rb_slot_at(s, m);
            uint32_t qid;
            int e = member_queue(s, ms, &qid);
            if (e != RB_OK || unframeable(ms) || count >= cap)
                skip++;
            else
                items[count++] = (fan_item){qid, m, order++};
        }
        if (epoch == s->hdr->gc_epoch) {
            *n = count;
            *skipped += skip;
            return;
        }
    }
    *n = 0;
    *skipped += s->slots[sid].state == RB_SLOT_SET ? s->slots[sid].member_count : 0;
}

/* Under the lock: enqueue the grouped records of items[0..n) (sorted).
 * Adds to *sent / *skipped per member and records queues to wake. */
static void enqueue_grouped(rb_seg *s, fan_item *items, uint32_t n, char *frame,
                            const char *data, size_t len, uint64_t deadline_ns, uint64_t now,
                            uint32_t capacity, uint32_t *wake, uint32_t *nwake,
                            uint32_t *sent, uint32_t *skipped)
{
    size_t room = s->max_record - len; /* >= 256: checked by the caller */
    uint32_t i = 0;
    while (i < n) {
        uint32_t qid = items[i].qid;
        /* Greedy chunk of this queue's members that fits one record. */
        size_t frame_len = 3;
        uint32_t j = i;
        while (j < n && items[j].qid == qid && j - i < 0xffff) {
            rb_slot *ms = rb_slot_at(s, items[j].member);
            size_t tag = ms->name_len - member_queue_len(ms);
            if (frame_len + 1 + tag > room)
                break;
            frame_len += 1 + tag;
            j++;
        }
        if (j == i)
            j = i + 1; /* one member always fits (single frame <= RB_FRAME_RESERVE <= room) */
        uint32_t k = j - i;
        if (k == 1) {
            rb_slot *ms = rb_slot_at(s, items[i].member);
            uint32_t qlen = member_queue_len(ms);
            frame[0] = (char)(ms->name_len - qlen);
            memcpy(frame + 1, ms->name + qlen, ms->name_len - qlen);
            frame_len = 1 + ms->name_len - qlen;
        } else {
            frame[0] = (char)RB_FRAME_GROUP_MARK;
            frame[1] = (char)(k & 0xff);
            frame[2] = (char)(k >> 8);
            frame_len = 3;
            for (uint32_t m = i; m < j; m++) {
                rb_slot *ms = rb_slot_at(s, items[m].member);
                uint32_t qlen = member_queue_len(ms);
                frame[frame_len] = (char)(ms->name_len - qlen);
                memcpy(frame + frame_len + 1, ms->name + qlen, ms->name_len - qlen);
                frame_len += 1 + ms->name_len - qlen;
            }
        }
        rb_slot *first = rb_slot_at(s, items[i].member);
        rb_slot *q = rb_slot_at(s, qid);
        uint32_t cap = first->capacity ? first->capacity : q->capacity ? 0 : capacity;
        if (rb_enqueue_locked(s, qid, frame, frame_len, data, len, deadline_ns, now, cap) == RB_OK) {
            *sent += k;
            if (q->waiters && (*nwake == 0 || wake[*nwake - 1] != qid))
                wake[(*nwake)++] = qid;
        } else {
            *skipped += k;
        }
        i = j;
    }
}

int rb_fanout_tagged(rb_seg *s, const char *set, size_t set_len, const char *data, size_t len,
                     uint64_t deadline_ns, uint32_t capacity, int tagged, uint32_t *out_sent,
                     uint32_t *out_skipped)
{
    int r = check_pair(set, set_len, NULL, 0);
    if (r != RB_OK)
        return r;
    if (tagged != RB_FANOUT_PLAIN && tagged != RB_FANOUT_TAGGED && tagged != RB_FANOUT_GROUPED)
        return rb_fail(RB_E_INVAL, "tagged must be RB_FANOUT_PLAIN, _TAGGED or _GROUPED, got %d",
                       tagged);
    size_t reserve = tagged ? RB_FRAME_RESERVE : 0;
    if (len + reserve > s->max_record)
        return rb_fail(RB_E_TOOLARGE, "record of %zu bytes (+%zu for a tag) exceeds the segment's "
                       "max_record of %u bytes", len, reserve, s->max_record);
    uint64_t now = rb_now_ns();
    uint32_t sent = 0, skipped = 0;
    int grouped = tagged == RB_FANOUT_GROUPED;
    /* Queues to wake after unlocking (waking under the lock would make the
     * wakee contend for it at once).  Spill to the heap for big sets. */
    uint32_t stack_wake[128];
    uint32_t *wake = stack_wake, nwake = 0;
    rb_pokes pokes; /* FD watchers to poke after unlocking (watch.c) */
    rb_pokes_init(&pokes);
    if ((r = rb_lock(s)) != RB_OK)
        return r;
    uint32_t sid = live_set(s, set, set_len, now);
    /* member_count (derived) sizes the buffers below and bounds the walks:
     * a list longer than it is corruption, found by the walks. */
    if (RB_UNLIKELY(sid != RB_NIL && s->slots[sid].member_count > s->slot_count)) {
        rb_corrupt(s, "set %.*s counts %u members in a table of %u rows",
                   (int)(set_len > 100 ? 100 : set_len), set, s->slots[sid].member_count,
                   s->slot_count);
        if (s->slots[sid].state != RB_SLOT_SET)
            sid = RB_NIL;
    }
    uint32_t members = sid == RB_NIL ? 0 : rb_slot_at(s, sid)->member_count;
    fan_item *items = NULL;
    char *frame_buf = NULL;
    if (members > 128 || (grouped && members)) {
        if (members > 128)
            wake = malloc(sizeof(uint32_t) * members);
        if (grouped) {
            items = malloc(sizeof(fan_item) * members);
            /* The largest frame: the mark, a count and 0xffff framed tags. */
            frame_buf = malloc(3 + (size_t)(members < 0xffff ? members : 0xffff) *
                                       (1 + RB_FRAME_TAG_MAX));
        }
        if (!wake || (grouped && (!items || !frame_buf))) {
            rb_unlock(s);
            if (wake != stack_wake)
                free(wake);
            free(items);
            free(frame_buf);
            return rb_fail(RB_E_SYS, "out of memory for %u members", members);
        }
    }
    uint32_t nitems = 0;
    if (grouped && sid != RB_NIL)
        collect_grouped(s, sid, items, members, &nitems, &skipped);
    /* live_set checked every link of this list in this lock hold, and only
     * a repair changes member lists here (a queue created on the way may
     * GC empty queues, never member rows).  A repair during the walk
     * (corruption found by an enqueue) rebuilds the lists under it: the walk
     * stops there rather than follow a list that changed (a member could get
     * two copies).  The walk is bounded by the member count all the same. */
    uint64_t corruptions = s->hdr->corruptions;
    uint32_t steps = 0;
    for (uint32_t m = grouped || sid == RB_NIL ? RB_NIL : rb_slot_at(s, sid)->first_member;
         m != RB_NIL; m = rb_slot_at(s, m)->next_member) {
        if (RB_UNLIKELY(steps++ >= members || s->hdr->corruptions != corruptions)) {
            if (s->hdr->corruptions == corruptions)
                rb_corrupt(s, "set %.*s: member list is longer than its count %u",
                           (int)(set_len > 100 ? 100 : set_len), set, members);
            skipped++;
            break;
        }
        rb_slot *ms = rb_slot_at(s, m);
        uint32_t qlen = member_queue_len(ms);
        uint32_t qid;
        int e = member_queue(s, ms, &qid);
        if (e == RB_OK) {
            rb_slot *q = rb_slot_at(s, qid);
            /* The single frame (record format, ringbuf.h): one length
             * byte, then the name's tail. */
            char frame[1 + RB_FRAME_TAG_MAX];
            size_t frame_len = 0;
            if (tagged && unframeable(ms)) {
                skipped++;
                continue;
            }
            if (tagged) {
                frame[0] = (char)(ms->name_len - qlen);
                memcpy(frame + 1, ms->name + qlen, ms->name_len - qlen);
                frame_len = 1 + ms->name_len - qlen;
            }
            /* The member's own capacity (stated by its rb_set_add_member,
             * and stored on the queue like a send's), else the queue's
             * stored capacity, else the fan-out's default. */
            uint32_t cap = ms->capacity ? ms->capacity : q->capacity ? 0 : capacity;
            e = rb_enqueue_locked(s, qid, frame, frame_len, data, len, deadline_ns, now, cap);
        }
        if (e != RB_OK) {
            skipped++;
            continue;
        }
        sent++;
        if (rb_slot_at(s, qid)->waiters)
            wake[nwake++] = qid;
    }
    if (grouped && nitems) {
        qsort(items, nitems, sizeof *items, cmp_item);
        enqueue_grouped(s, items, nitems, frame_buf, data, len, deadline_ns, now, capacity, wake,
                        &nwake, &sent, &skipped);
    }
    free(items);
    free(frame_buf);
    /* Routed members of one process share its queue: wake each queue once,
     * not once per copy.  Sorting groups the copies of a queue, so each
     * queue's FD rows are collected with one scan of the waiter table (a
     * scan per copy cost a 100-member group of one process ~25 us) and its
     * futex is woken with one syscall.  Still under the lock: collecting
     * disarms rows, which only a lock holder may do (watch.c). */
    if (nwake > 1)
        qsort(wake, nwake, sizeof *wake, cmp_u32);
    uint32_t nfutex = 0;
    for (uint32_t i = 0; i < nwake; i++) {
        if (i && wake[i] == wake[i - 1])
            continue;
        rb_slot *wq = rb_slot_at(s, wake[i]);
        if (wq->fd_watchers)
            rb_watch_collect(s, wake[i], &pokes); /* disarms each row: one poke per arm */
        if (wq->waiters > wq->fd_watchers)
            wake[nfutex++] = wake[i]; /* in place: nfutex <= i */
    }
    rb_unlock(s);
    rb_watch_poke_all(s, &pokes);
    for (uint32_t i = 0; i < nfutex; i++)
        rb_futex_wake(&s->slots[wake[i]].seq, 1);
    if (wake != stack_wake)
        free(wake);
    if (out_sent)
        *out_sent = sent;
    if (out_skipped)
        *out_skipped = skipped;
    return RB_OK;
}
