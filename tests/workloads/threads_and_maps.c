/*
 * Known-behaviour workload for headroom's integration tests.
 *
 * Starts THREADS threads (all alive at once, held by a barrier), then mmaps MAPS regions of
 * MAP_MIB MiB each (private, anonymous, read/write), touches them, unmaps the last one, and
 * grows the heap with sbrk by BRK_KIB KiB. Built statically so that no dynamic loader adds
 * mmaps of its own: every anonymous mapping in the process is one of ours.
 *
 * Usage: threads_and_maps THREADS MAPS MAP_MIB BRK_KIB
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static pthread_barrier_t all_alive;

static void *worker(void *arg) {
    (void)arg;
    pthread_barrier_wait(&all_alive);
    return NULL;
}

static void fail(const char *what) {
    write(2, what, strlen(what));
    write(2, "\n", 1);
    _exit(2);
}

int main(int argc, char **argv) {
    if (argc != 5) fail("usage: threads_and_maps THREADS MAPS MAP_MIB BRK_KIB");
    int threads = atoi(argv[1]);
    int maps = atoi(argv[2]);
    size_t map_bytes = (size_t)atoi(argv[3]) << 20;
    intptr_t brk_bytes = (intptr_t)atoi(argv[4]) << 10;
    if (threads < 0 || threads > 1000 || maps < 0 || maps > 64) fail("argument out of range");

    pthread_t ids[1000];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* An explicit stack size so the stack figure does not depend on `ulimit -s`. */
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_barrier_init(&all_alive, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&ids[i], &attr, worker, NULL) != 0) fail("pthread_create");
    pthread_barrier_wait(&all_alive);
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);

    void *regions[64];
    for (int i = 0; i < maps; i++) {
        regions[i] = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (regions[i] == MAP_FAILED) fail("mmap");
        memset(regions[i], 1, map_bytes);
    }
    if (maps > 0 && munmap(regions[maps - 1], map_bytes) != 0) fail("munmap");

    if (brk_bytes > 0) {
        char *old_break = sbrk(brk_bytes);
        if (old_break == (void *)-1) fail("sbrk");
        memset(old_break, 1, (size_t)brk_bytes);
    }
    return 0;
}
