/*
 * Known-behaviour workload for the exit-tracking tests: a process whose threads end in a
 * chosen order, so that telling the process's last thread from the others is tested where
 * it is hard.
 *
 * Starts THREADS threads and touches TOUCH_MIB MiB, all threads alive at once (a barrier), then:
 *   group         the main thread calls exit() while every other thread is still running, so
 *                 the kernel kills them all at once (exit_group: threads exit concurrently);
 *   leader-first  the main thread exits alone (pthread_exit) and the others finish 200 ms
 *                 later, one after the other, the last one ending the process.
 *
 * Usage: exit_patterns group|leader-first THREADS TOUCH_MIB
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static pthread_barrier_t all_alive;
static int leader_first;

static void fail(const char *what) {
    write(2, what, strlen(what));
    write(2, "\n", 1);
    _exit(2);
}

static void *worker(void *arg) {
    long index = (long)arg;
    pthread_barrier_wait(&all_alive);
    if (leader_first) {
        usleep(200000 + 20000 * (useconds_t)index);
        return NULL;
    }
    for (;;)
        pause();
}

int main(int argc, char **argv) {
    if (argc != 4) fail("usage: exit_patterns group|leader-first THREADS TOUCH_MIB");
    leader_first = strcmp(argv[1], "leader-first") == 0;
    if (!leader_first && strcmp(argv[1], "group") != 0) fail("mode: group or leader-first");
    int threads = atoi(argv[2]);
    size_t bytes = (size_t)atoi(argv[3]) << 20;
    if (threads < 1 || threads > 256) fail("threads out of range");

    if (bytes > 0) {
        char *region = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) fail("mmap");
        memset(region, 1, bytes);
    }
    pthread_t ids[256];
    pthread_barrier_init(&all_alive, NULL, (unsigned)threads + 1);
    for (long i = 0; i < threads; i++)
        if (pthread_create(&ids[i], NULL, worker, (void *)i) != 0) fail("pthread_create");
    pthread_barrier_wait(&all_alive);
    if (leader_first)
        pthread_exit(NULL);
    exit(0);
}
