/* Root's safe file operations: everything relative to directory fds, no symlink followed,
 * owner and type checked with fstat, so a service user can never aim root at a file. */
#ifndef AOS_FSAFE_H
#define AOS_FSAFE_H

#include <stddef.h>
#include <sys/types.h>

#include "aos/err.h"

/* Open directory `name` under dirfd (AT_FDCWD and an absolute path work too), creating
 * it with mode if missing, and make it owned by uid:gid with exactly that mode (through
 * the fd: no path is looked up twice). An existing entry that is not a directory, or a
 * symlink, is refused. When the caller is root, an existing directory owned by anyone
 * but root or uid is refused too. Returns the fd (O_DIRECTORY|O_CLOEXEC; caller closes)
 * or -1 with why. */
int fs_dir(int dirfd, const char *name, mode_t mode, uid_t uid, gid_t gid, char *why,
           size_t whylen);

/* Open (O_CREAT when flags has it) regular file `name` under dirfd with O_NOFOLLOW, and
 * refuse it unless it is a regular file with one link owned by us. Caller closes. */
int fs_open(int dirfd, const char *name, int flags, mode_t mode, char *why, size_t whylen);

/* Open an existing file `name` under dirfd read-only, without following a symlink and
 * without blocking on a FIFO; refused unless it is a regular file owned by uid. */
int fs_open_owned_by(int dirfd, const char *name, uid_t uid, char *why, size_t whylen);

/* Replace `name` under dirfd (a directory only root can write) with content, mode:
 * written to a temporary name, fsync'd, renamed over. */
aos_err fs_write(int dirfd, const char *name, const char *content, size_t len, mode_t mode,
                 char *why, size_t whylen);

/* Remove `name` under dirfd whatever it is (a symlink is removed, not followed; a
 * directory with everything in it). Missing is fine. */
aos_err fs_remove(int dirfd, const char *name, char *why, size_t whylen);

/* Walk the tree under dirfd (not following symlinks, not leaving the file system) and
 * give every entry owned by from_uid to to_uid:to_gid. A regular file with more than one
 * link is refused (it may be a hard link to a file of someone else's). */
aos_err fs_reown_tree(int dirfd, uid_t from_uid, uid_t to_uid, gid_t to_gid, char *why,
                      size_t whylen);

/* Share the tree under dirfd (not dirfd itself) with group gid: every directory and
 * regular file in it (not following symlinks, not leaving the file system, not a file with
 * more than one link) gets group gid and the owner's permissions for the group too, each
 * directory the setgid bit. The owners stay. For a workspace moved in from an older
 * layout. */
aos_err fs_share_tree(int dirfd, gid_t gid, char *why, size_t whylen);

#endif
