/*
 * A process that holds its memory and keeps faulting: a steady base plus a small region
 * mapped, touched and unmapped over and over, so the kernel raises rss_stat events for it
 * all the time without its resident size moving much.
 *
 * Usage: churn BASE_MIB CHURN_KIB PERIOD_MS
 * Touches BASE_MIB and holds it, prints `ready`, then every PERIOD_MS maps CHURN_KIB, touches
 * each page and unmaps it, until it is killed.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static void touch(volatile char *memory, size_t bytes) {
    for (size_t offset = 0; offset < bytes; offset += 4096) memory[offset] = 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: churn BASE_MIB CHURN_KIB PERIOD_MS\n");
        return 2;
    }
    size_t base = (size_t)atol(argv[1]) << 20;
    size_t churn = (size_t)atol(argv[2]) << 10;
    long period_ms = atol(argv[3]);
    char *held = mmap(NULL, base, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (held == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    touch(held, base);
    printf("ready\n");
    fflush(stdout);
    struct timespec pause = {period_ms / 1000, (period_ms % 1000) * 1000000L};
    for (;;) {
        char *region = mmap(NULL, churn, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        touch(region, churn);
        munmap(region, churn);
        nanosleep(&pause, NULL);
    }
}
