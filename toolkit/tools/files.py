"""``save_file(path, content)``: write a text file inside the workspace folder, and nowhere else.

Refused: an empty, absolute or ``..`` path, a path that ends in ``/`` (a folder, not a file), a
NUL byte, a newline or any other control character, a name over 255 bytes (the file system's
limit; names of up to 255 bytes are written), a path through a symlink (no component is
followed: every folder is opened with ``O_NOFOLLOW`` relative to the one before, so a link
swapped in between check and write cannot redirect the write), content over the size limit.
Spaces around each name are dropped (" Ideas.md" is written as "Ideas.md"); spaces inside one stay.
The write is atomic: a temporary file (a short name of its own, so that it fits wherever the
file's name fits) in the target folder, fsync, then ``rename``.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from pathlib import Path, PurePosixPath, PureWindowsPath

from toolkit.tool import Tool


NAME_MAX = 255  # bytes in one file or folder name (Linux, macOS, Windows file systems)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class WorkspaceError(PermissionError):
    """A path that would leave the workspace, or a write the workspace refuses."""


def _parts(path: str) -> list[str]:
    if not path or not path.strip():
        raise WorkspaceError("the path is empty; give a file name relative to the workspace, e.g. 'notes/plan.txt'")
    if "\x00" in path:
        raise WorkspaceError("the path contains a NUL byte")
    bad = _CONTROL.search(path)
    if bad:
        raise WorkspaceError(f"path {path!r} refused: it contains the control character {bad.group()!r} "
                             "(a newline, tab or the like); give a name on one line")
    bare = path.strip()
    if PurePosixPath(bare).is_absolute() or PureWindowsPath(bare).is_absolute() or PureWindowsPath(bare).drive:
        raise WorkspaceError(f"absolute path {path!r} refused; give a path relative to the workspace")
    # Spaces around a name are dropped (a model that copied "path= Ideas.md" meant "Ideas.md"); inside it they stay.
    parts = [p.strip() for p in path.replace("\\", "/").split("/")]
    parts = [p for p in parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise WorkspaceError(f"path {path!r} refused: '..' may not appear in it")
    if not parts:
        raise WorkspaceError(f"path {path!r} names the workspace itself, not a file")
    if re.search(r"/\s*\.?\s*$", path.replace("\\", "/")):
        raise WorkspaceError(f"path {path!r} names a folder (it ends with '/'); give a file name, e.g. "
                             f"'{'/'.join(parts)}/notes.txt'")
    for p in parts:
        if len(p.encode("utf-8")) > NAME_MAX:
            raise WorkspaceError(f"path {path!r} refused: the name {p[:40]!r}... is {len(p.encode('utf-8'))} bytes; "
                                 f"a file or folder name holds at most {NAME_MAX}")
    return parts


def write_in_workspace(workspace: str | os.PathLike, path: str, data: bytes) -> Path:
    """Atomically write ``data`` to ``workspace/path``; returns the path written."""
    parts = _parts(path)
    root = Path(workspace)
    root.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in parts[:-1]:
            try:
                nfd = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(name, flags, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise WorkspaceError(f"path {path!r} refused: {name!r} is a symlink or not a folder") from e
                raise
            os.close(fd)
            fd = nfd
        leaf = parts[-1]
        try:
            st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
            if not (os.path.stat.S_ISREG(st.st_mode)):
                raise WorkspaceError(f"path {path!r} refused: it exists and is not a regular file")
        except FileNotFoundError:
            pass
        tmp = f".save-{secrets.token_hex(8)}.tmp"  # not derived from leaf: a 255-byte leaf must still fit
        wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
        try:
            with os.fdopen(wfd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, leaf, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except FileNotFoundError:
                pass
            raise
        return root.joinpath(*parts)
    finally:
        os.close(fd)


class SaveFileTool(Tool):
    name = "save_file"
    description = "Save text to a file in the workspace (an existing file is replaced); returns its path."
    inputs = {"path": {"type": "string", "description": "file path relative to the workspace, e.g. 'report.md'"},
              "content": {"type": "string", "description": "the text to write"}}
    output_type = "string"

    def __init__(self, workspace: str | os.PathLike = "workspace", max_bytes: int = 1_000_000):
        super().__init__()
        self.workspace = Path(workspace)
        self.max_bytes = max_bytes

    def forward(self, path: str, content: str) -> str:
        data = content.encode("utf-8")
        if len(data) > self.max_bytes:
            raise WorkspaceError(f"content is {len(data)} bytes; save_file writes at most {self.max_bytes}")
        written = write_in_workspace(self.workspace, path, data)
        rel = written.relative_to(self.workspace).as_posix()
        return f"saved {len(data)} bytes to {rel} in the workspace ({self.workspace})"
