/*
 * A JVM-like reservation, for the runtime scenarios (tests/privileged/sizing.rs): the JVM
 * reserves its whole max heap (-Xmx) as PROT_NONE address space at startup and commits it
 * as the heap grows. This program does the same, and touches only a little of it.
 *
 *   jvm_like [-Xmx<size> and other -options...] MAIN TOUCH_MIB HOLD_MS
 *
 * Leading arguments starting with '-' are options, as the java launcher takes them; -Xmx
 * (k, m or g suffix) sets the reservation (none without it). MAIN is ignored (a class name).
 * It commits and touches TOUCH_MIB of the reservation (or of a plain mapping without -Xmx),
 * prints `reserved_bytes`, `touched_bytes` and `hwm_bytes`, holds HOLD_MS and exits 0.
 * Run through a link named `java`, its argv[0] is what a JVM's is.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1UL << 20)

static size_t java_size(const char *text) {
    char *end;
    unsigned long long value = strtoull(text, &end, 10);
    switch (tolower((unsigned char)*end)) {
    case 'k': return value << 10;
    case 'm': return value << 20;
    case 'g': return value << 30;
    default: return value;
    }
}

static void print_hwm(void) {
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    while (status && fgets(line, sizeof line, status)) {
        if (strncmp(line, "VmHWM:", 6) == 0) printf("hwm_bytes %ld\n", atol(line + 6) * 1024);
    }
    if (status) fclose(status);
}

int main(int argc, char **argv) {
    size_t reserve = 0;
    int arg = 1;
    for (; arg < argc && argv[arg][0] == '-'; arg++) {
        if (strncmp(argv[arg], "-Xmx", 4) == 0) reserve = java_size(argv[arg] + 4);
    }
    if (argc - arg != 3) {
        fprintf(stderr, "usage: %s [-Xmx<size> ...] MAIN TOUCH_MIB HOLD_MS\n", argv[0]);
        return 2;
    }
    size_t touch = strtoul(argv[arg + 1], NULL, 10) * MIB;
    long hold_ms = strtol(argv[arg + 2], NULL, 10);
    if (reserve && touch > reserve) touch = reserve;

    char *heap;
    if (reserve) {
        /* The whole max heap as address space only, as HotSpot reserves it. */
        heap = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (heap == MAP_FAILED || mprotect(heap, touch, PROT_READ | PROT_WRITE) != 0) {
            perror("reserve");
            return 2;
        }
    } else {
        heap = mmap(NULL, touch, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (heap == MAP_FAILED) {
            perror("mmap");
            return 2;
        }
    }
    for (size_t offset = 0; offset < touch; offset += 4096) heap[offset] = 1;
    printf("reserved_bytes %zu\ntouched_bytes %zu\n", reserve, touch);
    print_hwm();
    fflush(stdout);
    struct timespec ts = {hold_ms / 1000, (hold_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return 0;
}
