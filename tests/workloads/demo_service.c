/*
 * headroom's demo workload: a small service with the memory behaviour that trips people up
 * when they size limits from averages.
 *
 *  1. Startup: warms a 300 MiB cache (malloc of 1 MiB blocks: glibc serves them with mmap),
 *     then keeps only 60 MiB of it. The startup peak is three times steady state.
 *  2. A 4 MiB shared statistics segment (MAP_SHARED).
 *  3. A pool of 12 worker threads. Each has a thread stack and, because it mallocs, its own
 *     glibc arena (a 64 MiB PROT_NONE reservation, barely used), and holds 3 MiB of session
 *     buffers: about 100 MiB in all at steady state.
 *  4. Requests (small allocations on the workers) for SECONDS, with one 48 MiB burst half way
 *     through: a spike that a 15-second metric would never see.
 *
 * Usage: demo_service [SECONDS]   (default 4)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 12
#define CACHE_BLOCKS 300
#define CACHE_KEPT 60
#define SESSION_BYTES (3u << 20)
#define BURST_BYTES (48u << 20)
#define BLOCK (1u << 20)

static double run_seconds = 4.0;
static atomic_long served;
static atomic_int burst_done;

/* Writes one byte per page through a volatile pointer: the compiler may not drop it, as it may
 * drop a memset into memory that is freed right after. */
static void touch(char *memory, size_t bytes, int value) {
    volatile char *page = memory;
    for (size_t offset = 0; offset < bytes; offset += 4096) page[offset] = (char)value;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *worker(void *arg) {
    long id = (long)arg;
    char *sessions = malloc(SESSION_BYTES);
    if (!sessions) return NULL;
    touch(sessions, SESSION_BYTES, (int)id);
    double start = now();
    while (now() - start < run_seconds) {
        char *request = malloc(32 * 1024);
        if (!request) break;
        touch(request, 32 * 1024, (int)id);
        free(request);
        atomic_fetch_add(&served, 1);
        if (id == 0 && !atomic_load(&burst_done) && now() - start > run_seconds / 2) {
            char *spike = malloc(BURST_BYTES);
            if (spike) {
                touch(spike, BURST_BYTES, 1);
                usleep(100 * 1000);
                free(spike);
            }
            atomic_store(&burst_done, 1);
        }
        usleep(500);
    }
    free(sessions);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) run_seconds = atof(argv[1]);
    if (run_seconds <= 0 || run_seconds > 3600) {
        fprintf(stderr, "usage: demo_service [SECONDS] (0 < SECONDS <= 3600)\n");
        return 2;
    }

    char *cache[CACHE_BLOCKS];
    for (int i = 0; i < CACHE_BLOCKS; i++) {
        cache[i] = malloc(BLOCK);
        if (!cache[i]) return 1;
        touch(cache[i], BLOCK, i);
    }
    usleep(300 * 1000);
    for (int i = CACHE_KEPT; i < CACHE_BLOCKS; i++) free(cache[i]);
    printf("demo_service: warmed a %d MiB cache, kept %d MiB\n", CACHE_BLOCKS, CACHE_KEPT);

    char *stats = mmap(NULL, 4u << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (stats == MAP_FAILED) return 1;
    touch(stats, 4u << 20, 0);

    pthread_t pool[WORKERS];
    for (long i = 0; i < WORKERS; i++)
        if (pthread_create(&pool[i], NULL, worker, (void *)i) != 0) return 1;
    for (int i = 0; i < WORKERS; i++) pthread_join(pool[i], NULL);

    printf("demo_service: served %ld requests with %d workers\n", atomic_load(&served), WORKERS);
    for (int i = 0; i < CACHE_KEPT; i++) free(cache[i]);
    munmap(stats, 4u << 20);
    return 0;
}
