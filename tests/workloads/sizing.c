/*
 * Workloads with known memory behaviour, for the sizing scenarios (tests/privileged/sizing.rs).
 * Every size is anonymous memory touched page by page, except the page-cache writer's file.
 * Each prints `key value` lines (flushed) with what it did and its VmHWM / VmRSS.
 *
 *   cache  BASE_MIB FILE FILE_MIB HOLD_MS   hold BASE, write FILE_MIB to FILE, hold, exit
 *   bursts BASE_MIB BURST_MIB PERIOD_MS BURST_MS TOTAL_MS
 *                                           BASE held; a BURST held BURST_MS, then
 *                                           PERIOD-BURST_MS at BASE from its release
 *                                           (however slowly the burst was touched)
 *   step   BASE_MIB STEP_MIB STEP_AT_MS TOTAL_MS
 *                                           BASE, then STEP more at STEP_AT, kept to the end
 *   leak   BASE_MIB MIB_PER_S TOTAL_MS      BASE, then 1 MiB more every 1/MIB_PER_S s, kept
 *   peak   PEAK_MIB AFTER_MIB HOLD_MS       touch PEAK, drop to AFTER, print `settled`, hold
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1UL << 20)

static void touch(char *memory, size_t bytes) {
    volatile char *page = memory;
    for (size_t offset = 0; offset < bytes; offset += 4096) page[offset] = 1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *map_touched(size_t bytes) {
    char *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    touch(memory, bytes);
    return memory;
}

static void print_status(const char *key, const char *field) {
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    size_t length = strlen(field);
    while (status && fgets(line, sizeof line, status)) {
        if (strncmp(line, field, length) == 0) {
            printf("%s %ld\n", key, atol(line + length) * 1024);
        }
    }
    if (status) fclose(status);
    fflush(stdout);
}

static int cache(char **argv) {
    size_t base = (size_t)atol(argv[0]) * MIB, file_bytes = (size_t)atol(argv[2]) * MIB;
    long hold_ms = atol(argv[3]);
    map_touched(base);
    int fd = open(argv[1], O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0) {
        perror("open");
        return 2;
    }
    char *chunk = malloc(MIB);
    memset(chunk, 'x', MIB);
    for (size_t written = 0; written < file_bytes; written += MIB) {
        if (write(fd, chunk, MIB) != (ssize_t)MIB) {
            perror("write");
            return 2;
        }
        /* Written back as it goes, as a log writer's cache is: clean, reclaimable. */
        if ((written / MIB) % 8 == 7) fdatasync(fd);
    }
    fdatasync(fd);
    close(fd);
    print_status("rss_bytes", "VmRSS:");
    sleep_ms(hold_ms);
    print_status("hwm_bytes", "VmHWM:");
    return 0;
}

static int bursts(char **argv) {
    size_t base = (size_t)atol(argv[0]) * MIB, burst = (size_t)atol(argv[1]) * MIB;
    long period = atol(argv[2]), burst_ms = atol(argv[3]), total = atol(argv[4]);
    map_touched(base);
    long start = now_ms();
    int count = 0;
    while (now_ms() - start + period <= total) {
        char *memory = map_touched(burst);
        sleep_ms(burst_ms);
        munmap(memory, burst);
        count++;
        /* The quiet time counts from the release: under an emulator touching the burst can
         * take longer than the period, and a fixed period would leave no time at the base. */
        sleep_ms(period - burst_ms);
    }
    printf("bursts %d\n", count);
    print_status("quiet_rss_bytes", "VmRSS:");
    print_status("hwm_bytes", "VmHWM:");
    return 0;
}

static int step(char **argv) {
    size_t base = (size_t)atol(argv[0]) * MIB, more = (size_t)atol(argv[1]) * MIB;
    long step_at = atol(argv[2]), total = atol(argv[3]);
    map_touched(base);
    sleep_ms(step_at);
    map_touched(more);
    print_status("rss_after_step_bytes", "VmRSS:");
    sleep_ms(total - step_at);
    print_status("rss_bytes", "VmRSS:");
    return 0;
}

static int leak(char **argv) {
    size_t base = (size_t)atol(argv[0]) * MIB;
    long per_second = atol(argv[1]), total = atol(argv[2]);
    map_touched(base);
    long start = now_ms();
    long leaked = 0;
    while (now_ms() - start < total) {
        map_touched(MIB);
        leaked++;
        sleep_ms(1000 / per_second);
    }
    printf("leaked_mib %ld\n", leaked);
    print_status("rss_bytes", "VmRSS:");
    return 0;
}

static int peak(char **argv) {
    size_t high = (size_t)atol(argv[0]) * MIB, after = (size_t)atol(argv[1]) * MIB;
    long hold_ms = atol(argv[2]);
    char *memory = map_touched(high);
    munmap(memory + after, high - after);
    print_status("hwm_bytes", "VmHWM:");
    printf("settled 1\n");
    fflush(stdout);
    sleep_ms(hold_ms);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 6 && strcmp(argv[1], "cache") == 0) return cache(argv + 2);
    if (argc >= 7 && strcmp(argv[1], "bursts") == 0) return bursts(argv + 2);
    if (argc >= 6 && strcmp(argv[1], "step") == 0) return step(argv + 2);
    if (argc >= 5 && strcmp(argv[1], "leak") == 0) return leak(argv + 2);
    if (argc >= 5 && strcmp(argv[1], "peak") == 0) return peak(argv + 2);
    fprintf(stderr, "usage: sizing cache|bursts|step|leak|peak ARGS (see the source)\n");
    return 2;
}
