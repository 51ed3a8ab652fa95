/*
 * wait.c - futex sleep and wake on the per-queue sequence words.
 *
 * The segment is MAP_SHARED across processes, so no FUTEX_PRIVATE_FLAG /
 * FUTEX2_PRIVATE: the kernel keys these futexes by (inode, offset).
 *
 * A receiver watching several queues sleeps on all of their words at once
 * with futex_waitv(2) (Linux 5.16+): a send to queue Q wakes only sleepers
 * that watch Q - no thundering herd, no polling.  On older kernels
 * (ENOSYS) a multi-queue wait falls back to sleeping on the first word for
 * at most RB_FALLBACK_SLEEP_NS at a time, and the caller re-checks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02
#endif

#define RB_FALLBACK_SLEEP_NS 5000000ULL

void rb_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

void rb_futex_wake(uint32_t *word, int n)
{
    syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

static int waitv_missing;

static struct timespec abs_ts(uint64_t ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000ULL);
    ts.tv_nsec = (long)(ns % 1000000000ULL);
    return ts;
}

/* Sleep until one word differs from its value, a wake, a signal or the
 * absolute CLOCK_MONOTONIC deadline.  Returns RB_OK, or RB_E_INTR on a
 * signal (so the binding can run Python's signal handlers). */
int rb_futex_wait_many(uint32_t **words, const uint32_t *vals, uint32_t n, uint64_t abs_deadline_ns)
{
    long r;
    /* Callers pass at most RB_WAIT_MAX words: a receive on more queues
     * sleeps on its row's one bell word instead (queue.c). */
    if (n > RB_WAIT_MAX)
        n = RB_WAIT_MAX;
    if (n > 1 && !__atomic_load_n(&waitv_missing, __ATOMIC_RELAXED)) {
        struct futex_waitv wv[RB_WAIT_MAX];
        for (uint32_t i = 0; i < n; i++) {
            wv[i].val = vals[i];
            wv[i].uaddr = (uint64_t)(uintptr_t)words[i];
            wv[i].flags = FUTEX2_SIZE_U32;
            wv[i].__reserved = 0;
        }
        struct timespec ts = abs_ts(abs_deadline_ns);
        r = syscall(SYS_futex_waitv, wv, n, 0, &ts, CLOCK_MONOTONIC);
        if (r >= 0)
            return RB_OK;
        if (errno == ENOSYS) {
            __atomic_store_n(&waitv_missing, 1, __ATOMIC_RELAXED);
        } else {
            return errno == EINTR ? RB_E_INTR : RB_OK; /* EAGAIN / ETIMEDOUT: caller re-checks */
        }
    }
    uint64_t now = rb_now_ns();
    if (n > 1 && abs_deadline_ns > now + RB_FALLBACK_SLEEP_NS)
        abs_deadline_ns = now + RB_FALLBACK_SLEEP_NS;
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. */
    struct timespec ts = abs_ts(abs_deadline_ns);
    r = syscall(SYS_futex, words[0], FUTEX_WAIT_BITSET, vals[0], &ts, NULL, FUTEX_BITSET_MATCH_ANY);
    if (r != 0 && errno == EINTR)
        return RB_E_INTR;
    return RB_OK;
}
