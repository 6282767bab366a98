/*
 * Many glibc malloc arenas: THREADS threads each make small allocations, so glibc gives most
 * of them an arena of their own, each a 64 MiB mostly-unused reservation. While all threads
 * are alive, prints the process's VmSize (kB) from /proc/self/status as `vm_size_kib N`.
 *
 * Usage: arenas THREADS HOLD_MS
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_barrier_t allocated, reported;

static void *worker(void *arg) {
    (void)arg;
    void *blocks[100];
    for (int i = 0; i < 100; i++) {
        blocks[i] = malloc(1000);
        if (blocks[i]) memset(blocks[i], 1, 1000);
    }
    pthread_barrier_wait(&allocated);
    pthread_barrier_wait(&reported);
    for (int i = 0; i < 100; i++) free(blocks[i]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: arenas THREADS HOLD_MS\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    long hold_ms = atol(argv[2]);
    if (threads < 1 || threads > 256) return 2;
    pthread_t ids[256];
    pthread_barrier_init(&allocated, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&reported, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&ids[i], NULL, worker, NULL) != 0) return 1;
    pthread_barrier_wait(&allocated);
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    while (status && fgets(line, sizeof line, status))
        if (strncmp(line, "VmSize:", 7) == 0) printf("vm_size_kib %ld\n", atol(line + 7));
    if (status) fclose(status);
    fflush(stdout);
    struct timespec ts = {hold_ms / 1000, (hold_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    pthread_barrier_wait(&reported);
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    return 0;
}
