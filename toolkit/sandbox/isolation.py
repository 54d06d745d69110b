"""OS limits for a sandbox process (Linux): the second layer under the AST interpreter.

Applied by the worker to itself, in this order, each where the OS allows it (``apply`` returns
what held, so callers and tests can see it):

1. a new network namespace (``unshare(CLONE_NEWNET)``; as non-root, with a user namespace):
   no interface but a down loopback, so DNS and every connection fail;
2. Landlock: reading only the Python installation and the workspace, writing only in the
   workspace, executing nothing (kernel 5.13+);
3. ``PR_SET_NO_NEW_PRIVS``;
4. rlimits: address space, file size, open files, core dumps off;
5. as root: dropping to an unprivileged uid/gid (65534, "nobody") with no supplementary groups,
   so that ``RLIMIT_NPROC`` is enforced and root's files are out of reach.

CPU seconds and ``RLIMIT_NPROC = 0`` (no new processes) are set per run, in the forked child
that runs the code.
"""

from __future__ import annotations

import ctypes
import os
import resource
import struct
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
SANDBOX_UID = 65534

# Landlock (linux/landlock.h); syscall numbers are the same on x86_64 and aarch64.
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ABI1_ALL = (1 << 13) - 1            # EXECUTE .. MAKE_SYM
_FS_REFER, _FS_TRUNCATE = 1 << 13, 1 << 14
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _errno_text() -> str:
    return os.strerror(ctypes.get_errno())


def unshare_network() -> str:
    """Cut the network; returns how ("netns", "userns+netns") or raises OSError."""
    if _libc.unshare(CLONE_NEWNET) == 0:
        return "netns"
    first = _errno_text()
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        # map ourselves so that files keep their owner inside the namespace
        try:
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
        except OSError:
            pass
        return "userns+netns"
    raise OSError(f"unshare(CLONE_NEWNET) failed: {first}; with a user namespace: {_errno_text()}")


def landlock(read_paths: list[str], write_paths: list[str]) -> int:
    """Restrict the file system; returns the Landlock ABI version used, or raises OSError."""
    abi = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        raise OSError(f"Landlock is not available: {_errno_text()}")
    handled = _FS_ABI1_ALL | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    handled_net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0
    attr = struct.pack("QQ", handled, handled_net) if abi >= 4 else struct.pack("Q", handled)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, buf, len(attr), 0)
    if ruleset < 0:
        raise OSError(f"landlock_create_ruleset failed: {_errno_text()}")
    try:
        read = _FS_READ_FILE | _FS_READ_DIR
        for paths, access in ((read_paths, read), (write_paths, handled & ~_FS_EXECUTE)):
            for path in paths:
                if not os.path.exists(path):
                    continue
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                try:
                    allowed = access if os.path.isdir(path) else access & (_FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE)
                    rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
                    if _libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, rule, 0) != 0:
                        raise OSError(f"landlock_add_rule({path}) failed: {_errno_text()}")
                finally:
                    os.close(fd)
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(f"PR_SET_NO_NEW_PRIVS failed: {_errno_text()}")
        if _libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            raise OSError(f"landlock_restrict_self failed: {_errno_text()}")
    finally:
        os.close(ruleset)
    return abi


def set_rlimit(name: str, value: int) -> None:
    res = getattr(resource, name)
    soft, hard = resource.getrlimit(res)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(res, (value, value))


def drop_privileges(uid: int = SANDBOX_UID, gid: int = SANDBOX_UID) -> bool:
    """As root, become ``uid``/``gid`` for good; returns False when not root."""
    if os.getuid() != 0:
        return False
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    return True


def python_read_paths() -> list[str]:
    """Folders the interpreter may still read from: its installation and site-packages."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.dirname(os.__file__))}
    paths |= {p for p in sys.path if p and os.path.isdir(p)}
    paths.add("/usr/share/zoneinfo")
    return sorted(paths)


def apply(workspace: str, memory_mb: int, max_file_mb: int = 16, max_open_files: int = 64) -> dict:
    """Isolate this process; returns ``{layer: how or why not}``. Network, file system and
    privilege layers that the OS refuses are reported, not raised; rlimits always apply."""
    report: dict[str, str] = {}
    try:
        report["network"] = unshare_network()
    except OSError as e:
        report["network"] = f"unavailable: {e}"
    try:
        report["filesystem"] = f"landlock abi {landlock(python_read_paths(), [workspace])}"
    except OSError as e:
        report["filesystem"] = f"unavailable: {e}"
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        report["no_new_privs"] = "set"
    set_rlimit("RLIMIT_AS", memory_mb * 1024 * 1024)
    set_rlimit("RLIMIT_FSIZE", max_file_mb * 1024 * 1024)
    set_rlimit("RLIMIT_NOFILE", max_open_files)
    set_rlimit("RLIMIT_CORE", 0)
    report["rlimits"] = f"as={memory_mb}MiB fsize={max_file_mb}MiB nofile={max_open_files}"
    report["user"] = f"uid {SANDBOX_UID}" if drop_privileges() else f"uid {os.getuid()} (not root: kept)"
    _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # die with the host (after the uid change, which clears it)
    return report
