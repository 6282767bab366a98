/*
 * One named function makes a short spike, for checking that headroom names the code that
 * made memory. Build with and without frame pointers.
 *
 * Usage: spike_source BASE_MIB SPIKE_MIB SPIKE_MS BEFORE_MS AFTER_MS
 * load_base_cache() touches BASE_MIB through malloc and holds it; after BEFORE_MS (or, if it
 * is -1, once a line arrives on stdin: a test's "the capture is ready"),
 * build_spike_cache() mallocs and touches SPIKE_MIB (glibc serves it with mmap), holds it
 * SPIKE_MS and frees it; the process exits AFTER_MS later.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* noinline keeps each function its own frame whatever the optimisation level. */
__attribute__((noinline)) static char *load_base_cache(size_t bytes) {
    char *memory = malloc(bytes);
    if (!memory) exit(2);
    memset(memory, 1, bytes);
    return memory;
}

__attribute__((noinline)) static char *build_spike_cache(size_t bytes) {
    char *memory = malloc(bytes);
    if (!memory) exit(2);
    /* Touch page by page from this function, so the faults happen in its own frame. */
    for (size_t offset = 0; offset < bytes; offset += 4096) ((volatile char *)memory)[offset] = 1;
    return memory;
}

__attribute__((noinline)) static void serve_burst(size_t bytes, long hold_ms) {
    char *cache = build_spike_cache(bytes);
    sleep_ms(hold_ms);
    free(cache);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: spike_source BASE_MIB SPIKE_MIB SPIKE_MS BEFORE_MS AFTER_MS\n");
        return 2;
    }
    size_t base = (size_t)atol(argv[1]) << 20, spike = (size_t)atol(argv[2]) << 20;
    char *base_memory = load_base_cache(base);
    long before_ms = atol(argv[4]);
    if (before_ms < 0) {
        char go[16];
        if (!fgets(go, sizeof go, stdin)) {
            fprintf(stderr, "spike_source: stdin closed before the go line\n");
            return 2;
        }
    } else {
        sleep_ms(before_ms);
    }
    serve_burst(spike, atol(argv[3]));
    sleep_ms(atol(argv[5]));
    printf("base_first_byte %d\n", base_memory[0]);
    return 0;
}
