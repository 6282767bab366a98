/*
 * Thread stacks with known sizes and known touched depth.
 *
 * Usage: stacks THREADS STACK_KIB TOUCH_KIB HOLD_MS
 * Starts THREADS threads with STACK_KIB stacks; each touches TOUCH_KIB of its stack (one byte
 * a page, through a volatile buffer), then all wait together HOLD_MS before exiting.
 */
#define _GNU_SOURCE
#include <alloca.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static size_t touch_bytes;
static long hold_ms;
static pthread_barrier_t touched;

static void *worker(void *arg) {
    (void)arg;
    volatile char *buffer = alloca(touch_bytes);
    for (size_t offset = 0; offset < touch_bytes; offset += 4096) buffer[offset] = 1;
    pthread_barrier_wait(&touched);
    struct timespec ts = {hold_ms / 1000, (hold_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: stacks THREADS STACK_KIB TOUCH_KIB HOLD_MS\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    size_t stack = (size_t)atol(argv[2]) << 10;
    touch_bytes = (size_t)atol(argv[3]) << 10;
    hold_ms = atol(argv[4]);
    if (threads < 1 || threads > 256 || touch_bytes + (64 << 10) > stack) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    pthread_t ids[256];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, stack);
    pthread_barrier_init(&touched, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&ids[i], &attr, worker, NULL) != 0) return 1;
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    return 0;
}
