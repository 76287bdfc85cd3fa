/* libFuzzer target for aos-memory: the first byte picks the target. 0: memory.proto's
 * request decoders; 1: a window driven by the input (append, swap, pin, plan, assemble),
 * its reply decoded and checked against the budget; 2: chunking and one-line summaries;
 * 3: the vector index and rank fusion over the input's floats and ids. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos/envelope.h"
#include "chunk.h"
#include "memory.pb-c.h"
#include "rrf.h"
#include "vindex.h"
#include "window.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *what)
{
    fprintf(stderr, "fuzz_memory: %s\n", what);
    abort();
}

static void decoders(const uint8_t *d, size_t n)
{
    static const ProtobufCMessageDescriptor *const descs[] = {
        &aos__memory__append_request__descriptor, &aos__memory__pin_request__descriptor,
        &aos__memory__page_in_request__descriptor, &aos__memory__budget_request__descriptor,
        &aos__memory__show_request__descriptor, &aos__memory__assemble_request__descriptor,
        &aos__memory__store_request__descriptor, &aos__memory__search_request__descriptor,
        &aos__memory__share_request__descriptor, &aos__memory__assemble_reply__descriptor};
    for (size_t i = 0; i < sizeof descs / sizeof descs[0]; i++) {
        ProtobufCMessage *m = protobuf_c_message_unpack(descs[i], NULL, n, d);
        if (m) {
            (void)aos_pb_strings_valid(m);
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
}

/* Text from the input made valid UTF-8 (what the server's checks let through). */
static size_t take_text(const uint8_t **d, size_t *n, uint8_t *out, size_t cap)
{
    size_t want = *n ? (size_t)(**d) * 4 : 0, k = 0;
    if (*n) {
        (*d)++;
        (*n)--;
    }
    while (k < want && k < cap && *n) {
        uint8_t c = **d;
        out[k++] = c >= 0x20 && c < 0x7f ? c : (uint8_t)('a' + c % 26);
        (*d)++;
        (*n)--;
    }
    if (k >= 4 && k % 3 == 0) {   /* some multi-byte characters too */
        out[k - 3] = 0xe2;
        out[k - 2] = 0x82;
        out[k - 1] = 0xac;
    }
    return k;
}

static void window(const uint8_t *d, size_t n)
{
    mem_window *w = mem_win_new();
    if (!w)
        return;
    uint64_t id = 1;
    uint8_t text[1100];
    while (n >= 2) {
        uint8_t op = d[0], arg = d[1];
        d += 2;
        n -= 2;
        switch (op % 6) {
        case 0: case 1: {   /* append */
            int kind = 1 + arg % MEM_KIND_LAST, trust = mem_trust_effective(kind, (arg >> 4) % 4);
            char why[128];
            if (mem_page_allowed(kind, trust, 0, why, sizeof why))
                break;
            size_t len = take_text(&d, &n, text, sizeof text);
            mem_page *p = mem_page_new(id++, kind, trust, "fuzz", text, len);
            if (p && mem_win_add(w, p))
                mem_page_free(p);
            break;
        }
        case 2: {   /* swap one out or back in */
            mem_page *p = mem_win_at(w, arg % (mem_win_count(w) + 1));
            if (!p || p->pinned || p->kind <= MEM_TOOLS)
                break;
            if (p->resident) {
                char sum[MEM_SUMMARY_MAX + 1];
                mem_summary_extract(p->text, p->bytes, sum);
                mem_win_swap_out(w, p, sum);
            } else {
                uint8_t *t = malloc(p->bytes + 1);
                if (t) {
                    memset(t, 'x', p->bytes);
                    t[p->bytes] = 0;
                    if (mem_win_swap_in(w, p, t, p->bytes))
                        broken("swap in failed");
                }
            }
            break;
        }
        case 3: {   /* pin or unpin a resident, trusted history page */
            mem_page *p = mem_win_at(w, arg % (mem_win_count(w) + 1));
            char why[128];
            if (p && p->resident && p->kind > MEM_TODO &&
                !mem_page_allowed(p->kind, p->trust, 1, why, sizeof why))
                mem_win_set_pinned(w, p, !p->pinned);
            break;
        }
        case 4: case 5: {   /* plan, evict, assemble within a limit */
            uint64_t limit = 64 + (uint64_t)arg * 16, *ids = NULL, tokens;
            size_t k = 0;
            if (mem_win_plan(w, 0.25, limit, limit * 7 / 10, &ids, &k, &tokens))
                break;
            for (size_t i = 0; i < k; i++) {
                mem_page *p = mem_win_find(w, ids[i]);
                if (!p || !p->resident || p->pinned)
                    broken("the plan chose a page that cannot go");
                mem_win_swap_out(w, p, "s");
            }
            free(ids);
            mem_asm as;
            char why[512];
            aos_err e = mem_win_assemble(w, 0.25, limit, 0, 0, &as, why, sizeof why);
            if (e == AOS_ERR_QUOTA)
                break;
            if (e)
                broken("assembly failed");
            if (as.tokens > limit)
                broken("over the limit");
            Aos__Memory__AssembleReply *r =
                aos__memory__assemble_reply__unpack(NULL, as.len, as.payload);
            if (!r || r->n_messages != as.messages || r->cache_breakpoint > r->n_messages ||
                r->tokens != as.tokens)
                broken("the assembled reply does not decode to what was assembled");
            for (size_t i = 0; i < r->n_messages; i++)
                if (r->messages[i]->n_content != 1 ||
                    !aos_utf8_valid(r->messages[i]->content[0]->text.data,
                                    r->messages[i]->content[0]->text.len))
                    broken("a message is not one part of UTF-8 text");
            aos__memory__assemble_reply__free_unpacked(r, NULL);
            free(as.payload);
            break;
        }
        }
    }
    mem_win_free(w);
}

typedef struct acc {
    const uint8_t *base;
    size_t at, max;
} acc;

static int piece(void *arg, const uint8_t *p, size_t n)
{
    acc *a = arg;
    if (p != a->base + a->at || n == 0 || n > a->max)
        broken("chunks are not the text in order, or too big");
    if (!aos_utf8_valid(p, n))
        broken("a chunk of UTF-8 text cut inside a character");
    a->at += n;
    return 0;
}

static void text(const uint8_t *d, size_t n)
{
    char sum[MEM_SUMMARY_MAX + 1];
    if (!n || !aos_utf8_valid(d + 1, n - 1))
        return;
    mem_summary_extract(d + 1, n - 1, sum);
    if (strlen(sum) > MEM_SUMMARY_MAX || !aos_utf8_valid(sum, strlen(sum)) || strchr(sum, '\n'))
        broken("a summary is not one line of UTF-8");
    acc a = {d + 1, 0, 8 + d[0] % 64};
    mem_chunk(d + 1, n - 1, a.max, piece, &a);
    if (a.at != n - 1)
        broken("chunks do not cover the text");
}

static void vectors(const uint8_t *d, size_t n)
{
    uint32_t dim = 1 + (n ? d[0] % 40 : 0);
    mem_vindex *x = mem_vx_new(dim);
    if (!x)
        broken("no index");
    float v[40];
    size_t rows = 0;
    for (size_t off = 1; off + dim * 4 <= n && rows < 200; off += dim * 4, rows++) {
        memcpy(v, d + off, dim * 4);
        for (uint32_t i = 0; i < dim; i++)
            if (!isfinite(v[i]) || fabsf(v[i]) > 1e18f)
                v[i] = 0;
        mem_vx_add(x, rows + 1, 1 + rows % 3, v);
    }
    mem_vhit h[8];
    size_t k = mem_vx_search(x, v, 0, 8, h);
    for (size_t i = 0; i < k; i++)
        if (!(h[i].score >= -1.1f && h[i].score <= 1.1f) || (i && h[i].score > h[i - 1].score))
            broken("scores out of order or range");
    uint64_t a[32], b[32];
    size_t na = n / 16 < 32 ? n / 16 : 32, nb = na / 2;
    for (size_t i = 0; i < na; i++)
        a[i] = d[i % n] % 20;
    for (size_t i = 0; i < nb; i++)
        b[i] = d[(i * 7) % n] % 20;
    mem_fused f[64];
    size_t m = mem_rrf(a, na, b, nb, 60, f);
    for (size_t i = 1; i < m; i++)
        if (f[i].score > f[i - 1].score || f[i].id == f[i - 1].id)
            broken("fusion out of order or with a repeated id");
    mem_vx_free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    switch (data[0] % 4) {
    case 0: decoders(data + 1, size - 1); break;
    case 1: window(data + 1, size - 1); break;
    case 2: text(data + 1, size - 1); break;
    default: vectors(data + 1, size - 1); break;
    }
    return 0;
}
