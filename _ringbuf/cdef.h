/* cdef.h - the C API as cffi's cdef() parses it (declarations only; every
 * value comes from include/ringbuf.h at build time through "...").  Keep in
 * step with include/ringbuf.h. */
#define RB_MAGIC ...
#define RB_LAYOUT_VERSION ...
#define RB_RECORD_FORMAT ...
#define RB_FRAME_TAG_MAX ...
#define RB_FRAME_GROUP_MARK ...
#define RB_FRAME_NONE_MIN ...
#define RB_FRAME_RESERVE ...
#define RB_FANOUT_PLAIN ...
#define RB_FANOUT_TAGGED ...
#define RB_NAME_MAX ...
#define RB_WAIT_MAX ...
#define RB_MAX_SLEEP_NS ...
#define RB_DEFAULT_SIZE ...
#define RB_DEFAULT_MAX_RECORD ...
#define RB_DEFAULT_SLOTS ...
#define RB_DEFAULT_WAITERS ...
#define RB_CELL_SIZE ...
#define RB_OK ...
#define RB_E_EMPTY ...
#define RB_E_FULL ...
#define RB_E_NOMEM ...
#define RB_E_TOOLARGE ...
#define RB_E_NAME ...
#define RB_E_NOSLOT ...
#define RB_E_MAGIC ...
#define RB_E_VERSION ...
#define RB_E_SYS ...
#define RB_E_INVAL ...
#define RB_E_BUFSMALL ...
#define RB_E_NOTFOUND ...
#define RB_E_WAITERS ...
#define RB_E_CORRUPT ...
#define RB_E_BUSY ...
#define RB_E_INTR ...
#define RB_E_TRUST ...
#define RB_E_LOCKED ...
#define RB_DEFAULT_LOCK_TIMEOUT_NS ...
#define RB_TRUSTED_MAX ...
#define RB_KIND_QUEUE ...
#define RB_KIND_SET ...

typedef struct rb_seg rb_seg;

typedef struct rb_options {
    uint64_t size;
    uint32_t mode;
    uint32_t max_record;
    uint32_t slots;
    uint32_t waiters;
    int32_t create;
    uint32_t n_trusted;
    const uint32_t *trusted_uids;
    uint64_t lock_timeout_ns;
    ...;
} rb_options;

typedef struct rb_info {
    uint64_t magic;
    uint32_t version;
    uint32_t max_record;
    uint64_t size;
    uint32_t cell_size;
    uint32_t cells_total;
    uint32_t cells_free;
    uint32_t slots_total;
    uint32_t slots_used;
    uint32_t waiters_total;
    uint32_t waiters_used;
    uint32_t queues;
    uint32_t sets;
    uint32_t members;
    uint64_t sent;
    uint64_t received;
    uint64_t full;
    uint64_t expired;
    uint64_t repairs;
    uint64_t dropped;
    uint64_t corruptions;
    uint64_t created_ns;
    uint32_t creator_pid;
    uint32_t record_format;
    ...;
} rb_info;

typedef struct rb_queue_stats {
    uint64_t sent;
    uint64_t full;
    uint64_t pending;
    uint64_t oldest_age_ns;
    uint32_t capacity;
    uint32_t waiters;
    ...;
} rb_queue_stats;

typedef void (*rb_log_fn)(const char *msg);
void rb_set_log_hook(rb_log_fn fn);
/* The binding's hook: findings go to the `_ringbuf` logger. */
extern "Python" void _rb_log_to_python(const char *msg);

int rb_open(const char *prefix, const rb_options *opts, rb_seg **out);
void rb_close(rb_seg *seg);
int rb_unlink(const char *prefix, int force);
int rb_stat_segment(const char *prefix, rb_info *out);
int rb_info_get(rb_seg *seg, rb_info *out);
int rb_attached(const char *prefix);
const char *rb_last_error(void);
uint64_t rb_now_ns(void);
uint32_t rb_last_lock_holder(char *state, size_t cap);
int rb_debug_lock(rb_seg *seg);
void rb_debug_unlock(rb_seg *seg);
void rb_limits(rb_seg *seg, uint32_t *out_max_record, uint64_t *out_size);

int rb_send(rb_seg *seg, const char *name, size_t name_len, const char *data,
            size_t len, uint64_t deadline_ns, uint32_t capacity);
int rb_send_tagged(rb_seg *seg, const char *name, size_t name_len, const char *tag,
                   size_t tag_len, const char *data, size_t len, uint64_t deadline_ns,
                   uint32_t capacity);
/* Enqueue n records (record i is lens[i] bytes, back to back in data) in
 * one lock hold.  Stops at the first refusal (full, out of memory) and
 * returns its code; *out_sent says how many went in, in order. */
int rb_send_batch(rb_seg *seg, const char *name, size_t name_len, const char *data,
                  const uint32_t *lens, uint32_t n, uint64_t deadline_ns, uint32_t capacity,
                  uint32_t *out_sent);
int rb_receive(rb_seg *seg, const char *names, size_t names_len, uint32_t count,
               char *buf, size_t cap, size_t *out_len, uint32_t *out_index,
               int64_t timeout_ns, uint32_t spin_us);
/* Take up to `max` records (oldest first across the queues) in one lock
 * hold: record i is lens[i] bytes at the running offset in buf, from queue
 * names[idxs[i]]; *out_n says how many.  Blocks like rb_receive for the
 * first.  A receiver killed mid-batch loses the batch, not one record: the
 * price of the throughput. */
int rb_receive_batch(rb_seg *seg, const char *names, size_t names_len, uint32_t count,
                     char *buf, size_t cap, uint32_t *lens, uint32_t *idxs, uint32_t max,
                     uint32_t *out_n, size_t *out_len, int64_t timeout_ns, uint32_t spin_us);
int rb_wait(rb_seg *seg, const char *names, size_t names_len, uint32_t count,
            int64_t timeout_ns, uint32_t spin_us);
int rb_queue_stats_get(rb_seg *seg, const char *name, size_t name_len,
                       rb_queue_stats *out);

int rb_set_add_member(rb_seg *seg, const char *set, size_t set_len,
                      const char *member, size_t member_len, size_t queue_len,
                      uint32_t capacity, uint64_t deadline_ns);
int rb_set_discard(rb_seg *seg, const char *set, size_t set_len,
                   const char *member, size_t member_len);
int rb_set_members(rb_seg *seg, const char *set, size_t set_len, char *buf,
                   size_t cap, size_t *out_len, uint32_t *out_count);
#define RB_FANOUT_GROUPED ...
int rb_fanout_tagged(rb_seg *seg, const char *set, size_t set_len, const char *data,
                     size_t len, uint64_t deadline_ns, uint32_t capacity, int tagged,
                     uint32_t *out_sent, uint32_t *out_skipped);

int rb_list_names(rb_seg *seg, int kind, char *buf, size_t cap, size_t *out_len,
                  uint32_t *out_count);
int rb_stats_reset(rb_seg *seg);
int rb_flush(rb_seg *seg);
int rb_recover(rb_seg *seg, uint32_t *out_swept);
int rb_check(rb_seg *seg, char *report, size_t cap);

int rb_watch_open(rb_seg *seg, const char *names, size_t names_len, uint32_t count,
                  int *out_fd, uint32_t *out_row, uint64_t *out_token);
int rb_watch_arm(rb_seg *seg, uint32_t row, uint64_t token);
int rb_watch_close(rb_seg *seg, uint32_t row, uint64_t token);
uint64_t rb_watch_seq(rb_seg *seg, uint32_t row, uint64_t token);

/* ---- the on-segment layout (src/internal.h), read-only introspection ----
 * For tools and for the corruption tests, which write a bad field at its
 * real offset in a segment file (ffi.offsetof / ffi.sizeof): only the fields
 * named here are visible and the compiler supplies every offset ("..."), so
 * nothing is hard-coded.  Never write a segment through these outside tests. */
#define RB_NIL ...
typedef struct rb_header {
    uint64_t magic;
    uint32_t version;
    uint32_t record_format;
    uint32_t header_size;
    uint32_t slot_size;
    uint32_t cell_size;
    uint64_t size;
    uint32_t max_record;
    uint32_t slot_count;
    uint32_t index_size;
    uint32_t waiter_count;
    uint32_t cell_count;
    uint64_t slots_off;
    uint64_t index_off;
    uint64_t waiters_off;
    uint64_t cells_off;
    uint32_t cell_free_head;
    uint32_t cell_free;
    uint32_t cell_bump;
    uint32_t slot_free_head;
    uint32_t slot_bump;
    uint32_t slots_used;
    uint32_t waiter_hi;
    uint64_t dropped;
    uint64_t corruptions;
    ...;
} rb_header;
typedef struct rb_slot {
    uint32_t state;
    uint32_t name_len;
    uint64_t hash;
    uint32_t next_free;
    uint32_t first_member;
    uint32_t member_count;
    uint32_t set_id;
    uint32_t next_member;
    uint32_t prev_member;
    char name[...];
    uint32_t head;
    uint32_t tail;
    uint32_t count;
    ...;
} rb_slot;
typedef struct rb_waiter {
    uint32_t pid;
    uint32_t n;
    uint32_t kind;
    uint32_t list;
    uint32_t slot[...];
    ...;
} rb_waiter;
typedef struct rb_rec {
    uint32_t next;
    uint32_t len;
    uint64_t deadline;
    ...;
} rb_rec;
typedef struct rb_cell {
    uint32_t next;
    unsigned char data[...];
    ...;
} rb_cell;
