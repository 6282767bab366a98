#!/usr/bin/env python3
# Loads a Kubernetes/OCI seccomp profile (JSON) with libseccomp, as a container runtime does for
# a Localhost profile, then execs the rest of the command line under it:
#
#   apply_seccomp.py PROFILE.json COMMAND [ARGS...]
#
# Used by tests/privileged/hardening.rs to run the agent under deploy/seccomp/headroom.json.
# Rules whose action is the default action are refused by libseccomp (-EACCES) and are
# redundant anyway: they are skipped.
import ctypes, json, os, sys
lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_EQ": 4, "SCMP_CMP_MASKED_EQ": 7}
def act(rule, default_errno):
    if rule["action"] == "SCMP_ACT_ALLOW": return 0x7fff0000
    return 0x00050000 | (rule.get("errnoRet", default_errno) & 0xffff)
p = json.load(open(sys.argv[1]))
lib.seccomp_init.restype = ctypes.c_void_p
ctx = ctypes.c_void_p(lib.seccomp_init(ctypes.c_uint32(0x00050000 | p["defaultErrnoRet"])))
lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
for arch in ["x86", "x32"]:
    lib.seccomp_arch_add(ctx, lib.seccomp_arch_resolve_name(arch.encode()))
lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
for rule in p["syscalls"]:
    args = rule.get("args", [])
    cmps = (Cmp * max(1, len(args)))()
    for i, a in enumerate(args):
        if a["op"] == "SCMP_CMP_MASKED_EQ":
            cmps[i] = Cmp(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0))
        else:
            cmps[i] = Cmp(a["index"], OPS[a["op"]], a["value"], 0)
    for name in rule["names"]:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0: continue
        rc = lib.seccomp_rule_add_array(ctx, act(rule, p["defaultErrnoRet"]), nr, len(args), cmps)
        if rc not in (0, -13, -17):
            sys.exit("cannot add the rule for %s: %d" % (name, rc))
rc = lib.seccomp_load(ctx)
assert rc == 0, rc
os.execvp(sys.argv[2], sys.argv[2:])
