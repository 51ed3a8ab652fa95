/*
 * futex_pingpong.c - the floor for a sleeping wake-up: two processes take
 * turns on a shared futex word, each sleeping in FUTEX_WAIT until the other
 * bumps the word and calls FUTEX_WAKE.  Prints round-trip nanoseconds, one
 * per line, for bench/core.py to summarise.  No queue, no lock, no Python:
 * what the kernel charges for "wake a sleeping process on another core and
 * get it back".
 *
 * usage: futex_pingpong ROUNDS CPU_A CPU_B
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

/* Wait until *w != old, sleeping in the kernel. */
static void wait_change(uint32_t *w, uint32_t old)
{
    while (__atomic_load_n(w, __ATOMIC_ACQUIRE) == old)
        syscall(SYS_futex, w, FUTEX_WAIT, old, NULL, NULL, 0);
}

static void bump_wake(uint32_t *w)
{
    __atomic_fetch_add(w, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s ROUNDS CPU_A CPU_B\n", argv[0]);
        return 2;
    }
    int rounds = atoi(argv[1]), cpu_a = atoi(argv[2]), cpu_b = atoi(argv[3]);
    uint32_t *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    uint32_t *ping = &w[0], *pong = &w[16]; /* separate cache lines */
    pid_t pid = fork();
    if (pid == 0) {
        pin(cpu_b);
        for (int i = 0; i < rounds; i++) {
            wait_change(ping, (uint32_t)i);
            bump_wake(pong);
        }
        _exit(0);
    }
    pin(cpu_a);
    usleep(20000); /* let the child reach its first sleep */
    for (int i = 0; i < rounds; i++) {
        uint64_t t0 = now_ns();
        bump_wake(ping);
        wait_change(pong, (uint32_t)i);
        printf("%llu\n", (unsigned long long)(now_ns() - t0));
        /* Give the peer time to fall asleep again, so every round measures
         * a real sleep -> wake, not a lucky spin. */
        usleep(200);
    }
    waitpid(pid, NULL, 0);
    return 0;
}
