/*
 * Two processes with the same pid, one after the other, for checking that their figures are
 * kept apart.
 *
 * Usage: pid_reuse FIRST_MIB SECOND_MIB
 * Forks a child that touches FIRST_MIB and exits; then asks the kernel (ns_last_pid, root
 * only) to hand out the same pid again and forks a child that touches SECOND_MIB. Prints
 * `first PID` and `second PID`.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void touch_and_exit(size_t mib) {
    size_t bytes = mib << 20;
    char *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) _exit(2);
    memset(memory, 1, bytes);
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    _exit(0);
}

static pid_t run_child(size_t mib) {
    pid_t pid = fork();
    if (pid == 0) touch_and_exit(mib);
    int status;
    waitpid(pid, &status, 0);
    return pid;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: pid_reuse FIRST_MIB SECOND_MIB\n");
        return 2;
    }
    pid_t first = run_child((size_t)atol(argv[1]));
    FILE *last = fopen("/proc/sys/kernel/ns_last_pid", "w");
    if (!last) {
        perror("ns_last_pid");
        return 2;
    }
    fprintf(last, "%d", first - 1);
    fclose(last);
    pid_t second = run_child((size_t)atol(argv[2]));
    printf("first %d\nsecond %d\n", first, second);
    return 0;
}
