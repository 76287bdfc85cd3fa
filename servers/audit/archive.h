/* aos-audit's retention: audit.export hands out stored records in their canonical
 * encoding for an archive; audit.archive plans a cut at a signed head, then seals and drops. */
#ifndef AUDIT_ARCHIVE_H
#define AUDIT_ARCHIVE_H

#include "aos/envelope.h"
#include "aos/err.h"
#include "log.h"
#include "serve.h"

/* audit.export: ExportRequest -> ExportReply (a page of at most 1000 records and about
 * 3 MiB; CONFLICT when a seq of the range is missing or a record does not encode). */
aos_err ax_export(srv *s, alog *l, const aos_env *req, srv_reply *rep);
/* audit.archive: ArchiveRequest -> ArchiveReply. Planning reads only (NOT_FOUND: no signed
 * head inside the bound above what is archived). A commit appends the archive record and a
 * head over it (one COMMIT), then calls audit.drop_archived; a commit sent again with the
 * same cut and digest answers what the first did (and drops what is left). */
aos_err ax_archive(srv *s, alog *l, const aos_env *req, srv_reply *rep);
void ax_stats(srv_stats *st);

#endif
