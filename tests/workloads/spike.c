/*
 * A steady base with one short spike, for checking that headroom catches spikes no 15-second
 * metric would show.
 *
 * Usage: spike BASE_MIB SPIKE_MIB SPIKE_MS BEFORE_MS AFTER_MS
 * Touches BASE_MIB and holds it; after BEFORE_MS (or, if BEFORE_MS is -1, once a line arrives on
 * stdin: a test's "the capture is ready") touches SPIKE_MIB more, holds it SPIKE_MS,
 * releases it, and exits AFTER_MS later. Prints what it did (how long the spike really lasted,
 * touching included) and its VmHWM, one `key value` per line.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void touch(char *memory, size_t bytes) {
    volatile char *page = memory;
    for (size_t offset = 0; offset < bytes; offset += 4096) page[offset] = 1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static char *map(size_t bytes) {
    char *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return memory;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: spike BASE_MIB SPIKE_MIB SPIKE_MS BEFORE_MS AFTER_MS\n");
        return 2;
    }
    size_t base = (size_t)atol(argv[1]) << 20, spike = (size_t)atol(argv[2]) << 20;
    long spike_ms = atol(argv[3]), before_ms = atol(argv[4]), after_ms = atol(argv[5]);
    char *base_memory = map(base);
    touch(base_memory, base);
    if (before_ms < 0) {
        char go[16];
        if (!fgets(go, sizeof go, stdin)) {
            fprintf(stderr, "spike: stdin closed before the go line\n");
            return 2;
        }
    } else {
        sleep_ms(before_ms);
    }
    struct timespec spike_start, spike_end;
    clock_gettime(CLOCK_MONOTONIC, &spike_start);
    char *spike_memory = map(spike);
    touch(spike_memory, spike);
    sleep_ms(spike_ms);
    munmap(spike_memory, spike);
    clock_gettime(CLOCK_MONOTONIC, &spike_end);
    sleep_ms(after_ms);
    long spike_lasted_ms = (spike_end.tv_sec - spike_start.tv_sec) * 1000 +
                           (spike_end.tv_nsec - spike_start.tv_nsec) / 1000000;
    printf("base_bytes %zu\nspike_bytes %zu\nspike_lasted_ms %ld\n", base, spike, spike_lasted_ms);
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    while (status && fgets(line, sizeof line, status))
        if (strncmp(line, "VmHWM:", 6) == 0) printf("vm_hwm_kib %ld\n", atol(line + 6));
    if (status) fclose(status);
    return 0;
}
