/* Unit tests of the batch frame codec: round trips, caps, and every way a hostile frame
 * can be malformed (cut records, zero lengths, lengths past the end). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "aos/batch.h"
#include "aos/envelope.h"

static void round_trip(void **st)
{
    (void)st;
    aos_batch b;
    aos_batch_init(&b, 1024);
    assert_null(aos_batch_take(&b));
    assert_int_equal(aos_batch_add(&b, "one", 3), AOS_OK);
    assert_int_equal(aos_batch_add(&b, "second", 6), AOS_OK);
    assert_int_equal(aos_batch_add(&b, "x", 1), AOS_OK);
    nng_msg *m = aos_batch_take(&b);
    assert_non_null(m);
    const uint8_t *buf = nng_msg_body(m);
    size_t len = nng_msg_len(m), off = 0, rl;
    const uint8_t *rec;
    assert_true(aos_batch_is(buf, len));
    const char *want[] = {"one", "second", "x"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(aos_batch_next(buf, len, &off, &rec, &rl, NULL, 0), AOS_OK);
        assert_int_equal(rl, strlen(want[i]));
        assert_memory_equal(rec, want[i], rl);
    }
    assert_int_equal(aos_batch_next(buf, len, &off, &rec, &rl, NULL, 0), AOS_ERR_NOT_FOUND);
    nng_msg_free(m);
}

static void caps(void **st)
{
    (void)st;
    aos_batch b;
    aos_batch_init(&b, AOS_BATCH_HDR + 2 * (AOS_BATCH_REC_HDR + 10));
    uint8_t ten[10] = {1};
    assert_true(aos_batch_fits(&b, 10));
    assert_false(aos_batch_fits(&b, 0));
    assert_int_equal(aos_batch_add(&b, ten, 10), AOS_OK);
    assert_int_equal(aos_batch_add(&b, ten, 10), AOS_OK);
    assert_false(aos_batch_fits(&b, 1));
    assert_int_equal(aos_batch_add(&b, ten, 1), AOS_ERR_TOO_BIG);
    aos_batch_clear(&b);
    aos_batch_init(&b, AOS_MSG_MAX);
    for (unsigned i = 0; i < AOS_BATCH_MAX; i++)
        assert_int_equal(aos_batch_add(&b, ten, 1), AOS_OK);
    assert_int_equal(aos_batch_add(&b, ten, 1), AOS_ERR_TOO_BIG);
    aos_batch_clear(&b);
}

static void hostile(void **st)
{
    (void)st;
    size_t off, rl;
    const uint8_t *rec;
    char why[128];
    /* a protobuf envelope (first byte a tag) is not a frame */
    static const uint8_t env[] = {0x08, 0x01, 0x10, 0x01};
    assert_false(aos_batch_is(env, sizeof env));
    static const uint8_t empty[] = {0x00, 0x42};
    off = 0;
    assert_int_equal(aos_batch_next(empty, sizeof empty, &off, &rec, &rl, why, sizeof why),
                     AOS_ERR_NOT_FOUND);
    static const uint8_t cut_hdr[] = {0x00, 0x42, 0, 0};
    off = 0;
    assert_int_equal(aos_batch_next(cut_hdr, sizeof cut_hdr, &off, &rec, &rl, why, sizeof why),
                     AOS_ERR_PROTO);
    static const uint8_t zero[] = {0x00, 0x42, 0, 0, 0, 0, 7};
    off = 0;
    assert_int_equal(aos_batch_next(zero, sizeof zero, &off, &rec, &rl, why, sizeof why),
                     AOS_ERR_PROTO);
    static const uint8_t past[] = {0x00, 0x42, 0, 0, 0, 5, 1, 2, 3};
    off = 0;
    assert_int_equal(aos_batch_next(past, sizeof past, &off, &rec, &rl, why, sizeof why),
                     AOS_ERR_PROTO);
    static const uint8_t huge[] = {0x00, 0x42, 0xff, 0xff, 0xff, 0xff, 1};
    off = 0;
    assert_int_equal(aos_batch_next(huge, sizeof huge, &off, &rec, &rl, why, sizeof why),
                     AOS_ERR_PROTO);
    assert_true(why[0] != 0);
    /* one good record, then garbage */
    static const uint8_t tail[] = {0x00, 0x42, 0, 0, 0, 1, 9, 0, 0};
    off = 0;
    assert_int_equal(aos_batch_next(tail, sizeof tail, &off, &rec, &rl, why, sizeof why),
                     AOS_OK);
    assert_int_equal(rl, 1);
    assert_int_equal(aos_batch_next(tail, sizeof tail, &off, &rec, &rl, why, sizeof why),
                     AOS_ERR_PROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(caps),
        cmocka_unit_test(hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
