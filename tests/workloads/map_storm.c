/*
 * A burst of mapping syscalls, to overflow a small ring buffer.
 *
 * Usage: map_storm COUNT
 * Maps and unmaps one page COUNT times as fast as it can, then prints `maps COUNT`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: map_storm COUNT\n");
        return 2;
    }
    long count = atol(argv[1]);
    for (long i = 0; i < count; i++) {
        void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) {
            perror("mmap");
            return 2;
        }
        munmap(page, 4096);
    }
    printf("maps %ld\n", count);
    return 0;
}
