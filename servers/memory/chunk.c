/* Chunking of archival text (chunk.h): a cut at a paragraph, then a line, then a word in the
 * second half of the allowed size, else at a character boundary; the pieces are the text. */
#include "chunk.h"

int mem_chunk(const uint8_t *t, size_t len, size_t max,
              int (*fn)(void *arg, const uint8_t *p, size_t n), void *arg)
{
    size_t i = 0;
    while (i < len) {
        size_t n = len - i;
        if (n > max) {
            size_t lo = max / 2, cut = 0;
            for (size_t j = max; j > lo && !cut; j--)
                if (t[i + j - 1] == '\n' && j >= 2 && t[i + j - 2] == '\n')
                    cut = j;
            for (size_t j = max; j > lo && !cut; j--)
                if (t[i + j - 1] == '\n')
                    cut = j;
            for (size_t j = max; j > lo && !cut; j--)
                if (t[i + j - 1] == ' ')
                    cut = j;
            if (!cut) {
                cut = max;
                while (cut > 1 && (t[i + cut] & 0xC0) == 0x80)
                    cut--;   /* t[i + cut] starts the next chunk: not a continuation byte */
            }
            n = cut;
        }
        int r = fn(arg, t + i, n);
        if (r)
            return r;
        i += n;
    }
    return 0;
}
