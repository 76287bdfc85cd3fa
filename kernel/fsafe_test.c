/* fsafe's fs_share_tree: a moved-in workspace's files get the group and the owner's
 * permissions for it; a symlink, a hard-linked file and what lies outside are left alone. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_tree_is_shared_and_nothing_outside_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
