#!/usr/bin/python3
"""A file system that forgets what was not synced: for scripts/powerloss.sh.

    lazyfs.py BACKING MOUNTPOINT

Mounts BACKING at MOUNTPOINT with FUSE. Metadata (create, mkdir, rename, unlink, chmod,
truncate) goes to BACKING at once. File data written with write(2) is kept in memory
until the file is fsync'ed or fdatasync'ed (through any descriptor); only then is it
written to BACKING. `sync_file_range(2)` has no FUSE request, so it persists nothing, as on
a real disk whose cache is lost.

Looking up `MOUNTPOINT/.lazyfs-powercut-ANYTHING` (`stat` it; it never exists) is the
power cut: every unsynced write is dropped at once (reads then see what BACKING holds), and
the file system goes on. A normal unmount (fusermount -u) first writes everything, like a
clean shutdown. The kernel caches nothing (direct_io, no attribute caching), so what a
process reads after the cut is what the "disk" kept.

The fault model is that of LazyFS: unsynced file data is lost, metadata is not. A real
power cut can also lose a rename or a new directory entry that was not followed by an
fsync of the directory; this does not simulate that.

Needs Debian's python3-fusepy (libfuse2) and /dev/fuse; run it with /usr/bin/python3.
"""

import errno
import os
import sys
import threading

from fusepy import FUSE, FuseOSError, Operations

PAGE = 4096


class Lazy(Operations):
    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.mutex = threading.RLock()
        # path -> {"pages": {index: bytearray(PAGE)}, "size": int or None}
        # "size" is the file size as the writer sees it (None: the backing size).
        self.dirty = {}
        self.stats = {"writes": 0, "syncs": 0, "cuts": 0, "dropped_bytes": 0}

    # --- helpers -------------------------------------------------------------------
    def _full(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def _backing_size(self, path):
        try:
            return os.stat(self._full(path)).st_size
        except FileNotFoundError:
            return 0

    def _size(self, path):
        d = self.dirty.get(path)
        if d is not None and d["size"] is not None:
            return d["size"]
        return self._backing_size(path)

    def _read_backing(self, path, offset, length):
        try:
            with open(self._full(path), "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except FileNotFoundError:
            data = b""
        return data + b"\0" * (length - len(data))

    def _page(self, path, index):
        d = self.dirty.setdefault(path, {"pages": {}, "size": None})
        page = d["pages"].get(index)
        if page is None:
            page = bytearray(self._read_backing(path, index * PAGE, PAGE))
            d["pages"][index] = page
        return page

    def _persist(self, path):
        d = self.dirty.pop(path, None)
        if d is None:
            return
        size = d["size"] if d["size"] is not None else self._backing_size(path)
        fd = os.open(self._full(path), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for index, page in sorted(d["pages"].items()):
                start = index * PAGE
                if start >= size:
                    continue
                os.pwrite(fd, bytes(page[: min(PAGE, size - start)]), start)
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def power_cut(self):
        with self.mutex:
            for d in self.dirty.values():
                self.stats["dropped_bytes"] += len(d["pages"]) * PAGE
            self.dirty.clear()
            self.stats["cuts"] += 1

    # --- metadata: straight to the backing directory --------------------------------
    def getattr(self, path, fh=None):
        if path.startswith("/.lazyfs-powercut"):
            self.power_cut()
            raise FuseOSError(errno.ENOENT)
        with self.mutex:
            try:
                st = os.lstat(self._full(path))
            except FileNotFoundError:
                raise FuseOSError(errno.ENOENT)
            attrs = {
                key: getattr(st, key)
                for key in (
                    "st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                    "st_nlink", "st_size", "st_uid",
                )
            }
            if path in self.dirty:
                attrs["st_size"] = self._size(path)
            return attrs

    def access(self, path, mode):
        if not os.access(self._full(path), mode):
            raise FuseOSError(errno.EACCES)

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._full(path))

    def mkdir(self, path, mode):
        os.mkdir(self._full(path), mode)

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._full(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._full(path), times)

    def statfs(self, path):
        st = os.statvfs(self._full(path))
        return {
            key: getattr(st, key)
            for key in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax",
            )
        }

    def unlink(self, path):
        with self.mutex:
            self.dirty.pop(path, None)
            os.unlink(self._full(path))

    def rename(self, old, new):
        with self.mutex:
            os.rename(self._full(old), self._full(new))
            moved = self.dirty.pop(old, None)
            self.dirty.pop(new, None)
            if moved is not None:
                self.dirty[new] = moved

    def link(self, target, source):
        os.link(self._full(source), self._full(target))

    def symlink(self, target, source):
        os.symlink(source, self._full(target))

    def readlink(self, path):
        return os.readlink(self._full(path))

    def mknod(self, path, mode, dev):
        os.mknod(self._full(path), mode, dev)

    # --- files ----------------------------------------------------------------------
    def create(self, path, mode, fi=None):
        with self.mutex:
            fd = os.open(self._full(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            os.close(fd)
            self.dirty.pop(path, None)
            return 0

    def open(self, path, flags):
        with self.mutex:
            if not os.path.exists(self._full(path)):
                raise FuseOSError(errno.ENOENT)
            if flags & os.O_TRUNC:
                self.truncate(path, 0)
            return 0

    def read(self, path, size, offset, fh):
        with self.mutex:
            end = min(offset + size, self._size(path))
            if end <= offset:
                return b""
            d = self.dirty.get(path)
            out = bytearray(self._read_backing(path, offset, end - offset))
            if d is not None:
                for index in range(offset // PAGE, (end - 1) // PAGE + 1):
                    page = d["pages"].get(index)
                    if page is None:
                        continue
                    lo = max(offset, index * PAGE)
                    hi = min(end, (index + 1) * PAGE)
                    out[lo - offset : hi - offset] = page[lo - index * PAGE : hi - index * PAGE]
            return bytes(out)

    def write(self, path, data, offset, fh):
        with self.mutex:
            self.stats["writes"] += 1
            size = self._size(path)
            pos = offset
            view = memoryview(data)
            while view:
                index = pos // PAGE
                within = pos - index * PAGE
                n = min(PAGE - within, len(view))
                page = self._page(path, index)
                page[within : within + n] = view[:n]
                view = view[n:]
                pos += n
            self.dirty[path]["size"] = max(size, offset + len(data))
            return len(data)

    def truncate(self, path, length, fh=None):
        with self.mutex:
            d = self.dirty.get(path)
            if d is not None:
                for index in [i for i in d["pages"] if i * PAGE >= length]:
                    del d["pages"][index]
                d["size"] = length
            # The new size is metadata: it reaches the backing file at once.
            os.truncate(self._full(path), length)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        with self.mutex:
            self.stats["syncs"] += 1
            self._persist(path)
        return 0

    def fsyncdir(self, path, datasync, fh):
        return 0

    def destroy(self, path):
        # A clean unmount writes everything, like a clean shutdown.
        with self.mutex:
            for p in list(self.dirty):
                try:
                    self._persist(p)
                except FileNotFoundError:
                    pass
        sys.stderr.write("lazyfs: %r\n" % self.stats)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: lazyfs.py BACKING MOUNTPOINT")
    fs = Lazy(sys.argv[1])
    FUSE(
        fs,
        sys.argv[2],
        foreground=True,
        nothreads=False,
        big_writes=True,
        direct_io=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )


if __name__ == "__main__":
    main()
