"""Opening data files (weights, data sets) for reading: regular files only.

A device, FIFO or socket given as a data file would be read forever (/dev/zero,
/dev/urandom) or block the open itself (a FIFO with no writer). The file is
opened without blocking and checked with fstat on the descriptor, so the file
checked is the file read, whatever happens to the path in between.
"""
import os
import stat

_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"))


def open_regular(path, where, error=ValueError):
    """A binary file object reading `path`, or `error` naming `where` if `path` is not
    a regular file (after following symlinks). OSErrors (not found, no permission)
    propagate as they are."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise error(f"{where}: expected a regular file, received a directory") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "special file")
            raise error(f"{where}: expected a regular file, received a {kind} "
                        f"(it is not read: it could block or never end)")
        if flags & getattr(os, "O_NONBLOCK", 0):  # no effect on a regular file; cleared for clarity
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
