/*
 * A large process that starts children the ways runtimes do, so that one address space shared
 * by two processes can be checked for being counted once: glibc's posix_spawn (clone with
 * CLONE_VM | CLONE_VFORK, as CPython's subprocess, Go's os/exec and the JDK's spawn helper
 * use), vfork + exec, and fork + exec (a copy of the address space, shared copy-on-write until
 * the exec).
 *
 * Usage: spawn_children BASE_MIB SPAWNS CHILD
 * Touches BASE_MIB, then SPAWNS times posix_spawns CHILD and waits for it, then SPAWNS times
 * vforks and execs CHILD and waits, then SPAWNS times forks (the child touches one page of the
 * copy, then execs CHILD) and waits. Prints `spawned N` and its VmHWM (`vm_hwm_kib K`).
 */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: spawn_children BASE_MIB SPAWNS CHILD\n");
        return 2;
    }
    size_t base = (size_t)atol(argv[1]) << 20;
    int spawns = atoi(argv[2]);
    char *child_argv[] = {argv[3], NULL};
    volatile char *memory = mmap(NULL, base, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    for (size_t offset = 0; offset < base; offset += 4096) memory[offset] = 1;
    int spawned = 0;
    for (int i = 0; i < spawns; i++) {
        pid_t pid;
        if (posix_spawn(&pid, argv[3], NULL, NULL, child_argv, environ) != 0) {
            perror("posix_spawn");
            return 2;
        }
        int status;
        if (waitpid(pid, &status, 0) == pid && WIFEXITED(status)) spawned++;
    }
    for (int i = 0; i < spawns; i++) {
        pid_t pid = vfork();
        if (pid == 0) {
            execve(argv[3], child_argv, environ);
            _exit(127);
        }
        int status;
        if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)) spawned++;
    }
    for (int i = 0; i < spawns; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            memory[0] = 2; /* copy-on-write: the child's first fault on the copy */
            execve(argv[3], child_argv, environ);
            _exit(127);
        }
        int status;
        if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)) spawned++;
    }
    printf("spawned %d\n", spawned);
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    while (status && fgets(line, sizeof line, status))
        if (strncmp(line, "VmHWM:", 6) == 0) printf("vm_hwm_kib %ld\n", atol(line + 6));
    if (status) fclose(status);
    return 0;
}
