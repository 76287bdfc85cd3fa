/* fsafe's tree walks: fs_share_tree gives a moved-in workspace's files the group and the
 * owner's permissions for it, fs_reown_tree hands a tree from one uid to another; neither
 * follows a symlink, and a hard-linked file is left alone or refused. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fsafe.h"

static char T[64];

static void put(const char *rel, mode_t mode)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", T, rel);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x\n", 2), 2);
    close(fd);
    assert_int_equal(chmod(p, mode), 0);
}

static mode_t mode_of(const char *rel)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", T, rel);
    assert_int_equal(lstat(p, &st), 0);
    return st.st_mode & 07777;
}

static void a_tree_is_shared_and_nothing_outside_it(void **st)
{
    (void)st;
    snprintf(T, sizeof T, "/tmp/fsafe-test-XXXXXX");
    assert_non_null(mkdtemp(T));
    char p[256], q[256];
    const char *dirs[] = {"ws", "ws/sub", "outside"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", T, dirs[i]);
        assert_int_equal(mkdir(p, 0700), 0);
        assert_int_equal(chmod(p, 0700), 0);
    }
    put("ws/a.txt", 0600);
    put("ws/sub/b.sh", 0700);
    put("ws/sub/ro.txt", 0400);
    put("outside/secret", 0600);
    put("ws/linked", 0600);
    snprintf(p, sizeof p, "%s/ws/linked", T);
    snprintf(q, sizeof q, "%s/outside/hard", T);
    assert_int_equal(link(p, q), 0);
    snprintf(p, sizeof p, "%s/outside/secret", T);
    snprintf(q, sizeof q, "%s/ws/sub/to-secret", T);
    assert_int_equal(symlink(p, q), 0);
    snprintf(p, sizeof p, "%s/ws", T);
    int fd = open(p, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    char why[256] = "";
    if (fs_share_tree(fd, getegid(), why, sizeof why) != AOS_OK)
        fail_msg("fs_share_tree: %s", why);
    close(fd);
    assert_int_equal(mode_of("ws"), 0700);           /* the top is the caller's */
    assert_int_equal(mode_of("ws/a.txt"), 0660);
    assert_int_equal(mode_of("ws/sub"), 02770);      /* setgid: new files keep the group */
    assert_int_equal(mode_of("ws/sub/b.sh"), 0770);
    assert_int_equal(mode_of("ws/sub/ro.txt"), 0440);
    assert_int_equal(mode_of("ws/linked"), 0600);    /* two links: maybe someone else's */
    assert_int_equal(mode_of("outside/secret"), 0600); /* not through the symlink */
    snprintf(p, sizeof p, "rm -rf '%s'", T);
    assert_int_equal(system(p), 0);
}

static uid_t owner_of(const char *rel)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", T, rel);
    assert_int_equal(lstat(p, &st), 0);
    return st.st_uid;
}

/* As root only (chown): what from owned becomes to's, the rest stays; a hard link refuses. */
static void a_tree_is_reowned_and_a_hard_link_refused(void **st)
{
    (void)st;
    if (geteuid() != 0)
        skip();
    snprintf(T, sizeof T, "/tmp/fsafe-test-XXXXXX");
    assert_non_null(mkdtemp(T));
    char p[256], q[256];
    const char *dirs[] = {"t", "t/sub", "outside"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", T, dirs[i]);
        assert_int_equal(mkdir(p, 0700), 0);
    }
    put("t/a", 0600);
    put("t/sub/b", 0600);
    put("t/mine", 0600);
    put("outside/secret", 0600);
    const char *from_files[] = {"t", "t/a", "t/sub", "t/sub/b", "outside/secret"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", T, from_files[i]);
        assert_int_equal(lchown(p, 4242, 4242), 0);
    }
    snprintf(p, sizeof p, "%s/outside/secret", T);
    snprintf(q, sizeof q, "%s/t/sub/to-secret", T);
    assert_int_equal(symlink(p, q), 0);
    snprintf(p, sizeof p, "%s/t", T);
    int fd = open(p, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    char why[256] = "";
    if (fs_reown_tree(fd, 4242, 4343, 4343, why, sizeof why) != AOS_OK)
        fail_msg("fs_reown_tree: %s", why);
    assert_int_equal(owner_of("t"), 4343);
    assert_int_equal(owner_of("t/a"), 4343);
    assert_int_equal(owner_of("t/sub/b"), 4343);
    assert_int_equal(owner_of("t/mine"), 0);            /* not from's: left */
    assert_int_equal(owner_of("outside/secret"), 4242); /* not through the symlink */
    /* a hard link to a file outside: refused, named */
    snprintf(p, sizeof p, "%s/outside/secret", T);
    snprintf(q, sizeof q, "%s/t/sub/hard", T);
    assert_int_equal(link(p, q), 0);
    aos_err rc = fs_reown_tree(fd, 4343, 4242, 4242, why, sizeof why);
    if (rc != AOS_ERR_REFUSED)
        fail_msg("%s: %s", aos_err_name(rc), why);
    assert_non_null(strstr(why, "hard links"));
    close(fd);
    snprintf(p, sizeof p, "rm -rf '%s'", T);
    assert_int_equal(system(p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_tree_is_shared_and_nothing_outside_it),
        cmocka_unit_test(a_tree_is_reowned_and_a_hard_link_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
