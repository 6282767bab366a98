/*
 * Known-behaviour workload for headroom's hardening tests: a process with very many mappings.
 *
 * Reserves MAPPINGS pages with PROT_NONE and makes every other page readable, so the kernel
 * keeps each page a mapping of its own (about MAPPINGS entries in /proc/PID/maps, ~60 MB of
 * /proc/PID/smaps at 60,000), starts THREADS - 1 more threads (pthread stacks: a guard and a
 * stack each, the layout the agent's thread-stack heuristic finds), prints "ready" and lives
 * SECONDS seconds.
 *
 * Usage: many_mappings MAPPINGS THREADS SECONDS
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void fail(const char *what) {
    write(2, what, strlen(what));
    write(2, "\n", 1);
    _exit(2);
}

static void *worker(void *arg) {
    unsigned seconds = *(unsigned *)arg;
    sleep(seconds);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) fail("usage: many_mappings MAPPINGS THREADS SECONDS");
    long mappings = atol(argv[1]);
    int threads = atoi(argv[2]);
    unsigned seconds = (unsigned)atoi(argv[3]);
    if (mappings < 0 || mappings > 1000000 || threads < 1 || threads > 64) fail("argument out of range");
    long page = sysconf(_SC_PAGESIZE);
    if (mappings > 0) {
        char *base = mmap(NULL, (size_t)mappings * (size_t)page, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED) fail("mmap");
        for (long i = 0; i < mappings; i += 2) {
            if (mprotect(base + i * page, (size_t)page, PROT_READ) != 0) fail("mprotect (vm.max_map_count?)");
        }
    }
    pthread_t ids[64];
    for (int i = 1; i < threads; i++) {
        if (pthread_create(&ids[i], NULL, worker, &seconds) != 0) fail("pthread_create");
    }
    printf("ready\n");
    fflush(stdout);
    sleep(seconds);
    return 0;
}
