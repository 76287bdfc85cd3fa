/* Durable idempotency records (see pidem.h): claim a request id inside the mutation's
 * transaction, record its reply there, replay it when the same request comes again. */
#include "pidem.h"

#include "db.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int schema_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_'))
            return 0;
    return 1;
}

/* The shared SQLSTATE table (db.c) decides the code and the retry verdict; we only say
 * which step of the protocol failed. */
static aos_err fail_res(PGconn *c, PGresult *r, const char *what, char *why, size_t whylen)
{
    char m[AOS_ERRMSG_MAX];
    aos_err e = db_error(c, r, m, sizeof m);
    snprintf(why, whylen, "idempotency record (%s): %s", what, m);
    return e;
}

void pidem_prior_clear(pidem_prior *p)
{
    free(p->result);
    memset(p, 0, sizeof *p);
}

aos_err pidem_claim(PGconn *c, const pidem_key *k, pidem_prior *prior, char *why, size_t whylen)
{
    memset(prior, 0, sizeof *prior);
    if (!schema_ok(k->schema) || !k->request_id) {
        snprintf(why, whylen, "idempotency: bad schema name or no request id");
        return AOS_ERR_INTERNAL;
    }
    char sql[160];
    const char *v[4] = {k->agent, (const char *)k->request_id, k->method,
                        (const char *)k->fingerprint};
    int len[4] = {0, 16, 0, PIDEM_FP_LEN}, fmt[4] = {0, 1, 0, 1};
    snprintf(sql, sizeof sql, "SELECT status, reply, message, replayed FROM %s.idem_claim("
             "$1, $2, $3, $4)", k->schema);
    PGresult *r = PQexecParams(c, sql, 4, NULL, v, len, fmt, 1);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        aos_err e = fail_res(c, r, "claim", why, whylen);
        PQclear(r);
        return e;
    }
    aos_err e = AOS_ERR_OK;
    if (PQgetisnull(r, 0, 0)) {
        /* claimed: go on */
    } else if (!PQgetisnull(r, 0, 3) && PQgetvalue(r, 0, 3)[0]) {
        uint32_t st;
        memcpy(&st, PQgetvalue(r, 0, 0), 4);
        size_t n = PQgetisnull(r, 0, 1) ? 0 : (size_t)PQgetlength(r, 0, 1);
        prior->result = malloc(n ? n : 1);
        if (!prior->result) {
            snprintf(why, whylen, "out of memory");
            e = AOS_ERR_NOMEM;
        } else {
            memcpy(prior->result, PQgetvalue(r, 0, 1), n);
            prior->len = n;
            prior->status = (int)ntohl(st);
            prior->found = 1;
        }
    } else {
        uint32_t st;
        memcpy(&st, PQgetvalue(r, 0, 0), 4);
        snprintf(why, whylen, "%.*s", PQgetlength(r, 0, 2), PQgetvalue(r, 0, 2));
        e = (aos_err)ntohl(st);
        /* held by a transaction that is gone, or still committing: the next run finds
         * the record or the claim free */
        if (e == AOS_ERR_UNAVAILABLE)
            db_retry_note(DB_AGAIN);
    }
    PQclear(r);
    return e;
}

aos_err pidem_record(PGconn *c, const pidem_key *k, int status, const void *result, size_t len,
                    char *why, size_t whylen)
{
    if (!schema_ok(k->schema)) {
        snprintf(why, whylen, "idempotency: bad schema name");
        return AOS_ERR_INTERNAL;
    }
    char sql[160];
    uint32_t st = htonl((uint32_t)status);
    const char *v[4] = {k->agent, (const char *)k->request_id, (const char *)&st,
                        len ? result : ""};
    int lens[4] = {0, 16, 4, (int)len}, fmt[4] = {0, 1, 1, 1};
    snprintf(sql, sizeof sql, "SELECT %s.idem_done($1, $2, $3::integer, $4::bytea)",
             k->schema);
    PGresult *r = PQexecParams(c, sql, 4, NULL, v, lens, fmt, 1);
    aos_err e = AOS_ERR_OK;
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
        e = fail_res(c, r, "record", why, whylen);
    PQclear(r);
    return e;
}

aos_err pidem_prune(PGconn *c, const char *schema, uint64_t older_than_ms, uint64_t *n,
                   char *why, size_t whylen)
{
    *n = 0;
    if (!schema_ok(schema)) {
        snprintf(why, whylen, "idempotency: bad schema name");
        return AOS_ERR_INTERNAL;
    }
    char sql[256], ms[24];
    snprintf(ms, sizeof ms, "%llu", (unsigned long long)older_than_ms);
    const char *v[1] = {ms};
    snprintf(sql, sizeof sql,
             "DELETE FROM %s.idem WHERE created_at < now() - $1::bigint * interval '1 ms'",
             schema);
    PGresult *r = PQexecParams(c, sql, 1, NULL, v, NULL, NULL, 0);
    aos_err e = AOS_ERR_OK;
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
        e = fail_res(c, r, "prune", why, whylen);
    else
        *n = strtoull(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return e;
}
